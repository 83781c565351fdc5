#!/usr/bin/env bash
# One GPU check: the CUDA tests and the CUDA rows of every benchmark, written as one markdown table.
#
#   bench/gpu_check.sh [--wheels DIR] [--out FILE] [--cpu] [--no_tests] [--data_root DIR]
#
# For a machine with CUDA and PyTorch installed and no internet: the project's other requirements
# (requirements.txt and requirements-dev.txt, all but torch) that are not installed are installed
# from the wheels in DIR (pip --no-index). Then the tests whose names mention CUDA run, then
# bench/gpu_check.py writes FILE (default gpu_check.md). Budget: under 8 minutes on one GPU.
# --cpu: a dry run on a machine without a GPU (the CUDA tests skip, the rows run on CPU at tiny
# sizes); --no_tests skips the tests; --data_root reuses a synthetic dataset (datasets/synthetic.py).
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
WHEELS="" OUT="gpu_check.md" CPU="" TESTS=1 DATA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) WHEELS="${2:?--wheels needs a folder}"; shift 2 ;;
        --out) OUT="${2:?--out needs a file}"; shift 2 ;;
        --cpu) CPU="--cpu"; shift ;;
        --no_tests) TESTS=0; shift ;;
        --data_root) DATA=(--data_root "${2:?--data_root needs a folder}"); shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (expected --wheels DIR, --out FILE, --cpu, --no_tests, --data_root DIR)" >&2; exit 2 ;;
    esac
done
start=$(date +%s)

# one interpreter start (seconds with torch) answers both: 3 without PyTorch, 4 without a CUDA device
found=0
"$PY" -c "import sys
try:
    import torch
except ImportError:
    sys.exit(3)
sys.exit(0 if torch.cuda.is_available() else 4)" 2>/dev/null || found=$?
case "$found" in
    0) ;;
    4) if [ -z "$CPU" ]; then
           echo "gpu_check.sh: PyTorch sees no CUDA device; run with --cpu for a dry run" >&2
           exit 2
       fi ;;
    *) echo "gpu_check.sh: PyTorch is not installed for $PY; install it first (set PYTHON to pick another interpreter)" >&2
       exit 2 ;;
esac

missing=$("$PY" bench/missing_requirements.py)
if [ -n "$missing" ]; then
    if [ -z "$WHEELS" ] || [ ! -d "$WHEELS" ]; then
        echo "gpu_check.sh: not installed: $(echo "$missing" | tr '\n' ' '); pass --wheels DIR with their wheels" >&2
        exit 2
    fi
    echo "installing from $WHEELS: $(echo "$missing" | tr '\n' ' ')"
    echo "$missing" | "$PY" -m pip install --no-index --find-links "$WHEELS" -r /dev/stdin
fi

if [ "$TESTS" = 1 ]; then
    echo "== CUDA tests"
    "$PY" -m pytest -q -rs -k "cuda" tests
fi
echo "== benchmark rows"
"$PY" bench/gpu_check.py --out "$OUT" $CPU ${DATA[@]+"${DATA[@]}"}
echo "== done in $(( $(date +%s) - start )) s; table in $OUT"
