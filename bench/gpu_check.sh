#!/usr/bin/env bash
# One prepared GPU check (bench/gpu_check.py): the CUDA-only tests, one VOC-size round timed
# part by part, and the estimated wall time of a full VOC IRNet+CONTA run on 1 and 8 GPUs.
#
#   bench/gpu_check.sh OUT_DIR              # on one GPU: < 6 min on an H100
#   bench/gpu_check.sh OUT_DIR --dry-run    # anywhere: CPU, tiny sizes
#
# Needs python (3.10+) with torch, numpy, pytest and pillow; no network, no Snakemake, no
# pydensecrf, no pip install: the repository root goes on PYTHONPATH. PYTHON picks the
# interpreter (default: python3). Writes OUT_DIR/gpu_check.json and OUT_DIR/cuda_tests.log.
set -euo pipefail
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: $0 OUT_DIR [--dry-run] [more bench/gpu_check.py options]" >&2
    exit 2
fi
out=$1
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/bench/gpu_check.py" --out "$out" "$@"
