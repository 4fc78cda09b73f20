"""`train(cfg)`: build data, model and trainer from a composed config, fit, return the metrics.

A plain function so tests, sweeps and notebooks call it directly; train.py at the repository
root is only the @hydra.main wrapper around it. `resume_config` rebuilds a run's own config from
one of its checkpoints, so resuming is `python train.py ckpt_path=<run>/checkpoints/last.ckpt`.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf, open_dict

from attnmt.checkpoint import AtomicCheckpointIO, CONFIG_KEY, check_state_dict, check_targets, check_tokenizer, load_checkpoint_file
from attnmt.errors import CheckpointError, ConfigError
from attnmt.task import TranslationTask

log = logging.getLogger("attnmt.train")

# What a resumed run's stored config may have Hydra build (checkpoint.check_targets): attnmt's own
# classes and schedules, torch optimizers, Lightning's Trainer, callbacks and loggers.
RUN_MODULES = ("attnmt.", "torch.optim.", "lightning.pytorch.Trainer", "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.")

# Keys a resumed run may change: they set how long and how visibly training goes on, never what is
# trained. Anything else (model, optim, data, seed, loss, precision, ...) would make the checkpoint's
# weights, optimizer state or batch order mean something else, so it is refused by name.
RESUMABLE_KEYS = (
    "trainer.max_steps", "trainer.max_time", "trainer.max_epochs", "trainer.min_steps", "trainer.min_epochs",
    "trainer.val_check_interval", "trainer.check_val_every_n_epoch", "trainer.limit_val_batches",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes",
    "callbacks", "logger", "paths", "hydra", "ckpt_path", "resume", "evaluate_test", "evaluate_maps",
    "task.probes", "task.val_decode", "decode", "task.max_nonfinite_steps", "task.attention_maps",
    "data.num_workers", "data.pin_memory", "data.cache_dir", "data.corpus.local_dir",
)
RESUMABLE_GROUPS = ("logger", "callbacks")  # config groups whose option may be switched on resume


class _DropLightningAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


def quiet_lightning() -> None:
    """One copy of every log line, without Lightning's cloud-logging tip and a torch-internal
    deprecation warning that Lightning triggers on every run (nothing a user can act on).

    Lightning gives its loggers their own console handler when it is imported before logging is
    configured; under Hydra that printed every INFO line twice ("INFO: ..." and Hydra's format).
    """
    import warnings

    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    if logging.getLogger().handlers:  # logging is configured (Hydra's CLI): let the root handlers print
        for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLightningAdvert) for f in logger.filters):
            logger.addFilter(_DropLightningAdvert())


def variant_name(cfg: DictConfig) -> str:
    """The model's config choice (e.g. "luong_dot"): cfg.variant (kept across resumes), else Hydra's
    choice when Hydra composed the run, else the model's class name."""
    if cfg.get("variant"):
        return str(cfg.variant)
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices["model"]
    except Exception:  # not inside @hydra.main (tests, notebooks)
        return str(cfg.model["_target_"]).rsplit(".", 1)[-1]


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """<run>/checkpoints/x.ckpt -> <run> when <run> is a run folder (it has .hydra/), else None."""
    folder = Path(checkpoint).expanduser().resolve().parent
    if folder.name == "checkpoints" and (folder.parent / ".hydra").is_dir():
        return folder.parent
    return None


def _is_resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_KEYS)


def check_resume_override(key: str, checkpoint_path: str | Path) -> None:
    """ConfigError naming `key` unless a resumed run may change it (RESUMABLE_KEYS, RESUMABLE_GROUPS).

    key: an override's key or group as written (`trainer.max_steps`, `model`, `+model.x`).
    """
    from attnmt.config import CONFIG_DIR

    key = key.lstrip("+~")
    if key in RESUMABLE_GROUPS or key.startswith(("hydra.", "hydra/")) or key in ("hydra", "ckpt_path", "resume"):
        return
    if ("." not in key and (CONFIG_DIR / key.split("@")[0]).is_dir()) or not _is_resumable(key):
        changeable = "trainer.max_steps/max_time/max_epochs, trainer.val_check_interval, callbacks.*, logger, ..."
        raise ConfigError(
            f"{key} cannot change when resuming: the checkpoint continues the run's own config "
            f"(stored in {checkpoint_path}). Resume with only ckpt_path= (plus {changeable}), "
            "or start a new run without ckpt_path."
        )


