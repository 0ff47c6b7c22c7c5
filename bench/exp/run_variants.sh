#!/usr/bin/env bash
# Device run of caption_variants.py: three variants side by side on one GPU (about 6 minutes
# on an H200). OUTDIR gets one tar per variant (its log, its JSON figures and its trained
# pipeline folder). VARIANTS="blend blend2 blendrand" bash bench/exp/run_variants.sh OUT picks.
set -uo pipefail
OUTDIR=${1:?usage: run_variants.sh OUTDIR}
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
export OMP_NUM_THREADS=4 NBHELPERS_CACHE=/tmp/nbcache
W=/tmp/variants; mkdir -p $W
start=$(date +%s)
"$PY" -c "
import numpy as np
from nbhelpers.toy.train import TRAIN_SEED_BASE, render_training_set
im, _ = render_training_set(16000, TRAIN_SEED_BASE, workers=16, progress=False)
np.save('$W/images.npy', im.numpy())
" || exit 1
echo "rendered in $(( $(date +%s) - start )) s"
for v in ${VARIANTS:-none all pair}; do
  "$PY" bench/exp/caption_variants.py $v $W/$v --device cuda --images $W/images.npy \
    > $W/$v.log 2>&1 &
done
wait
for v in ${VARIANTS:-none all pair}; do
  cp $W/$v.log $W/$v/ 2>/dev/null
  tail -30 $W/$v.log
  tar -C $W -cf "$OUTDIR/$v.tar" $v
done
echo "all finished in $(( $(date +%s) - start )) s"
