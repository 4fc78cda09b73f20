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


@pytest.mark.slow
def test_compare_reports_every_variant_with_intervals_and_lists_the_broken_run(sweep):
    assert len(job_folders(sweep)) == len(VARIANTS) * len(SEEDS) + 1
    result = compare(sweep, split="test")
    rows = {row["variant"]: row for row in result["rows"] if row["status"] == "finished"}
    assert sorted(rows) == VARIANTS
    for row in rows.values():
        assert row["seeds"] == str(len(SEEDS))
        assert row["updates"].split(" ")[0] == "3"  # limit_train_batches=3, one epoch
        assert "±" in row["test_bleu"] and "±" in row["tokens_per_s"]  # mean ± std over the seeds

    for record in result["records"]:
        if record.status != "finished":
            continue
        bleu = record.test["scores"]["bleu"]["score"]
        low, high = record.ci["bleu"]
        assert low <= bleu <= high, (record.path, bleu, record.ci)
        assert record.val_curve and all(seconds > 0 for seconds, _ in record.val_curve)
        # the learning curve in updates ends at the run's last update (validation after the last step)
        assert record.val_curve_updates and record.val_curve_updates[-1][0] == record.global_step

    failed = [row for row in result["rows"] if row["status"] != "finished"]
    assert len(failed) == 1 and failed[0]["status"].startswith("failed") and "model." in failed[0]["status"]

    files = result["files"]
    with open(files["csv"], newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == len(VARIANTS) + 1
    assert "| luong_dot |" in files["markdown"].read_text(encoding="utf-8")
    from matplotlib.image import imread

    for name in ("val_bleu_vs_time", "val_bleu_vs_updates", "probe_attention"):
        height, width, _ = imread(files[name]).shape
        assert height > 100 and width > 100


@pytest.mark.slow
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


@pytest.mark.slow
def test_compare_refuses_a_folder_without_runs(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "compare.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no Hydra job folders" in done.stderr


def _aligned_record(variant: str, seed: int, layer_aer: list[list[float]]):
    from attnmt.alignment.attention import best_map
    from attnmt.compare import RunRecord

    def scores(aer: float) -> dict:
        return {"aer": aer, "precision": 1 - aer, "recall": 1 - aer, "links_per_sentence": 10.0}

    argmax = {f"layer_{layer}": {**{f"head_{h}": scores(v) for h, v in enumerate(row)}, "mean": scores(sum(row) / len(row))}
              for layer, row in enumerate(layer_aer)}
    forced = {"argmax": argmax, "best": best_map(argmax), "diagonal_baseline": scores(0.6)}
    test = {"scores": {"bleu": {"score": 10.0}, "chrf": {"score": 30.0}},
            "alignment": {"teacher_forced": forced, "output": {**forced, "best": best_map(argmax)}}}
    return RunRecord(Path(f"/runs/{variant}_{seed}"), variant, seed, "finished", test=test)


def test_aer_columns_name_the_best_map_and_the_plot_has_a_panel_per_variant(tmp_path):
    from matplotlib.image import imread

    from attnmt.compare import alignment_figure, columns, table_rows, write_tables
    from attnmt.viz import figure_to_png

    records = [_aligned_record("transformer", 1, [[0.8, 0.5], [0.3, 0.9]]),
               _aligned_record("transformer", 2, [[0.8, 0.5], [0.5, 0.2]]),
               _aligned_record("bahdanau", 1, [[0.4]])]
    rows = {row["variant"]: row for row in table_rows(records)}
    assert {"aer_best", "aer_best_map", "aer_last_layer_mean", "aer_output_best", "aer_diagonal"} <= set(columns())
    assert rows["transformer"]["aer_best"] == "0.250 ± 0.071"  # 0.3 (seed 1) and 0.2 (seed 2)
    assert rows["transformer"]["aer_best_map"] == "layer_1/head_0, layer_1/head_1"
    assert rows["transformer"]["aer_last_layer_mean"] == "0.475 ± 0.177"  # means 0.6 and 0.35
    assert rows["bahdanau"]["aer_best"] == "0.400" and rows["bahdanau"]["aer_diagonal"] == "0.600"
    md, _ = write_tables(list(rows.values()), tmp_path, "test")
    assert "aer_best_map" in md.read_text()
    height, width, _ = imread(figure_to_png(alignment_figure(records), tmp_path / "aer.png")).shape
    assert height > 100 and width > 200
    assert alignment_figure([]) is None


@pytest.mark.slow
def test_compare_with_alignment_evaluates_the_runs_and_fills_the_columns(sweep, tmp_path):
    import json

    result = compare(sweep, split="test", alignment=True, output_dir=tmp_path / "report")
    for record in result["records"]:
        if record.status != "finished":
            continue
        stored = json.loads((record.path / "eval" / "metrics.json").read_text())
        entry = next(v for k, v in stored.items() if k.startswith("test/") and "alignment" in v)
        assert record.test["alignment"]["teacher_forced"]["best"] == entry["alignment"]["teacher_forced"]["best"]
    rows = [row for row in result["rows"] if row["status"] == "finished"]
    assert all(row["aer_best"] != "-" and "layer_0/head_0" in row["aer_best_map"] for row in rows)
    assert result["files"]["alignment_aer"].is_file()


def test_variant_names_carry_the_jobs_model_overrides(tmp_path):
    from omegaconf import OmegaConf

    from attnmt.compare import _variant

    (tmp_path / ".hydra").mkdir()
    hydra = {"hydra": {"runtime": {"choices": {"model": "luong"}},
                       "overrides": {"task": ["model=luong", "model.scale_scores=false", "seed=1"]}}}
    OmegaConf.save(OmegaConf.create(hydra), tmp_path / ".hydra" / "hydra.yaml")
    config = OmegaConf.create({"model": {"_target_": "attnmt.models.rnn_seq2seq.RNNSeq2Seq"}})
    assert _variant(tmp_path, config) == "luong[scale_scores=false]"
    hydra["hydra"]["overrides"]["task"] = ["model=luong", "seed=2"]
    OmegaConf.save(OmegaConf.create(hydra), tmp_path / ".hydra" / "hydra.yaml")
    assert _variant(tmp_path, config) == "luong"
