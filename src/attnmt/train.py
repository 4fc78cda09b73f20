"""`train(cfg)`: build data, model and trainer from a composed config, fit, return the metrics.

A plain function so tests, sweeps and notebooks call it directly; train.py at the repository
root is only the @hydra.main wrapper around it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar
from omegaconf import DictConfig, OmegaConf

from attnmt.checkpoint import AtomicCheckpointIO
from attnmt.errors import ConfigError
from attnmt.task import TranslationTask

log = logging.getLogger("attnmt.train")


def variant_name(cfg: DictConfig) -> str:
    """The model's config choice (e.g. "luong_dot") when Hydra composed the run, else its class."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices["model"]
    except Exception:  # not inside @hydra.main (tests, notebooks)
        return cfg.get("variant") or str(cfg.model["_target_"]).rsplit(".", 1)[-1]


def build_task(cfg: DictConfig, datamodule) -> TranslationTask:
    if "optim" not in cfg:
        raise ConfigError("no optim config: the model config should select one (configs/optim/), or pass optim=noam")
    return TranslationTask(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        src_vocab_size=datamodule.src_vocab_size,
        tgt_vocab_size=datamodule.tgt_vocab_size,
        shared_vocab=datamodule.joint_vocab,
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        vocab={"fingerprint": datamodule.tokenizer.fingerprint},
        variant=variant_name(cfg),
        **OmegaConf.to_container(cfg.task, resolve=True),
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c and "_target_" in c]
    # Lightning refuses these combinations; a user switching one thing off means "without it"
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final logged metrics (plus run facts) as floats."""
    L.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg, datamodule)
    parameters = sum(p.numel() for p in task.model.parameters())
    log.info("model %s: %.2fM parameters", task.hparams.variant, parameters / 1e6)

    trainer = build_trainer(cfg)
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    checkpoint_cb = trainer.checkpoint_callback
    if checkpoint_cb is not None and checkpoint_cb.best_model_score is not None:
        metrics["best/val_bleu"] = float(checkpoint_cb.best_model_score)
    metrics.update(parameters=float(parameters), train_seconds=time.perf_counter() - started, global_step=float(trainer.global_step))
    if trainer.is_global_zero:
        summary = {"variant": task.hparams.variant, "metrics": metrics}
        if checkpoint_cb is not None:
            summary["best_checkpoint"] = checkpoint_cb.best_model_path or None
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
        if cfg.get("evaluate_test") and datamodule.test_splits:
            evaluate_after_training(output_dir, datamodule.test_splits, cfg.get("evaluate_maps", 4))
    return metrics


def evaluate_after_training(run_dir: Path, splits: list[str], num_maps: int = 4) -> None:
    """Beam-5 and greedy scores of the best checkpoint on the test splits, into <run>/eval/."""
    from attnmt.evaluate import evaluate

    summary = evaluate(run_dir, splits=list(splits), beam_sizes=(5, 1), num_maps=num_maps)
    for key, entry in summary["results"].items():
        scores = entry["scores"]
        log.info("%s: BLEU %.2f chrF %.2f (%.1f sentences/s)", key, scores["bleu"]["score"], scores["chrf"]["score"],
                 entry["sentences_per_second"])
