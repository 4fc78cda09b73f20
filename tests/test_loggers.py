"""Experiment tracking beyond TensorBoard through Lightning's own loggers, chosen with logger=...
(offline only: nothing leaves the machine)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from attnmt.config import compose
from attnmt.train import train

from test_train import tiny_overrides

RUN = ["debug=limit", "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
       "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("loggers_cache")


def test_csv_logger_writes_every_metric(tiny_parallel_dir, cache_dir, tmp_path):
    train(compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "luong") + RUN + ["logger=csv"]))
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"train/loss", "val/bleu", "val/chrf", "step"} <= set(rows[0])
    assert [float(r["val/bleu"]) for r in rows if r["val/bleu"]]  # the validation's row
    assert (tmp_path / "csv" / "hparams.yaml").is_file()
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_and_csv_together(tiny_parallel_dir, cache_dir, tmp_path):
    train(compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "luong") + RUN + ["logger=[tensorboard,csv]"]))
    assert (tmp_path / "csv" / "metrics.csv").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (pip install mlflow)")
def test_mlflow_logger_with_a_local_file_store(tiny_parallel_dir, cache_dir, tmp_path):
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path / "run", "luong") + RUN + [
        "logger=mlflow", f"paths.log_dir={tmp_path / 'outputs'}", "variant=luong"]
    train(compose(overrides))
    metric_files = list((tmp_path / "outputs" / "mlruns").rglob("metrics/val/bleu"))
    assert metric_files, sorted(str(p) for p in (tmp_path / "outputs").rglob("*"))[:40]


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (pip install wandb)")
def test_wandb_logger_offline(tiny_parallel_dir, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    train(compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "luong") + RUN + ["logger=wandb", "variant=luong"]))
    assert list((tmp_path / "wandb").glob("offline-run-*")), sorted(p.name for p in tmp_path.iterdir())
