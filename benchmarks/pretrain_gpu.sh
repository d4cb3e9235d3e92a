#!/usr/bin/env bash
# A pretraining phase of the lens backbone on a lent GPU machine (phase 8 and on; docs/pretrained.md).
#
# The phase-5 recipe (a warm restart from the file INIT, by default the shipped one, lr 1e-3 after a 50-step
# warm-up, cosine decay to 2e-5, batch 128, robust input, the wide_hard ranges, every cutout seen once) on as many new shards as the
# machine's CPUs simulate in BUDGET seconds. The simulator is the bottleneck, so its rate is measured first (on
# shards outside the stream), and the phase's length (--images, 92 % of the measured rate times BUDGET, a margin
# for the training process) is set from it and printed, so that the run can be repeated exactly with that number.
# The network trains on the GPU; simulation and augmentation stay on the CPU (all cores but two simulate). Both
# the trained weights and their moving average are exported.
#
#     INIT=resnet18_lens_p7.safetensors BUDGET=420 OUT=/tmp/p8 bash benchmarks/pretrain_gpu.sh     # phase 8
#
# Needs skorch importable (lensclf imports it); on a machine without it, wheels in .whl/ are installed first.
set -u
BUDGET=${BUDGET:-400}
OUT=${OUT:-/tmp/p8}
RUN=${RUN:-/tmp/pretrain-run}
INIT=${INIT:-lensclf/weights/resnet18_lens.safetensors}
PROBE=${PROBE:-20}
TAG=${TAG:-p8}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
CORES=$(python3 -c "import os; print(len(os.sched_getaffinity(0)))")
P=$((CORES > 3 ? CORES - 2 : 1))
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
RATE=$(python3 benchmarks/pretrain.py --out "$RUN" --probe-rate "$PROBE" --producers "$P" --ranges wide_hard 2>/dev/null | tail -1)
echo "cores $CORES producers $P rate $RATE"
# the stream continues after the images INIT has seen; the restart is at its step (batch 128, pretrain.py's default)
read -r SEEN SHARDS IMAGES RESTART < <(python3 -c "
import json, sys
sys.path.insert(0, 'benchmarks')
from safetensors import safe_open
from pretrain import SHARD
seen = int(safe_open(sys.argv[1], 'pt').metadata()['images_seen'])
shards = int(0.92 * json.loads(sys.argv[2])['shards_per_s'] * $BUDGET)
print(seen, shards, seen + shards * SHARD, seen // 128)" "$INIT" "$RATE") || exit 1
[ -n "$RESTART" ] || { echo "could not size the phase (rate: $RATE)"; exit 1; }
echo "$TAG: from $INIT ($SEEN images seen), $SHARDS shards, --images $IMAGES --restart $RESTART:1e-3"
timeout $((BUDGET + ${SLACK:-70})) python3 benchmarks/pretrain.py --out "$RUN" --init "$INIT" \
    --images "$IMAGES" --restart "$RESTART:1e-3" --scaling robust --ranges wide_hard --producers "$P" --device "${DEVICE:-cuda}" \
    --checkpoint-every 500 --validate-every 200 > "$OUT/run.log" 2>&1
echo "pretrain exit $?"
grep -v -e '"loss"' -e resource_tracker -e warnings.warn "$OUT/run.log"
grep '"loss"' "$OUT/run.log" | tail -3
cp "$RUN/log.jsonl" "$OUT/log.jsonl"
python3 benchmarks/pretrain.py --out "$RUN" --export "$RUN/resnet18_lens_${TAG}_live.safetensors" --export-weights live
python3 benchmarks/pretrain.py --out "$RUN" --export "$RUN/resnet18_lens_${TAG}_ema.safetensors" --export-weights ema
(cd "$RUN" && tar cf - resnet18_lens_${TAG}_live.safetensors resnet18_lens_${TAG}_ema.safetensors | split -b 15m - "$OUT/$TAG.tar.")
ls -la "$OUT"
