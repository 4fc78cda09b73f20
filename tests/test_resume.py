"""Resume is one command: `python train.py ckpt_path=<run>/checkpoints/last.ckpt` restores the run's own
config, continues in the same run folder and TensorBoard run, and refuses changes that would make
the checkpoint mean something else. Also: honest throughput figures after a resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnmt.config import compose
from attnmt.errors import CheckpointError, ConfigError, find_user_error
from attnmt.train import resume_config, train

from test_reliability import LONG_RUN, _step_of, _wait_for_checkpoint
from test_train import REPO, scalars, tiny_overrides


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("resume_cache")


def _cli(arguments: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *arguments], cwd=cwd, capture_output=True, text=True,
                          timeout=1200, **kwargs)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slow
def test_sigkilled_bahdanau_run_resumes_with_only_ckpt_path(tiny_parallel_dir, cache_dir, tmp_path):
    """Bahdanau (not the default model) with size overrides, killed mid-epoch with SIGKILL, resumed
    with nothing but ckpt_path=: same run folder, same final weights as a run never interrupted."""
    total = 12
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "bahdanau") + [
        "trainer.max_epochs=1000", "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null",
        "callbacks.early_stopping=null", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=1", f"trainer.max_steps={total}", "model.hidden_size=48"]
    straight = tmp_path / "straight"
    train(compose([o.replace(str(tmp_path), str(straight)) for o in overrides]))

    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    command = [sys.executable, str(REPO / "train.py"), *[o for o in overrides if not o.startswith("paths.output_dir")],
               f"hydra.run.dir={run}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(last, process, min_step=4)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    stopped_at = _step_of(last)
    assert 4 <= stopped_at < total
    original_config = (run / ".hydra" / "config.yaml").read_text()

    done = _cli([f"ckpt_path={last}"], cwd=tmp_path)  # the one documented command
    assert done.returncode == 0, done.stderr[-3000:]
    assert _step_of(last) == total
    expected, got = _weights(straight / "checkpoints" / "last.ckpt"), _weights(last)
    assert expected.keys() == got.keys()
    recurrent = [v for k, v in got.items() if "decoder" in k and "weight_hh" in k]
    assert recurrent and recurrent[0].shape[-1] == 48  # the run's own sizes came back
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)

    # the same run folder and TensorBoard run: no new run folder, the original .hydra/ untouched
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["run", "straight"]
    assert (run / ".hydra" / "config.yaml").read_text() == original_config
    resumed_configs = list((run / ".hydra").glob("resumed_*/config.yaml"))
    assert len(resumed_configs) == 1 and "bahdanau" in resumed_configs[0].read_text()
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    losses = scalars(run)["train/loss"]
    by_step: dict[int, set[float]] = {}
    for step, value in losses:
        by_step.setdefault(step, set()).add(round(value, 5))
    assert max(by_step) >= total - 2
    # one curve: what the killed run logged after its checkpoint was dropped (at most the checkpoint's
    # own step is logged twice, with the same value: the resumed run repeats that step exactly)
    assert all(len(values) == 1 for values in by_step.values()), by_step
    assert len(losses) <= len(by_step) + 1

    # a change that would make the checkpoint mean something else: one line naming the key, exit 2
    for override, key in (("model=luong", "model"), ("model.hidden_size=64", "model.hidden_size"),
                          ("optim.optimizer.lr=0.1", "optim.optimizer.lr"), ("seed=7", "seed")):
        refused = _cli([f"ckpt_path={last}", override], cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr[-2000:]
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {key} cannot change when resuming"), refused.stderr
    # a budget may change: resume_config applies it to the stored config
    cfg = resume_config(last, [f"ckpt_path={last}", "trainer.max_steps=20", "trainer.max_time=00:00:01:00"])
    assert cfg.trainer.max_steps == 20 and cfg.trainer.max_time == "00:00:01:00" and cfg.variant == "bahdanau"
    assert cfg.model.hidden_size == 48


def test_weights_that_do_not_fit_give_one_clear_error(tiny_parallel_dir, cache_dir, tmp_path):
    rnn = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "bahdanau") + LONG_RUN + ["trainer.max_steps=1"]
    train(compose(rnn))
    last = tmp_path / "checkpoints" / "last.ckpt"
    transformer = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path / "t", "transformer") + LONG_RUN + [
        "trainer.max_steps=2", f"ckpt_path={last}"]
    with pytest.raises(Exception) as caught:
        train(compose(transformer))
    error = find_user_error(caught.value)
    assert isinstance(error, CheckpointError), caught.value
    message = str(error)
    assert "\n" not in message and len(message) < 600 and str(last) in message and "missing" in message


def test_a_checkpoint_outside_a_run_folder_without_config_is_refused(tmp_path):
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {}, "global_step": 3}, bare)
    with pytest.raises(CheckpointError, match="holds no run config"):
        resume_config(bare, [])
    with pytest.raises(ConfigError, match="data.max_tokens cannot change"):
        from attnmt.train import check_resume_override

        check_resume_override("data.max_tokens", bare)


@pytest.mark.slow
def test_throughput_after_a_resume_counts_only_the_resumed_steps(tiny_parallel_dir, cache_dir, tmp_path):
    """ms/step and tokens/s logged after a resume describe the resumed steps: not the time since some
    earlier clock start (the machine's uptime, before), nor the restart itself."""
    overrides = tiny_overrides(tiny_parallel_dir, cache_dir, tmp_path, "bahdanau") + LONG_RUN + [
        "trainer.log_every_n_steps=2", "callbacks.model_checkpoint.every_n_train_steps=1", "logger=tensorboard"]
    overrides = [o for o in overrides if o != "logger=none"]
    train(compose(overrides + ["trainer.max_steps=5"]))  # stops mid-epoch, at an odd step
    last = tmp_path / "checkpoints" / "last.ckpt"
    time.sleep(2.0)  # a gap between the runs that a wrong clock would count
    started = time.perf_counter()
    train(compose(overrides + ["trainer.max_steps=13", f"ckpt_path={last}"]))
    wall_ms_per_step = 1000 * (time.perf_counter() - started) / 8  # includes start-up: an upper bound

    found = scalars(tmp_path)
    before = [v for s, v in found["train/tokens_per_s"] if s <= 5]
    after_ms = [v for s, v in found["train/ms_per_step"] if s > 5]
    after_tokens = [v for s, v in found["train/tokens_per_s"] if s > 5]
    assert len(after_ms) >= 3 and before
    assert all(0 < v < wall_ms_per_step for v in after_ms), (after_ms, wall_ms_per_step)
    reference = sorted(before)[len(before) // 2]
    assert all(v > 0.25 * reference for v in after_tokens), (after_tokens, reference)
