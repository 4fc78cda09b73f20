"""Checkpoint averaging: step checkpoints kept by a real (tiny) training run, their average
written at the end and by scripts/average_checkpoints.py, usable for translation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt.averaging import average_checkpoints, average_state_dicts, step_checkpoints
from attnmt.checkpoint import load_checkpoint_file
from attnmt.inference import load_for_inference
from attnmt.config import compose
from attnmt.errors import CheckpointError
from attnmt.train import train

from conftest import TINY_VOCAB_SIZE, WRITTEN_VOCAB_SIZE, _find_multi30k

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_run(tiny_parallel_dir, tmp_path_factory) -> Path:
    """A tiny Bahdanau run of 5 updates keeping the last 3 of its per-update checkpoints."""
    run = tmp_path_factory.mktemp("averaging_run")
    vocab = TINY_VOCAB_SIZE if _find_multi30k() is not None else WRITTEN_VOCAB_SIZE
    train(compose([
        "model=bahdanau", "model.embedding_size=32", "model.encoder_hidden_size=16", "model.hidden_size=32",
        "model.attention_size=32", "model.readout_size=32", "trainer=cpu", "data=parallel_text",
        f"data.corpus.train={tiny_parallel_dir}/train", f"data.corpus.val={tiny_parallel_dir}/val",
        f"data.cache_dir={run}/cache", f"data.tokenizer.vocab_size={vocab}", "data.max_tokens=512", "data.num_workers=0",
        f"paths.output_dir={run}", "decode.validation.max_len_b=5", "trainer.enable_model_summary=false",
        "trainer.max_steps=5", "trainer.max_epochs=-1", "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=5",
        "callbacks.step_checkpoints.every_n_train_steps=1", "callbacks.step_checkpoints.keep=3",
    ]))
    return run


@pytest.mark.slow
def test_the_last_step_checkpoints_are_kept_and_averaged(trained_run: Path) -> None:
    kept = step_checkpoints(trained_run / "checkpoints")
    assert [p.name for p in kept] == ["step3.ckpt", "step4.ckpt", "step5.ckpt"]
    weights = [load_checkpoint_file(p)["state_dict"] for p in kept]
    averaged = load_checkpoint_file(trained_run / "checkpoints" / "averaged.ckpt")
    assert "optimizer_states" not in averaged
    changed = 0
    for key, value in averaged["state_dict"].items():
        expected = (weights[0][key] + weights[1][key] + weights[2][key]) / 3
        torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-6)
        changed += not torch.equal(value, weights[-1][key])
    assert changed > 0  # the updates moved the weights, so the mean differs from the last


def test_averaged_checkpoint_translates(trained_run: Path) -> None:
    model, tokenizer, hparams = load_for_inference(trained_run / "checkpoints" / "averaged.ckpt")
    assert hparams["variant"] and not model.training
    src = torch.tensor(tokenizer.encode_src(["A man is walking."]))
    from attnmt.data.vocab import padding_mask

    logits, _ = model(src, padding_mask(src), torch.full((1, 1), 2))
    assert torch.isfinite(logits).all()


@pytest.mark.slow
def test_script_averages_the_last_n_of_a_run(trained_run: Path, tmp_path: Path) -> None:
    output = tmp_path / "last2.ckpt"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "average_checkpoints.py"), str(trained_run), "--last", "2", "-o", str(output)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "step4.ckpt" in result.stdout and "step5.ckpt" in result.stdout and "step3.ckpt" not in result.stdout
    two = [load_checkpoint_file(trained_run / "checkpoints" / f"step{s}.ckpt")["state_dict"] for s in (4, 5)]
    written = load_checkpoint_file(output)["state_dict"]
    key = next(iter(written))
    torch.testing.assert_close(written[key], (two[0][key] + two[1][key]) / 2)


@pytest.mark.slow
def test_script_reports_a_run_without_step_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "average_checkpoints.py"), str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "keep" in result.stderr  # says how to get step checkpoints


def test_mismatched_models_are_refused() -> None:
    with pytest.raises(CheckpointError, match="other parameters"):
        average_state_dicts([{"a": torch.zeros(2)}, {"b": torch.zeros(2)}])
