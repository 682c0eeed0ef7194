#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md, in one command, without network:
#
#   scripts/gpu-check.sh [--dry-run] [OUT_DIR]        (or: make gpu-check)
#   scripts/gpu-check.sh --build-wheels                (or: make wheels; needs network)
#
# On a machine with a CUDA GPU, torch and a copy of this working tree, it installs the project
# and open_clip from the wheels in .whl/ (built beforehand with `make wheels` on a machine with
# network) into a virtual environment that sees the system's torch, then writes
# gpu-check.json and gpu-check.md to OUT_DIR (default: $OUT, else ./gpu-check-out). It is sized
# to end in under 9 minutes on an H100/H200; a `timeout` stops it at 9.
# --dry-run: the tiny backbone, a few steps, on the CPU, with the Python this tree runs under
# (what the test suite runs).
set -euo pipefail

DRY_RUN=0
BUILD_WHEELS=0
OUT_DIR="${OUT:-gpu-check-out}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --build-wheels) BUILD_WHEELS=1 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $arg" >&2; exit 2 ;;
    *) OUT_DIR="$arg" ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; fi

if [ "$BUILD_WHEELS" = 1 ]; then
  # .whl/: this project and every runtime dependency installed here, except torch/torchvision
  # (and their CUDA packages), which the GPU machine brings; pinned to the versions tested here.
  rm -rf "$ROOT/.whl" && mkdir -p "$ROOT/.whl"
  "$PYTHON" - >"$ROOT/.whl/requirements.txt" <<'PY'
import importlib.metadata as md
import re

skip = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*|pip|setuptools)$")
seen, todo = set(), ["reprogram", "open_clip_torch"]
while todo:
    name = todo.pop()
    key = name.lower().replace("_", "-")
    if key in seen or skip.match(key):
        continue
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    seen.add(key)
    todo += [re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0] for r in dist.requires or [] if "extra ==" not in r]
seen.discard("reprogram")
print("\n".join(f"{n}=={md.version(n)}" for n in sorted(seen)))
PY
  "$PYTHON" -m pip wheel -q --no-deps -w "$ROOT/.whl" "$ROOT"
  "$PYTHON" -m pip wheel -q --no-deps -w "$ROOT/.whl" -r "$ROOT/.whl/requirements.txt"
  du -sh "$ROOT/.whl"
  exit 0
fi

if [ "$DRY_RUN" = 1 ]; then
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  exec "$PYTHON" -m reprogram.speed.gpucheck --dry-run "$OUT_DIR"
fi

if ! "$PYTHON" -c 'import reprogram, open_clip' 2>/dev/null; then
  if [ ! -d "$ROOT/.whl" ]; then
    echo "gpu-check: neither an installed reprogram nor wheels in $ROOT/.whl (run 'make wheels' first)" >&2
    exit 2
  fi
  VENV="${TMPDIR:-/tmp}/reprogram-gpu-check-venv"
  python3 -m venv --system-site-packages "$VENV"   # torch comes from the system
  "$VENV/bin/python" -m pip install -q --no-index --find-links "$ROOT/.whl" reprogram open_clip_torch
  PYTHON="$VENV/bin/python"
fi
"$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)' || {
  echo "gpu-check: torch sees no CUDA GPU here (try --dry-run)" >&2; exit 3; }

mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
timeout 540 "$PYTHON" -m reprogram.speed.gpucheck "$OUT_DIR" 2>&1 | tee "$OUT_DIR/gpu-check.log"
