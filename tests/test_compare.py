"""scripts/compare.py on a real sweep of tiny training runs, with a deliberately broken job beside them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from attnmt.compare import compare, job_folders

from test_train import REPO, tiny_overrides

VARIANTS = ["luong", "luong_dot"]
SEEDS = [1, 2]


@pytest.fixture(scope="module")
def sweep(tiny_parallel_dir, tmp_path_factory) -> Path:
    """`python train.py -m model=luong,luong_dot seed=1,2 ...` (4 jobs, evaluated after training),
    plus one more job folder whose run failed for real (an impossible model size)."""
    root = tmp_path_factory.mktemp("sweep")
    cache = root / "cache"
    overrides = [o for o in tiny_overrides(tiny_parallel_dir, cache, root, "luong") if not o.startswith(("paths.output_dir", "model="))]
    # the sweeper first composes with the default model (transformer), so RNN sizes must force-add
    overrides = ["++" + o if o.startswith("model.") else o for o in overrides]
    common = [*overrides, "debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
              "trainer.limit_val_batches=1.0", "evaluate_test=true", "evaluate_maps=0", "task.probes=[The cat sat on the mat.]",
              f"data.corpus.test={{test:{tiny_parallel_dir}/test}}", "trainer.enable_progress_bar=false"]
    sweep_dir = root / "multirun"
    command = [sys.executable, str(REPO / "train.py"), "-m", f"model={','.join(VARIANTS)}",
               f"seed={','.join(map(str, SEEDS))}", *common, f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    broken = [sys.executable, str(REPO / "train.py"), "model=luong_dot", *common, "++model.encoder_hidden_size=20",
              f"hydra.run.dir={sweep_dir}/9_broken"]  # dot scores need hidden_size == 2 x encoder_hidden_size
    failed = subprocess.run(broken, cwd=root, capture_output=True, text=True, timeout=300)
    assert failed.returncode == 2 and "model." in failed.stderr
    return sweep_dir


def test_compare_reports_every_variant_with_intervals_and_lists_the_broken_run(sweep):
    assert len(job_folders(sweep)) == len(VARIANTS) * len(SEEDS) + 1
    result = compare(sweep, split="test")
    rows = {row["variant"]: row for row in result["rows"] if row["status"] == "finished"}
    assert sorted(rows) == VARIANTS
    for row in rows.values():
        assert row["seeds"] == str(len(SEEDS))
        assert "±" in row["test_bleu"] and "±" in row["tokens_per_s"]  # mean ± std over the seeds

    for record in result["records"]:
        if record.status != "finished":
            continue
        bleu = record.test["scores"]["bleu"]["score"]
        low, high = record.ci["bleu"]
        assert low <= bleu <= high, (record.path, bleu, record.ci)
        assert record.val_curve and all(seconds > 0 for seconds, _ in record.val_curve)

    failed = [row for row in result["rows"] if row["status"] != "finished"]
    assert len(failed) == 1 and failed[0]["status"].startswith("failed") and "model." in failed[0]["status"]

    files = result["files"]
    with open(files["csv"], newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(VARIANTS) + 1
    assert "| luong_dot |" in files["markdown"].read_text(encoding="utf-8")
    from matplotlib.image import imread

    for name in ("val_bleu_vs_time", "probe_attention"):
        height, width, _ = imread(files[name]).shape
        assert height > 100 and width > 100


def test_compare_cli_prints_the_table_and_logs_images(sweep, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), str(sweep), "--split", "test",
                           "--output-dir", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| luong |" in done.stdout and "failed" in done.stdout
    accumulator = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0})
    accumulator.Reload()
    assert {"comparison/val_bleu_vs_time", "comparison/probe_attention"} <= set(accumulator.Tags()["images"])


def test_compare_refuses_a_folder_without_runs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no Hydra job folders" in done.stderr
