"""trainer.max_time is the whole fit's budget, final validation included (once one validation was timed)."""

from __future__ import annotations

import logging
import time

import lightning as L
import pytest
import torch

from attnmt.config import compose
from attnmt.train import train

from test_train import tiny_overrides


class SlowValidation(L.Callback):
    """Makes every validation take 2 s more, as a real validation set would on a CPU."""

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        time.sleep(2.0)


@pytest.mark.slow
def test_final_validation_ends_inside_max_time(tiny_parallel_dir, tmp_path_factory, tmp_path, caplog):
    budget = 20.0  # seconds: several validations fit, also on a loaded machine
    overrides = tiny_overrides(tiny_parallel_dir, tmp_path_factory.mktemp("max_time_cache"), tmp_path, "luong") + [
        "trainer.max_time=00:00:00:20", "trainer.val_check_interval=4", "trainer.max_epochs=1000",
        "trainer.enable_progress_bar=false", "callbacks.early_stopping=null", "callbacks.model_checkpoint.monitor=null",
        "+callbacks.slow_validation._target_=test_max_time.SlowValidation"]
    with caplog.at_level(logging.INFO, logger="attnmt.train"):
        metrics = train(compose(overrides))
    first = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("validation step"))
    h, m, sec = (int(x) for x in first.rsplit(" ", 1)[-1].split(":"))
    if 3600 * h + 60 * m + sec > budget / 2:
        pytest.skip(f"machine too loaded to time this: the first validation ended only after {first.rsplit(' ', 1)[-1]}")
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    elapsed = checkpoint["callbacks"]["Timer"]["time_elapsed"]["train"]  # saved when the final validation ended
    assert checkpoint["global_step"] == metrics["global_step"]
    assert budget - 8.0 < elapsed <= budget + 0.5, elapsed  # not stopped needlessly early either
