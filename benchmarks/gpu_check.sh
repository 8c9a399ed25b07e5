#!/usr/bin/env bash
# The GPU checks, in one command, for a machine with CUDA (about 8 minutes on one H100/H200):
#   bash benchmarks/gpu_check.sh [OUT]      # figures and logs go to OUT (default gpu-check/), one file each
# 1. `pytest -m gpu`: every precision, resume on CUDA and onto the CPU, no host sync in the LM step, and
#    DDP on two GPUs against one (with BatchNorm) when two GPUs exist;
# 2. lm_throughput.py --device cuda: ms/step of the LM configurations, fp32 and bf16, against the matmul peak;
# 3. DDP equivalence on 2 GPUs, through the CLI, when two exist (a 2-rank run against a 1-rank one);
# 4. `sweeplab bench devices` on the Tiny-ImageNet subset with resnet18: ms/batch and time per epoch on the
#    CPU, 1 GPU and N GPUs. Table 7's figures come from this line.
# Nothing is written to the repository: the store and artifacts live under OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check}"
mkdir -p "$OUT"
export SWEEPLAB_STORE="sqlite:///$PWD/$OUT/runs/sweeplab.sqlite" SWEEPLAB_ARTIFACTS="$PWD/$OUT/runs"
PY="${PYTHON:-python}"
say() { echo "== $* ($(date +%T))" | tee -a "$OUT/summary.txt"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpus.csv" 2>&1
say "1. pytest -m gpu"
timeout 240 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py > "$OUT/pytest-gpu.txt" 2>&1
tail -1 "$OUT/pytest-gpu.txt" | tee -a "$OUT/summary.txt"

say "2. lm_throughput.py --device cuda"
timeout 150 "$PY" benchmarks/lm_throughput.py --device cuda --steps 40 --rounds 4 > "$OUT/lm_throughput.json" 2> "$OUT/lm_throughput.err"
echo "exit $?" | tee -a "$OUT/summary.txt"

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  say "3. DDP equivalence, 1 rank against 2"
  for n in 1 2; do
    timeout 60 "$PY" -m sweeplab run image data=digits model=vgg8 data.train_limit=512 train.batch_size=64 \
      train.epochs=2 train.nproc=$n device=cuda --json 2>> "$OUT/ddp.err" | tail -1 > "$OUT/ddp-$n.json"
  done
  "$PY" -c "import json; a, b = (json.load(open('$OUT/ddp-%d.json' % n))['metrics']['test/loss'] for n in (1, 2)); print(f'test/loss 1 rank {a:.6f}, 2 ranks {b:.6f}')" | tee -a "$OUT/summary.txt"
else
  say "3. DDP equivalence: skipped, $GPUS GPU(s)"
fi

say "4. bench devices, resnet18 on the Tiny-ImageNet subset"
timeout 150 "$PY" -m sweeplab bench devices image data=tinyimagenet data.path="${SWEEPLAB_DATA:-../shared/data}/tiny-imagenet-10" \
  model=resnet18 train.batch_size=256 --steps 20 --json > "$OUT/bench-devices.json" 2> "$OUT/bench-devices.err"
echo "exit $?" | tee -a "$OUT/summary.txt"
say "done"
