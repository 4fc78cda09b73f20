"""attnmt-data-report (scripts/data_report.py) on the tiny corpus: figures match the DataModule, the second build hits the caches."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY_SIZES
from test_train import REPO, tiny_overrides


@pytest.mark.slow
def test_data_report_prints_figures_and_reuses_caches(tiny_parallel_dir, tmp_path):
    from attnmt.cli.data_report import report

    overrides = [o for o in tiny_overrides(tiny_parallel_dir, tmp_path / "cache", tmp_path, "transformer")
                 if o.startswith("data")]
    cold, warm = report(overrides), report(overrides)
    assert not any(cold["cache_hits"].values()) and all(warm["cache_hits"].values())
    assert cold["pairs"] == warm["pairs"]
    assert cold["pairs"]["val"] == TINY_SIZES["val"]  # evaluation splits are never filtered
    assert 0 < cold["pairs"]["train"] <= TINY_SIZES["train"]
    assert cold["train_batches"] == warm["train_batches"] > 0
    assert 0.0 <= cold["padding_ratio"] < 0.5

    done = subprocess.run([sys.executable, str(REPO / "scripts" / "data_report.py"), *overrides, "data.max_tokens=-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "data.max_tokens" in done.stderr
