#!/usr/bin/env bash
# The GPU benchmark in one call (about 3-4 minutes on one H100): every family on cuda with bf16
# autocast at 4096- and 16384-token batches, then the Transformer with torch.compile, then the
# GPU test of tests/test_benchmark.py. JSON reports and logs go to $OUT (default: outputs/gpu_check).
#
# The machine needs the raw Multi30k files (data/multi30k/ or $ATTNMT_MULTI30K_DIR); data/cache/
# saves the sentencepiece training. Python packages missing there (hydra-core, omegaconf, antlr4)
# are installed from .whl/ when present; make it here, once, with
#     bash scripts/gpu_check.sh --prepare
# and carry data/multi30k, data/cache and .whl along with the working tree.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    # wheels of this machine's versions (antlr4 4.9.3 exists only as an sdist: pip builds it)
    versions=$(python3 -c "import hydra, omegaconf; print(f'hydra-core=={hydra.__version__} omegaconf=={omegaconf.__version__}')")
    exec python3 -m pip wheel --no-deps -q -w .whl $versions antlr4-python3-runtime==4.9.3
fi

OUT="${OUT:-outputs/gpu_check}"
mkdir -p "$OUT"
source scripts/gpu_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__)"; } \
    | tee "$OUT/machine.txt"

bench() {  # name, time limit (s), benchmark arguments...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" python3 scripts/benchmark.py --device cuda --precision bf16-mixed --reference scripts/benchmark_reference.json --output "$OUT/$name.json" "$@" \
        2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    ((rc == 0)) || echo "!! $name exited with $rc (124: out of time); $name.json holds the families finished"
}

bench bench_4096 120 --max-tokens 4096 --steps 60 --warmup 10 --decode-sentences 500
bench bench_16384 80 --max-tokens 16384 --steps 25 --warmup 5 --decode-sentences 0
bench bench_4096_compile 60 --families transformer --compile --max-tokens 4096 --steps 60 --warmup 15 --decode-sentences 0
echo "== pytest -m gpu"
timeout 40 python3 -m pytest -q -m gpu tests/test_benchmark.py -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/pytest_gpu.log"
