"""Faults and bad input: kills, signals, non-finite losses, corrupt files, impossible configs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnmt.config import compose
from attnmt.errors import CheckpointError, ConfigError, DataError, UserError, find_user_error
from attnmt.train import train

from test_train import REPO, tiny_overrides

LONG_RUN = ["trainer.max_epochs=1000", "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null",
            "callbacks.early_stopping=null", "logger=none", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("reliability_cache")


def _cli(overrides: list[str], run_dir: Path) -> list[str]:
    kept = [o for o in overrides if not o.startswith("paths.output_dir")]
    return [sys.executable, str(REPO / "train.py"), *kept, f"hydra.run.dir={run_dir}"]


def _step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _wait_for_checkpoint(path: Path, process: subprocess.Popen, min_step: int, timeout: float = 600) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, str(process.communicate()[0])[-2000:]
        if path.exists():
            step = _step_of(path)  # safe to read while training: checkpoints are replaced atomically
            if step >= min_step:
                return step
        time.sleep(0.2)
    raise TimeoutError(f"no checkpoint at step >= {min_step} in {timeout} s")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_with_the_uninterrupted_weights(tiny_parallel_dir, cache_dir, tmp_path):
    total = 14
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + LONG_RUN + [
        "callbacks.model_checkpoint.every_n_train_steps=1"]
    straight = tmp_path / "straight"
    train(compose([o.replace(str(tmp_path), str(straight)) for o in overrides] + [f"trainer.max_steps={total}"]))

    killed = tmp_path / "killed"
    last = killed / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(_cli(overrides, killed), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(last, process, min_step=4)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    stopped_at = _step_of(last)  # loads: never a half-written file
    assert 4 <= stopped_at < total

    resumed = [o.replace(str(tmp_path), str(killed)) for o in overrides]
    metrics = train(compose(resumed + [f"trainer.max_steps={total}", f"ckpt_path={last}"]))
    assert metrics["global_step"] == total
    expected = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    got = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_resume_from_a_checkpoint_written_at_an_epochs_last_batch(tiny_parallel_dir, cache_dir, tmp_path):
    """A step checkpoint after the last batch of an epoch: the resumed run starts the next epoch
    (next shuffle, batch 0) and ends with the uninterrupted run's weights."""
    from hydra.utils import instantiate

    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + LONG_RUN + [
        "callbacks.model_checkpoint.every_n_train_steps=1"]
    datamodule = instantiate(compose(overrides).data)
    datamodule.setup("fit")
    epoch_length = len(datamodule.train_dataloader())
    total = epoch_length + 3

    def run(folder: str, steps: int, *extra: str) -> dict:
        return train(compose([o.replace(str(tmp_path), str(tmp_path / folder)) for o in overrides]
                             + [f"trainer.max_steps={steps}", *extra]))

    run("straight", total)
    run("stopped", epoch_length)  # its last.ckpt is the one written after the epoch's last batch
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert _step_of(last) == epoch_length
    metrics = run("stopped", total, f"ckpt_path={last}")
    assert metrics["global_step"] == total
    expected = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    got = torch.load(last, map_location="cpu", weights_only=True)
    assert got["epoch"] == expected["epoch"] == 1
    for name in expected["state_dict"]:
        torch.testing.assert_close(got["state_dict"][name], expected["state_dict"][name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("signum, says", [(signal.SIGTERM, "SIGTERM: saved"), (signal.SIGINT, "interrupt: saved")])
@pytest.mark.slow
def test_sigterm_and_sigint_save_last_checkpoint_at_once_without_validating(signum, says, tiny_parallel_dir, cache_dir, tmp_path):
    """The signal's step finishes, last.ckpt is written right away (no validation first, although
    stopping would normally trigger one), the process exits 0; the time from signal to file is short."""
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "bahdanau") + [
        o for o in LONG_RUN if not o.startswith("trainer.limit_val_batches")] + [
        "callbacks.model_checkpoint.every_n_train_steps=3", "trainer.limit_val_batches=1.0",
        "trainer.check_val_every_n_epoch=100"]  # a validation is possible, but none is due
    last = tmp_path / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(_cli(overrides, tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_checkpoint(last, process, min_step=3)
        signalled = time.time()
        process.send_signal(signum)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output[-2000:]
    assert says in output and "after the signal" in output
    assert "validation step" not in output  # ValidationReport prints a line for every validation
    seconds = last.stat().st_mtime - signalled
    print(f"signal {signum}: last.ckpt written {seconds:.2f} s after the signal")
    assert seconds < 30, seconds  # one tiny step and one checkpoint write (0.01-0.02 s on an idle machine)
    saved = _step_of(last)
    assert saved >= 3
    assert not (tmp_path / "train_metrics.json").exists()  # an interrupted run is not a finished one
    # the saved state is complete: training resumes from exactly that step
    resumed = [o for o in overrides if not o.startswith("trainer.limit_val_batches")] + ["trainer.limit_val_batches=0"]
    metrics = train(compose(resumed + [f"trainer.max_steps={saved + 2}", f"ckpt_path={last}"]))
    assert metrics["global_step"] == saved + 2


def test_checkpoints_follow_the_umask(tmp_path):
    """mkstemp makes 0600 files; a checkpoint gets what the umask gives any new file (shared clusters)."""
    import os

    from attnmt.checkpoint import AtomicCheckpointIO

    previous = os.umask(0o022)
    try:
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "a" / "last.ckpt")
        os.umask(0o077)
        AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "b" / "last.ckpt")
    finally:
        os.umask(previous)
    assert (tmp_path / "a" / "last.ckpt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "b" / "last.ckpt").stat().st_mode & 0o777 == 0o600


def test_non_finite_losses_are_skipped_then_stop_the_run(tiny_parallel_dir, cache_dir, tmp_path):
    """A forward hook poisons the embeddings: every loss is NaN, no update may touch the weights."""
    from attnmt.train import build_task, build_trainer
    from hydra.utils import instantiate

    cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + LONG_RUN + [
        "trainer.max_steps=50", "task.max_nonfinite_steps=3"])
    datamodule = instantiate(cfg.data)
    task = build_task(cfg, datamodule)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    task.model.src_embed.register_forward_hook(lambda module, inputs, output: output * float("nan"))
    trainer = build_trainer(cfg)
    trainer.fit(task, datamodule=datamodule)
    assert task.nonfinite_total == 3  # stopped after 3 in a row, not at max_steps=50
    assert trainer.global_step == 3  # Lightning counts the skipped steps; no gradient reached AdamW
    for name, value in task.state_dict().items():
        assert torch.equal(value, before[name]), name


@pytest.mark.slow
def test_mismatched_line_counts_give_one_clear_line_and_exit_code_2(tiny_parallel_dir, cache_dir, tmp_path):
    (tmp_path / "bad.en").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "bad.fr").write_text("un\ndeux\n", encoding="utf-8")
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + [f"data.corpus.train={tmp_path}/bad"]
    done = subprocess.run(_cli(overrides, tmp_path / "run"), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 2
    message = done.stderr.strip().splitlines()[-1]
    assert message.startswith("error:") and "bad.en" in message and "bad.fr" in message
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_unknown_model_lists_the_choices(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "model=bahdanoo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode != 0
    assert "bahdanau" in done.stderr and "transformer" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_required_value_left_unset_names_its_key(tmp_path):
    """data=parallel_text has `???` for its file prefixes: one error line naming the key, no traceback."""
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "data=parallel_text", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "data.corpus.train" in lines[0] and "data.corpus.train=" in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("override, key", [("model.heads=3", "model.heads"), ("model.d_model=0", "model.d_model")])
def test_impossible_sizes_name_the_config_key(override, key, tiny_parallel_dir, cache_dir, tmp_path):
    cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + [override, "debug=fast_dev_run"])
    with pytest.raises(Exception) as caught:
        train(cfg)
    error = find_user_error(caught.value)
    assert isinstance(error, ConfigError) and key in str(error)


def test_resuming_with_another_vocabulary_is_refused(tiny_parallel_dir, cache_dir, tmp_path):
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + LONG_RUN + ["trainer.max_steps=2"]
    train(compose(overrides))
    last = tmp_path / "checkpoints" / "last.ckpt"
    other_vocab = [o for o in overrides if not o.startswith("data.tokenizer.vocab_size")] + ["data.tokenizer.vocab_size=120"]
    with pytest.raises(Exception) as caught:
        train(compose(other_vocab + ["trainer.max_steps=4", f"ckpt_path={last}"]))
    error = find_user_error(caught.value)
    assert isinstance(error, CheckpointError) and "vocabulary" in str(error)


def test_corrupt_or_missing_checkpoint_names_the_file(tiny_parallel_dir, cache_dir, tmp_path):
    from attnmt.checkpoint import load_checkpoint_file

    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + LONG_RUN + ["trainer.max_steps=1"]
    train(compose(overrides))
    last = tmp_path / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    for path in (truncated, tmp_path / "missing.ckpt"):
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint_file(path)
    with pytest.raises(Exception) as caught:
        train(compose(overrides + ["trainer.max_steps=2", f"ckpt_path={truncated}"]))
    assert isinstance(find_user_error(caught.value), CheckpointError)


def test_atomic_save_keeps_the_previous_checkpoint_when_writing_fails(tmp_path):
    from attnmt.checkpoint import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full (simulated inside pickling)")

    with pytest.raises(RuntimeError):
        io.save_checkpoint({"global_step": 2, "bad": Unpicklable()}, path)
    assert io.load_checkpoint(path)["global_step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_missing_split_and_empty_file_are_data_errors(tiny_parallel_dir, cache_dir, tmp_path):
    (tmp_path / "empty.en").write_text("", encoding="utf-8")
    (tmp_path / "empty.fr").write_text("", encoding="utf-8")
    for prefix in (tmp_path / "nothing_here", tmp_path / "empty"):
        cfg = compose(tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "transformer") + [f"data.corpus.val={prefix}"])
        with pytest.raises(Exception) as caught:
            train(cfg)
        error = find_user_error(caught.value)
        assert isinstance(error, DataError) and prefix.name in str(error), error
    assert issubclass(DataError, UserError)