def stored_config(checkpoint_path: str | Path, checkpoint: dict[str, Any] | None = None) -> DictConfig:
    """The composed config of the run that wrote the checkpoint.

    Read from the checkpoint (train() stores it there), else from the run folder's .hydra/config.yaml
    (checkpoints written before configs were stored).
    """
    checkpoint = checkpoint if checkpoint is not None else load_checkpoint_file(checkpoint_path)
    if checkpoint.get(CONFIG_KEY):
        check_targets(checkpoint[CONFIG_KEY], RUN_MODULES, checkpoint_path)
        return OmegaConf.create(checkpoint[CONFIG_KEY])
    run_dir = run_dir_of(checkpoint_path)
    if run_dir is not None and (run_dir / ".hydra" / "config.yaml").is_file():
        cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        check_targets(OmegaConf.to_container(cfg), RUN_MODULES, run_dir / ".hydra" / "config.yaml")
        hydra_file = run_dir / ".hydra" / "hydra.yaml"
        if not cfg.get("variant") and hydra_file.is_file():
            choices = OmegaConf.load(hydra_file).hydra.runtime.choices
            with open_dict(cfg):
                cfg.variant = choices.get("model")
        return cfg
    raise CheckpointError(
        f"{checkpoint_path} holds no run config and is not inside a run folder with .hydra/config.yaml: "
        "give the run's settings on the command line and resume with train(cfg) / the same overrides."
    )


def resume_config(checkpoint_path: str | Path, overrides: list[str], current: DictConfig | None = None) -> DictConfig:
    """The config to resume with: the run's own composed config, plus the overrides that may change mid-run.

    overrides: the command line's overrides (Hydra syntax). `key=value` on a resumable key (see
    RESUMABLE_KEYS) is applied; `logger=csv` / `callbacks=none` switch a group; anything else raises
    ConfigError naming the key. `current`: the freshly composed config, whose `paths` (this
    machine's folders and this process's run folder) replace the stored ones.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from attnmt.config import CONFIG_DIR

    cfg = stored_config(checkpoint_path)
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    with open_dict(cfg):
        if current is not None and "paths" in current:
            cfg.paths = OmegaConf.to_container(current.paths, resolve=True)
        for override in parsed:
            key = override.key_or_group
            if key.startswith(("hydra.", "hydra/")) or key in ("ckpt_path", "resume"):
                continue
            if override.is_delete():
                if not _is_resumable(key):
                    raise ConfigError(f"{key} cannot be removed when resuming ({checkpoint_path} was trained with it)")
                OmegaConf.update(cfg, key, None, force_add=True)
                continue
            value = override.value()
            if key in RESUMABLE_GROUPS and "." not in key:  # a group option, e.g. logger=csv
                names = value if isinstance(value, list) else [value]
                section: dict = {}
                for name in names:
                    if name in (None, "null"):
                        continue
                    group_file = CONFIG_DIR / key / f"{name}.yaml"
                    if not group_file.is_file():
                        choices = ", ".join(sorted(p.stem for p in (CONFIG_DIR / key).glob("*.yaml")))
                        raise ConfigError(f"{key}={name}: no such option; choose from {choices}")
                    section.update(OmegaConf.to_container(OmegaConf.load(group_file)) or {})
                cfg[key] = section
                continue
            check_resume_override(key, checkpoint_path)
            OmegaConf.update(cfg, key, value, force_add=True)
        cfg.ckpt_path = str(checkpoint_path)
    return cfg


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
        # the validation decoding; None for a run configured before the `decode` node (its task.val_decode)
        decode=OmegaConf.to_container(cfg.decode.validation, resolve=True) if cfg.get("decode") else None,
        **OmegaConf.to_container(cfg.task, resolve=True),
    )


def build_trainer(cfg: DictConfig, purge_step: int | None = None) -> L.Trainer:
    """The configured Trainer. purge_step (resuming): TensorBoard drops the events an interrupted
    run wrote after its checkpoint, so the resumed curves continue without a doubled stretch."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        extra = {"purge_step": purge_step} if purge_step and name == "tensorboard" else {}
        loggers.append(instantiate(logger_cfg, **extra))
    if not cfg.trainer.get("fast_dev_run") and not any(isinstance(c, ModelCheckpoint) for c in callbacks):
        # without it Lightning would put its checkpoints under the logger's folder (or lightning_logs/),
        # where neither ckpt_path= users nor scripts/evaluate.py look
        callbacks.append(ModelCheckpoint(dirpath=Path(cfg.paths.output_dir) / "checkpoints", save_top_k=0, save_last=True,
                                         enable_version_counter=False))
    # Lightning refuses these combinations; a user switching one thing off means "without it"
    if not loggers:
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


