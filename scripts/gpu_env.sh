# Sourced by the GPU scripts (gpu_check.sh, gpu_compare.sh) from the repository root: puts src/ on
# PYTHONPATH and installs hydra-core/omegaconf/antlr4 from .whl/ when the machine lacks them
# (make the wheels with `bash scripts/gpu_check.sh --prepare`).
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import hydra, omegaconf" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/attnmt-site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/attnmt-site"
fi
