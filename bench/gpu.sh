#!/usr/bin/env bash
# The GPU benchmark suite in one call (no network needed), tables written to OUTDIR.
#
#   bench/gpu.sh OUTDIR               # on a CUDA machine: SD 1.4 shapes, 512 px
#   bench/gpu.sh OUTDIR --cpu-small   # the same scripts with tiny shapes on the CPU (a rehearsal)
#
# PyTorch must be installed. Wheels of missing packages (diffusers, ...) placed in .whl/ at the
# repository root are installed first into /tmp/site, without network.
set -euo pipefail
OUTDIR=${1:?usage: bench/gpu.sh OUTDIR [--cpu-small]}
MODE=${2:-gpu}
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
source bench/carried_wheels.sh
export TQDM_DISABLE=1
export NBHELPERS_CACHE="$OUTDIR/cache"
start=$(date +%s)
if [ "$MODE" = "--cpu-small" ]; then
  "$PY" bench/ti_throughput.py --model tiny --device cpu --steps 4 --warmup 2 --no-doc \
    --out "$OUTDIR/ti.md"
  "$PY" bench/sweep_speed.py --model tiny --device cpu --frames 8 --steps 4 --no-doc \
    --out "$OUTDIR/sweep.md"
else
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUTDIR/gpu.txt"
  "$PY" bench/ti_throughput.py --model sd14 --size 512 --device cuda --precision bf16 \
    --batch 4 --steps 10 --warmup 3 --memory-batch1 --no-doc --out "$OUTDIR/ti_sd14.md"
  "$PY" bench/sweep_speed.py --model sd14 --size 512 --device cuda --dtype float16 \
    --frames 32 --steps 20 --unet-batch 32 --no-doc --out "$OUTDIR/sweep_sd14.md"
fi
rm -rf "$OUTDIR/cache"
echo "suite finished in $(( $(date +%s) - start )) s; tables in $OUTDIR"