def _checkpoint_for_resume(cfg: DictConfig, task: TranslationTask, datamodule) -> dict[str, Any] | None:
    """Load cfg.ckpt_path and check that its vocabulary and weights fit the model (one clear error,
    not Lightning's 12 KB list of missing and unexpected keys)."""
    if not cfg.get("ckpt_path"):
        return None
    checkpoint = load_checkpoint_file(cfg.ckpt_path)
    # another vocabulary also changes the embedding shapes: name the cause, not the symptom
    check_tokenizer(checkpoint, datamodule.tokenizer, source="the checkpoint being resumed")
    stored = checkpoint.get(CONFIG_KEY) or {}
    check_state_dict(checkpoint.get("state_dict", {}), task.state_dict(), cfg.ckpt_path,
                     stored_variant=stored.get("variant"), variant=task.hparams.variant)
    return checkpoint


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured model; returns the final logged metrics (plus run facts) as floats.

    With cfg.ckpt_path the run continues from that checkpoint with cfg as given (the command line
    uses `resume_config` to rebuild the run's own config first). An interrupted run (SIGINT/SIGTERM)
    returns after saving last.ckpt, with metrics["interrupted"] = 1.
    """
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True)
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    fast_dev_run = bool(cfg.trainer.get("fast_dev_run"))
    with open_dict(cfg):
        cfg.variant = variant_name(cfg)

    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    task = build_task(cfg, datamodule)
    task.run_config = OmegaConf.to_container(cfg, resolve=True)  # stored in every checkpoint (resume)
    parameters = sum(p.numel() for p in task.model.parameters())
    log.info("model %s: %.2fM parameters", task.hparams.variant, parameters / 1e6)
    resumed_from = _checkpoint_for_resume(cfg, task, datamodule)
    if resumed_from is not None:
        import warnings

        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")  # it is the run's own
        log.info("resuming %s from %s (step %d)", task.hparams.variant, cfg.ckpt_path, resumed_from.get("global_step", 0))

    # events at the checkpoint's step stay (its validation is not repeated); later ones are dropped
    purge_step = resumed_from.get("global_step", 0) + 1 if resumed_from is not None else None
    trainer = build_trainer(cfg, purge_step=purge_step)
    interrupted = False
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except SIGTERMException:
        interrupted = True  # GracefulShutdown saved last.ckpt already
    del resumed_from

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
    checkpoint_cb = trainer.checkpoint_callback
    if checkpoint_cb is not None and checkpoint_cb.best_model_score is not None:
        metrics["best/val_bleu"] = float(checkpoint_cb.best_model_score)
    metrics.update(parameters=float(parameters), train_seconds=time.perf_counter() - started, global_step=float(trainer.global_step))
    if interrupted:
        metrics["interrupted"] = 1.0
    if trainer.is_global_zero and not interrupted and not fast_dev_run:  # fast_dev_run writes nothing
        summary = {"variant": task.hparams.variant, "metrics": metrics}
        if checkpoint_cb is not None:
            summary["best_checkpoint"] = checkpoint_cb.best_model_path or None
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
    if trainer.is_global_zero and not fast_dev_run:
        log_final_summary(trainer, task.hparams.variant, output_dir, metrics, interrupted)
    if trainer.is_global_zero and not interrupted and not fast_dev_run and cfg.get("evaluate_test") and datamodule.test_splits:
        evaluate_after_training(output_dir, datamodule.test_splits, cfg.get("evaluate_maps", 4),
                                OmegaConf.to_container(cfg.decode.test, resolve=True) if cfg.get("decode") else None)
    return metrics


def log_final_summary(trainer: L.Trainer, variant: str, output_dir: Path, metrics: dict[str, float], interrupted: bool) -> None:
    """The lines a user reads when training ends: best checkpoint, its BLEU, TensorBoard, what to run next."""
    checkpoint_cb = trainer.checkpoint_callback
    best = getattr(checkpoint_cb, "best_model_path", "") if checkpoint_cb is not None else ""
    lines = [f"{'interrupted' if interrupted else 'finished'}: {variant}, {int(metrics['global_step'])} steps, "
             f"{_clock(metrics['train_seconds'])} in this process"]
    if best and "best/val_bleu" in metrics:
        lines.append(f"best checkpoint: {best} (val BLEU {metrics['best/val_bleu']:.2f})")
    last = Path(getattr(checkpoint_cb, "dirpath", None) or output_dir / "checkpoints") / "last.ckpt"
    tensorboard = next((getattr(lg, "log_dir", None) for lg in trainer.loggers if type(lg).__name__ == "TensorBoardLogger"), None)
    if tensorboard:
        lines.append(f"TensorBoard: tensorboard --logdir {Path(tensorboard).parent.parent}  (this run: {tensorboard})")
    if best or last.is_file():
        lines.append(f"evaluate: python scripts/evaluate.py {shlex.quote(str(output_dir))}")
    if last.is_file():
        lines.append(f"resume/extend: python train.py ckpt_path={shlex.quote(str(last))} [trainer.max_steps=N]")
    for line in lines:
        log.info(line)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def evaluate_after_training(run_dir: Path, splits: list[str], num_maps: int = 4, decode: dict | None = None) -> None:
    """The best checkpoint on the test splits with `decode` (config decode.test: DecodeSettings
    fields; missing ones keep its defaults) and greedily, into <run>/eval/; one log line per result."""
    from attnmt.evaluate import EvalOptions, evaluate
    from attnmt.inference import DecodeSettings
    from attnmt.metrics import text_metrics

    settings = DecodeSettings.from_config(decode, key="decode.test")
    summary = evaluate(run_dir, EvalOptions(splits=list(splits), decode=settings, beam_sizes=(settings.beam_size, 1),
                                            num_maps=num_maps))
    for key, entry in summary["results"].items():
        scores = " ".join(f"{m.display} {m.format(entry['scores'][m.name]['score'])}" for m in text_metrics(headline_only=True))
        log.info("%s: %s (%.1f sentences/s)", key, scores, entry["sentences_per_second"])
