"""cpu_memory.retain_freed_memory: glibc keeps freed large blocks instead of unmapping them.

Each check runs in a fresh interpreter, because the setting is process-wide and this test
process may already have applied it (training tests do, through the callback).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from hydra.utils import instantiate

from attnmt.callbacks import RetainFreedMemory
from attnmt.config import compose

PROBE = textwrap.dedent(
    """
    import json, re, pathlib, torch

    def rss_mib():
        status = pathlib.Path("/proc/self/status").read_text()
        return int(re.search(r"VmRSS:\\s+(\\d+) kB", status).group(1)) / 1024

    def rss_after_free():  # allocate and touch 256 MiB, free it, read the resident set
        block = torch.ones(64 * 2**20)
        del block
        return rss_mib()

    base = rss_mib()
    freed_default = rss_after_free()
    from attnmt.cpu_memory import retain_freed_memory
    applied = retain_freed_memory()
    freed_retained = rss_after_free()
    again = retain_freed_memory()
    print(json.dumps({"base": base, "default": freed_default, "retained": freed_retained, "applied": applied, "again": again}))
    """
)


def run_probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
@pytest.mark.slow
def test_freed_memory_stays_in_the_process_only_after_the_call():
    probe = run_probe()
    if not probe["applied"]:
        pytest.skip("this libc is not glibc or refused the thresholds")
    assert probe["again"] is True  # idempotent
    # glibc's default hands a freed 256 MiB block straight back to the kernel ...
    assert probe["default"] - probe["base"] < 64, probe
    # ... with the thresholds raised, the freed block stays mapped for the next allocation
    assert probe["retained"] - probe["base"] > 200, probe


def test_training_configs_apply_it_in_every_process():
    cfg = compose(["paths.output_dir=/tmp/unused"])
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c and "_target_" in c]
    assert any(isinstance(c, RetainFreedMemory) for c in callbacks)
