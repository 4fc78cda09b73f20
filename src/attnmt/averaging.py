"""Checkpoint averaging: the mean of the weights of the last N step checkpoints of a run.

Averaging checkpoints a few hundred updates apart (Vaswani et al. 2017 averaged the last 5 or
20) smooths the noise of the final updates and usually gains some BLEU at no training cost.

- `StepCheckpoints` (configs/callbacks/default.yaml, `callbacks.step_checkpoints`): every
  `every_n_train_steps` updates writes <run>/checkpoints/step<N>.ckpt and keeps the last `keep`
  of them (`keep: 0` turns it off); with `average_after_training` it writes their average to
  <run>/checkpoints/averaged.ckpt when training ends.
- `average_checkpoints(paths, output)`: the same from files (attnmt-average = scripts/average_checkpoints.py).

The averaged file is an ordinary training checkpoint (the first input's config, tokenizer and
counters, averaged weights, no optimizer state): evaluate.py and translate.py read it as any other.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from attnmt.checkpoint import AtomicCheckpointIO, load_checkpoint_file
from attnmt.errors import CheckpointError, ConfigError

STEP_FILE = re.compile(r"^step(\d+)\.ckpt$")


def step_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The step<N>.ckpt files of a run's checkpoints/ folder, oldest update first."""
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).glob("step*.ckpt") if (m := STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def average_state_dicts(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (accumulated in float64), integer buffers from the last."""
    keys = list(state_dicts[0])
    for index, state in enumerate(state_dicts[1:], start=1):
        if list(state) != keys or any(state[k].shape != state_dicts[0][k].shape for k in keys):
            raise CheckpointError(f"checkpoint {index + 1} holds other parameters than the first: average checkpoints of one run only")
    averaged = {}
    for key in keys:
        tensors = [state[key] for state in state_dicts]
        if tensors[0].is_floating_point():
            averaged[key] = (sum(t.double() for t in tensors) / len(tensors)).to(tensors[0].dtype)
        else:
            averaged[key] = tensors[-1].clone()
    return averaged


def average_checkpoints(paths: list[str | Path], output: str | Path) -> Path:
    """Write the average of `paths` (training checkpoints of one run) to `output`; returns it."""
    if not paths:
        raise ConfigError("no checkpoints to average: give at least one .ckpt file")
    checkpoints = [load_checkpoint_file(p) for p in paths]
    for path, checkpoint in zip(paths, checkpoints):
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{path} holds no model weights (state_dict): not a training checkpoint")
    averaged = {key: value for key, value in checkpoints[-1].items() if key not in ("optimizer_states", "lr_schedulers")}
    averaged["state_dict"] = average_state_dicts([c["state_dict"] for c in checkpoints])
    averaged["averaged_from"] = [str(p) for p in paths]
    output = Path(output)
    AtomicCheckpointIO().save_checkpoint(averaged, output)
    return output


class StepCheckpoints(ModelCheckpoint):
    """Keep the last `keep` checkpoints written every `every_n_train_steps` updates (step<N>.ckpt).

    keep: how many to keep (0: none are written)
    average_after_training: at the end of fit, average the kept ones into averaged.ckpt
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 100, keep: int = 0, average_after_training: bool = False) -> None:
        if keep < 0 or every_n_train_steps < 1:
            raise ConfigError(
                f"callbacks.step_checkpoints: keep={keep} must be >= 0 and every_n_train_steps={every_n_train_steps} >= 1"
            )
        super().__init__(
            dirpath=dirpath,
            filename="step{step}",
            auto_insert_metric_name=False,
            monitor="step",  # Lightning's own update counter: the highest `keep` are the latest
            mode="max",
            save_top_k=keep,
            every_n_train_steps=every_n_train_steps,
            save_last=False,
            enable_version_counter=False,
        )
        self.keep = keep
        self.average_after_training = average_after_training

    @property
    def state_key(self) -> str:
        # distinct from the best-BLEU ModelCheckpoint's, so both restore their own state on resume
        return f"StepCheckpoints{{'every_n_train_steps': {self._every_n_train_steps}, 'keep': {self.keep}}}"

    def on_fit_end(self, trainer, pl_module) -> None:
        if not (self.average_after_training and self.keep > 0 and trainer.is_global_zero):
            return
        kept = step_checkpoints(self.dirpath)[-self.keep :]
        if kept:
            average_checkpoints(kept, Path(self.dirpath) / "averaged.ckpt")
