#!/usr/bin/env bash
# The GPU check of docs/benchmarks.md, in one command, without network:
#
#   scripts/gpu-check.sh [--dry-run] [OUT_DIR]        (or: make gpu-check)
#   scripts/gpu-check.sh --build-wheels                (or: make wheels; needs network)
#   scripts/gpu-check.sh --install-only                (the install step alone; no GPU needed)
#
# On a lent GPU machine (its own python3 with torch; nothing can be downloaded) with a copy of
# this tree and .whl/ (make wheels: this project and only what the machine's image lacks, see
# scripts/gpu_wheels.py), it prints torch, CUDA, GPU and driver as its first line (exit 3 if
# torch sees no GPU), installs the wheels with --no-index --no-deps into a folder put on
# PYTHONPATH (the machine's python and its torch stay as they are), then writes gpu-check.json
# and gpu-check.md to OUT_DIR (default: $OUT, else ./gpu-check-out), rewritten after each part.
# It plans for 7.5 minutes and a `timeout` stops it at 9. WHEELS=DIR: wheels from DIR.
# --dry-run: the tiny backbone, a few steps, on the CPU, with this tree's src/ (the test suite).
set -euo pipefail

DRY_RUN=0
BUILD_WHEELS=0
INSTALL_ONLY=0
OUT_DIR="${OUT:-gpu-check-out}"
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY_RUN=1 ;;
    --build-wheels) BUILD_WHEELS=1 ;;
    --install-only) INSTALL_ONLY=1 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "gpu-check: unknown option $arg" >&2; exit 2 ;;
    *) OUT_DIR="$arg" ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/.whl}"
PYTHON="${PYTHON:-python3}"

if [ "$BUILD_WHEELS" = 1 ]; then
  exec "$PYTHON" "$ROOT/scripts/gpu_wheels.py" build "$WHEELS"
fi

# First line: what this runs on (imports torch only); the GPU run stops here without a GPU.
REQUIRE=--require-cuda
if [ "$DRY_RUN" = 1 ] || [ "$INSTALL_ONLY" = 1 ]; then REQUIRE=; fi
PYTHONPATH="$ROOT/src" "$PYTHON" -m reprogram.speed.environment $REQUIRE

if [ "$DRY_RUN" = 1 ]; then
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  exec "$PYTHON" -m reprogram.speed.gpucheck --dry-run "$OUT_DIR"
fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE="${TMPDIR:-/tmp}/reprogram-gpu-check-site"
  rm -rf "$SITE"
  "$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps \
    --target "$SITE" "$WHEELS"/*.whl
  echo "gpu-check: installed $(cd "$WHEELS" && ls -- *.whl | tr '\n' ' ')into $SITE"
  export PYTHONPATH="$SITE"
  if ! "$PYTHON" "$ROOT/scripts/gpu_wheels.py" check-source "$WHEELS"; then
    echo "gpu-check: $WHEELS was built from another src/ than this tree's: running this tree's" \
      "src/ with the carried dependencies (make wheels to refresh)"
    export PYTHONPATH="$ROOT/src:$SITE"
  fi
  "$PYTHON" "$ROOT/scripts/gpu_wheels.py" verify "$WHEELS" ||
    echo "gpu-check: going on despite the unmet requirements above"
elif ! "$PYTHON" -c 'import reprogram, open_clip' 2>/dev/null; then
  echo "gpu-check: neither an installed reprogram nor wheels in $WHEELS (run 'make wheels' first)" >&2
  exit 2
fi

if [ "$INSTALL_ONLY" = 1 ]; then
  echo "gpu-check: installed; run with PYTHONPATH=$PYTHONPATH"
  exit 0
fi

mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
timeout 540 "$PYTHON" -m reprogram.speed.gpucheck "$OUT_DIR" 2>&1 | tee "$OUT_DIR/gpu-check.log"
