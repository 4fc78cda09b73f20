"""What a user reads on the console: one line per validation, a progress bar that moves on slow
machines and shows the last BLEU, a closing summary that says where things are and what to run next."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from attnmt.config import compose
from attnmt.train import train

from test_train import tiny_overrides

VALIDATION_LINE = re.compile(
    r"^validation step (\d+) epoch (\d+): val loss \d+\.\d{3} BLEU \d+\.\d\d chrF \d+\.\d\d "
    r"\(best \d+\.\d\d at step (\d+)\) elapsed \d+:\d\d:\d\d$"
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console_cache")


@pytest.mark.slow
def test_one_line_per_validation_and_a_final_summary(tiny_parallel_dir, cache_dir, tmp_path, caplog, capsys):
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "luong") + [
        "debug=limit", "callbacks.progress_bar.refresh_rate=1000", "callbacks.progress_bar.refresh_seconds=0"]
    with caplog.at_level(logging.INFO, logger="attnmt.train"):
        train(compose(overrides))
    messages = [r.getMessage() for r in caplog.records if r.name == "attnmt.train"]
    validations = [VALIDATION_LINE.match(m) for m in messages if m.startswith("validation step")]
    assert len(validations) == 2 and all(validations), messages
    assert [(int(m[1]), int(m[2])) for m in validations] == [(5, 0), (10, 1)]
    summary = "\n".join(messages[messages.index(next(m for m in messages if m.startswith("finished:"))):])
    best = sorted((tmp_path / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and f"best checkpoint: {best[0]} (val BLEU" in summary
    assert f"this run: {tmp_path / 'tensorboard'}" in summary
    assert f"evaluate: python scripts/evaluate.py {tmp_path}" in summary
    assert "resume/extend: python train.py ckpt_path=" in summary

    # the bar refreshed by time (refresh_rate alone would only draw the last batch) and shows the last BLEU
    bar = capsys.readouterr().out
    assert "2/5" in bar and "3/5" in bar, bar[-2000:]
    assert "val/bleu=" in bar
    assert "v_num" not in bar
