#!/usr/bin/env bash
# jaxvpp on a GPU: the answer against the CPU's, the battery solver and ALADIN at growing N, a sweep.
#
#   bash benchmarks/gpu.sh [--smoke] [--out DIR]   the full plan (ends within 8 minutes), or tiny sizes
#   bash benchmarks/gpu.sh --cpu-reference [--out DIR]   this CPU's time per battery-iteration (N = 1000, 10000)
#   bash benchmarks/gpu.sh --stamp                 record the commit in benchmarks/out/gpu_commit.txt, for a
#                                                  copy of the tree without .git (carry that file along)
#
# Results: DIR/gpu.md and DIR/gpu.json (DIR: --out, else $OUT, else benchmarks/out/gpu). The commit comes
# from $JAXVPP_COMMIT, else git, else the stamp file, else "unknown". Python: $PYTHON, else python3.
# The driver is benchmarks/gpu.py (its docstring lists the steps); it runs under `timeout` as a last resort.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

mode=full
out="${OUT:-}"
orig="$*"
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) mode=smoke ;;
        --cpu-reference) mode=cpu-reference ;;
        --stamp) mode=stamp ;;
        --out)
            [ $# -ge 2 ] || { echo "gpu.sh: --out needs a folder" >&2; exit 2; }
            out="$2"
            shift
            ;;
        --out=*) out="${1#--out=}" ;;
        -h | --help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

PY="${PYTHON:-python3}"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export JAX_ENABLE_X64=1 PYTHONUNBUFFERED=1

if [ "$mode" = stamp ]; then
    exec "$PY" benchmarks/gpu.py --stamp
fi
[ -n "$out" ] || out=benchmarks/out/gpu
mkdir -p "$out" || exit 2

case "$mode" in
    full) limit=470 ;;           # + 10 s grace: the whole script ends within 8 minutes
    smoke) limit=300 ;;
    cpu-reference) limit=3600; export JAX_PLATFORMS=cpu ;;
esac

echo "== jaxvpp GPU benchmark ($mode plan), results in $out"
if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
else
    echo "nvidia-smi: not found (no NVIDIA GPU driver here)"
fi

timeout -k 10 "$limit" "$PY" benchmarks/gpu.py --mode "$mode" --out "$out" \
    --command "bash benchmarks/gpu.sh${orig:+ $orig}"
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "gpu.sh: the driver ran past $limit s and was stopped; $out holds the steps it had finished" >&2
fi
exit "$rc"
