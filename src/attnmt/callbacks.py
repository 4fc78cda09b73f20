"""Training callbacks that are not in Lightning: throughput without per-step host syncs."""

from __future__ import annotations

import time

import lightning as L
import torch

from attnmt.data.batch import Batch


class ThroughputMonitor(L.Callback):
    """Logs `train/tokens_per_s` (target tokens, EOS included, padding excluded) on all ranks summed.

    Token counts accumulate on the device; the host reads them once every `log_every_n_steps`
    steps, so the training loop never waits for the GPU just to report speed.
    """

    def __init__(self, log_every_n_steps: int = 20) -> None:
        self.every = max(1, log_every_n_steps)
        self._tokens: torch.Tensor | None = None
        self._start = 0.0
        self._steps = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._tokens, self._steps, self._start = None, 0, time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Batch, batch_idx: int) -> None:
        count = batch.tgt_mask.sum()
        self._tokens = count if self._tokens is None else self._tokens + count
        self._steps += 1
        if self._steps % self.every:
            return
        tokens = float(trainer.strategy.reduce(self._tokens.float(), reduce_op="sum"))  # the one sync
        elapsed = time.perf_counter() - self._start
        pl_module.log("train/tokens_per_s", tokens / elapsed, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
        pl_module.log("train/ms_per_step", 1000 * elapsed / self._steps, on_step=True, on_epoch=False, rank_zero_only=True)
        self._tokens, self._steps, self._start = None, 0, time.perf_counter()
