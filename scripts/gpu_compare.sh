#!/usr/bin/env bash
# The equal-updates comparison (configs/experiment/compare_equal_updates.yaml) on one GPU, in one
# call: every variant as its own process on the same device (the models are ~7.5M parameters, so
# eight fit side by side), bf16 autocast (RNN cells and single-head attention stay float32),
# validation every 300 updates, the test split scored with beam 5 at the end; then the comparison
# report. Runs and report go to $OUT (default outputs/gpu_compare).
#
#     bash scripts/gpu_compare.sh [max_steps (default 2400)] [max_time DD:HH:MM:SS (default 00:00:08:00)]
#
# Prepare it as scripts/gpu_check.sh explains (data/multi30k, data/cache and .whl carried along).
# Written for the lent device machine; not yet run on one (no GPU was lent when it was written):
# read its log before trusting it.
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS="${1:-2400}"
BUDGET="${2:-00:00:08:00}"
OUT="${OUT:-outputs/gpu_compare}"
mkdir -p "$OUT"
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/machine.txt"

# one sentencepiece model and token cache for all, built before the jobs start
python3 -c "from attnmt.config import compose; from hydra.utils import instantiate; \
dm = instantiate(compose(['paths.output_dir=$OUT/prepare']).data); dm.prepare_data(); dm.setup('fit')" || exit 1

pids=()
for variant in transformer transformer_window bahdanau luong luong_dot luong_concat luong_local_m luong_local_p; do
    OMP_NUM_THREADS=2 python3 train.py experiment=compare_equal_updates model=$variant seed=1 trainer=gpu \
        trainer.max_steps="$STEPS" trainer.max_time="$BUDGET" trainer.val_check_interval=300 \
        data.num_workers=1 hydra.run.dir="$OUT/runs/$variant" > "$OUT/$variant.log" 2>&1 &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
python3 scripts/compare.py "$OUT/runs" 2>&1 | tail -20 | tee "$OUT/compare.log"
