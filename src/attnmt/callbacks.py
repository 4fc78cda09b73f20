"""Training callbacks that are not in Lightning: throughput without host syncs, pre-emption-safe
interrupts, a console report per validation, a progress bar that refreshes by time, a max_time
that leaves room for the final validation, reuse of freed CPU memory."""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer, TQDMProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException

from tqdm import tqdm

from attnmt.cpu_memory import retain_freed_memory
from attnmt.data.batch import Batch

log = logging.getLogger("attnmt.train")


class ThroughputMonitor(L.Callback):
    """Logs `train/tokens_per_s` (target tokens, EOS included, padding excluded) on all ranks summed,
    and `train/ms_per_step`, every `log_every_n_steps` optimizer steps.

    A window runs from the end of one training step to the end of the step that logs, so it counts
    only steps this process trained: after a resume the first step only starts the clock (nothing
    from before the restart, the checkpoint loading or the skipped batches counts), and validation
    time inside a window is left out. Token counts accumulate on the device; the host reads them
    once per window, so the training loop never waits for the GPU just to report speed.
    """

    def __init__(self, log_every_n_steps: int = 20) -> None:
        self.every = max(1, log_every_n_steps)
        self._tokens: torch.Tensor | None = None
        self._mark: float | None = None  # end of the step that opened the window; None: no step yet
        self._steps = 0
        self._excluded = 0.0  # validation seconds inside the current window
        self._validation_started: float | None = None

    def _reset(self, now: float | None) -> None:
        self._tokens, self._steps, self._excluded, self._mark = None, 0, 0.0, now

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset(None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.training or trainer.state.fn == "fit":
            self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._validation_started is not None and self._mark is not None:
            self._excluded += time.perf_counter() - self._validation_started
        self._validation_started = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch: Batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._mark is None:  # the first step of this process: it only starts the clock
            self._reset(now)
            return
        count = batch.tgt_mask.sum()
        self._tokens = count if self._tokens is None else self._tokens + count
        self._steps += 1
        # log on Lightning's own logging steps, so every value reaches the loggers (after a resume
        # the count of this process's steps is not aligned with global_step)
        if trainer.global_step % self.every and self._steps < 10 * self.every:
            return
        tokens = float(trainer.strategy.reduce(self._tokens.float(), reduce_op="sum"))  # the one sync
        elapsed = max(now - self._mark - self._excluded, 1e-9)
        pl_module.log("train/tokens_per_s", tokens / elapsed, prog_bar=True, on_step=True, on_epoch=False, rank_zero_only=True)
        pl_module.log("train/ms_per_step", 1000 * elapsed / self._steps, on_step=True, on_epoch=False, rank_zero_only=True)
        self._reset(time.perf_counter())


class GracefulShutdown(L.Callback):
    """SIGINT/SIGTERM: finish the current step, write `last.ckpt` at once (no validation), stop.

    The checkpoint is written right after the optimizer step during which the signal arrived,
    before Lightning would validate, so a pre-emption grace period only has to cover one step and
    one checkpoint write. A signal during validation stops it at the next validation batch and
    saves the state after the last training step. The trainer then raises Lightning's
    SIGTERMException, which attnmt.train.train() turns into a normal return; the process exits
    with status 0. A second Ctrl+C aborts at once. Resuming from that last.ckpt continues exactly
    where the run stopped. Under DDP the decision goes through Lightning's SIGTERM broadcast from
    rank 0, so every rank stops at the same batch (it may finish a due validation first).
    """

    def __init__(self) -> None:
        self.interrupted: str | None = None  # "interrupt" (SIGINT) or "SIGTERM" once a signal came
        self.signal_time: float | None = None
        self.saved_path: Path | None = None
        self._previous: dict[int, object] = {}

    @staticmethod
    def last_path(trainer: L.Trainer) -> Path:
        checkpointing = trainer.checkpoint_callback
        folder = getattr(checkpointing, "dirpath", None) or Path(trainer.default_root_dir) / "checkpoints"
        return Path(folder) / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be installed from the main thread

        def handler(signum, frame) -> None:
            why = "SIGTERM" if signum == signal.SIGTERM else "interrupt"
            if self.interrupted is None:
                self.interrupted, self.signal_time = why, time.monotonic()
                log.warning("%s: stopping after this step and saving last.ckpt%s", why,
                            " (Ctrl+C again to abort)" if signum == signal.SIGINT else "")
            if signum == signal.SIGINT:
                signal.signal(signal.SIGINT, self._previous.get(signal.SIGINT) or signal.default_int_handler)
            previous = self._previous.get(signum)
            if signum == signal.SIGTERM and callable(previous):
                previous(signum, frame)  # Lightning's: records it and broadcasts it to DDP ranks
            connector = getattr(trainer, "_signal_connector", None)
            if connector is not None:
                connector.received_sigterm = True  # stops a running validation at its next batch

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, handler)

    def _restore_handlers(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        # single process: act before the epoch loop's validation check; DDP waits for the broadcast
        if self.interrupted is not None and trainer.world_size == 1:
            self._save(trainer, self.interrupted)
            raise SIGTERMException

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if self.interrupted is not None:  # the signal came after the last step
            self._save(trainer, self.interrupted)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handlers()
        if isinstance(exception, SIGTERMException):
            self._save(trainer, self.interrupted or "SIGTERM")

    def _save(self, trainer: L.Trainer, why: str) -> None:
        if self.saved_path is not None:
            return
        path = self.last_path(trainer)
        trainer.save_checkpoint(path)
        self.saved_path = path
        if trainer.is_global_zero:
            waited = f" {time.monotonic() - self.signal_time:.1f} s after the signal" if self.signal_time else ""
            log.warning("%s: saved %s at step %d%s; resume with: python train.py ckpt_path=%s",
                        why, path, trainer.global_step, waited, path)


def external_write_mode():
    """Clears the progress bars (on stdout, where Lightning and Hydra's console both write) while a
    log line is printed, then redraws them."""
    import sys

    return tqdm.external_write_mode(file=sys.stdout)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ValidationReport(L.Callback):
    """One console (and run log) line per validation:

        validation step 400 epoch 3: val loss 3.412 BLEU 12.34 chrF 38.10 (best 12.34 at step 400) elapsed 0:04:10

    elapsed counts this process's fit (a resumed run starts at 0:00:00).
    """

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._best_step: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.state.fn != "fit":
            return
        from attnmt.metrics import PRIMARY_METRIC, text_metric, text_metrics

        metrics = trainer.callback_metrics
        if f"val/{PRIMARY_METRIC}" not in metrics:
            return
        primary, step = text_metric(PRIMARY_METRIC), trainer.global_step
        score = float(metrics[f"val/{PRIMARY_METRIC}"])
        best = getattr(pl_module, "best_val_bleu", None)  # the task keeps it, across resumes too
        best = score if best is None else best
        if score >= best - 1e-4:  # the logged value went through float32
            self._best_step = step
        at = f"at step {self._best_step}" if self._best_step is not None else "before the resume"
        scores = " ".join(f"{m.display} {m.format(float(metrics.get(f'val/{m.name}', float('nan'))))}"
                          for m in text_metrics(headline_only=True))  # metrics.TEXT_METRICS
        with external_write_mode():  # a line of its own, not glued to the progress bar
            log.info("validation step %d epoch %d: val loss %.3f %s (best %s %s) elapsed %s",
                     step, trainer.current_epoch, float(metrics.get("val/loss", float("nan"))), scores,
                     primary.format(best), at, _clock(time.monotonic() - self._started))


class TimedProgressBar(TQDMProgressBar):
    """TQDM bar that refreshes every `refresh_rate` batches or every `refresh_seconds`, whichever
    comes first: on a slow CPU a step takes seconds and a batch-count refresh alone looks frozen,
    while on a GPU refreshing each step would read metrics from the device every step."""

    def __init__(self, refresh_rate: int = 20, refresh_seconds: float = 2.0, **kwargs) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self.refresh_seconds = refresh_seconds
        self._last_refresh = 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        n = batch_idx + 1
        now = time.monotonic()
        if n % self.refresh_rate == 0 or n == bar.total or now - self._last_refresh >= self.refresh_seconds:
            self._last_refresh = now
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # one run folder = one run: the version number says nothing
        return items


class ValidationFitsInMaxTime(L.Callback):
    """With trainer.max_time, stop training early enough for the final validation to end inside it.

    Lightning's Timer stops training when max_time is reached and then runs one more validation,
    so a run would end one validation late. This callback times every validation (from its start
    to the next training step: checkpoint writes included) and stops training as soon as the time
    left is below the last validation's duration (times `margin`); when that is already the case as
    a validation ends, that validation becomes the final one.
    Until a first validation has been timed it cannot know and does nothing. Lightning's Timer
    keeps its elapsed time in checkpoints: a resumed run continues the same budget.
    """

    def __init__(self, margin: float = 1.1) -> None:
        self.margin = margin
        self.last_validation_seconds: float | None = None
        self._started: float | None = None

    @staticmethod
    def _timer(trainer: L.Trainer) -> Timer | None:
        return next((c for c in trainer.callbacks if isinstance(c, Timer)), None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # not enough time left for another validation after this one: make this one the final validation
        timer = self._timer(trainer)
        if timer is None or self._started is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        expected = max(time.monotonic() - self._started, self.last_validation_seconds or 0.0)
        remaining = timer.time_remaining("train")
        due = remaining is not None and remaining <= expected * self.margin
        if trainer.strategy.broadcast(due) and not trainer.should_stop:
            trainer.should_stop = True
            log.info("max_time: %.0f s left, a validation takes %.0f s: this validation was the final one", remaining, expected)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # a validation lasts until training goes on: checkpoint writes and every other hook included
        if self._started is not None:
            self.last_validation_seconds = time.monotonic() - self._started
            self._started = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        timer = self._timer(trainer)
        if timer is None or self.last_validation_seconds is None:  # the same on every rank
            return
        remaining = timer.time_remaining("train")
        due = remaining is not None and remaining <= self.last_validation_seconds * self.margin
        if trainer.strategy.broadcast(due) and not trainer.should_stop:  # rank 0's clock decides for every rank
            trainer.should_stop = True
            log.info("max_time: %.0f s left, the last validation took %.0f s: stopping now for the final validation",
                     remaining, self.last_validation_seconds)

    def state_dict(self) -> dict:
        return {"last_validation_seconds": self.last_validation_seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_validation_seconds = state_dict.get("last_validation_seconds")


class RetainFreedMemory(L.Callback):
    """Calls `cpu_memory.retain_freed_memory()` in every training process (DDP ranks included).

    On the CPU it makes the large per-step tensors reuse freed memory instead of fresh pages from
    the kernel, which the kernel must zero-fill every step (docs/benchmarks.md has the effect);
    GPU runs skip it: their tensors live on the device.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.strategy.root_device.type == "cpu":
            retain_freed_memory()  # it logs when glibc refuses
