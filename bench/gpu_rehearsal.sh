#!/usr/bin/env bash
# The notebooks' dress rehearsal on a GPU, in one call (no network), tables written to OUTDIR.
#
#   bench/gpu_rehearsal.sh OUTDIR               # CUDA: every notebook, gpu profile, bf16 + fp16
#   bench/gpu_rehearsal.sh OUTDIR --cpu-small   # the same script on the CPU (mini, sd-cpu)
#
# Wheels of missing packages (diffusers, transformers, nbclient, ...) placed in .whl/ at the
# repository root are installed first into /tmp/site, without network.
set -euo pipefail
OUTDIR=${1:?usage: bench/gpu_rehearsal.sh OUTDIR [--cpu-small]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
source bench/carried_wheels.sh
"$PY" bench/gpu_rehearsal.py "$OUTDIR" "$@"
