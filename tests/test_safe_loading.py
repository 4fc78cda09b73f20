"""Safe loading: what attnmt writes is plain data, and a crafted checkpoint runs no code in any tool."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.serialization import get_unsafe_globals_in_checkpoint

from attnmt.checkpoint import CONFIG_KEY, load_checkpoint_file
from attnmt.config import compose
from attnmt.errors import CheckpointError
from attnmt.inference import load_for_inference
from attnmt.train import resume_config, train

from test_reliability import LONG_RUN
from test_train import REPO, tiny_overrides


class RunsShellCommand:
    """Unpickling this runs `touch <marker>`, the way a crafted file would run anything."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def trained(tiny_parallel_dir, tmp_path_factory) -> Path:
    """last.ckpt of a tiny transformer run (two steps)."""
    run = tmp_path_factory.mktemp("safe_run")
    cache = tmp_path_factory.mktemp("safe_cache")
    train(compose(tiny_overrides(tiny_parallel_dir, cache, run, "transformer") + LONG_RUN + ["trainer.max_steps=2"]))
    return run / "checkpoints" / "last.ckpt"


@pytest.fixture
def crafted(tmp_path) -> tuple[Path, Path]:
    """(a checkpoint-looking file whose unpickling would create marker, marker)."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "shared.ckpt"
    payload = RunsShellCommand(marker)
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": payload}}, path)
    # the payload is live, shown without unpickling it: the file asks for the shell call, and that call
    # is what creates the marker
    assert any(name.endswith(".system") for name in get_unsafe_globals_in_checkpoint(path))
    function, arguments = payload.__reduce__()
    function(*arguments)
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_new_checkpoints_hold_only_plain_data(trained) -> None:
    assert get_unsafe_globals_in_checkpoint(trained) == []  # nothing beyond torch's default allow-list
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)  # no allow-list at all
    assert isinstance(checkpoint["hyper_parameters"], dict) and isinstance(checkpoint[CONFIG_KEY], dict)
    assert isinstance(checkpoint["attnmt_tokenizer"]["files"]["joint.model"], bytes)
    assert torch.is_tensor(checkpoint["attnmt_rng"]["numpy"]["state"]["key"])


@pytest.mark.parametrize("tool", ["translate", "evaluate", "resume"])
@pytest.mark.slow
def test_a_crafted_checkpoint_is_refused_and_its_code_does_not_run(tool, crafted, tiny_parallel_dir, tmp_path) -> None:
    path, marker = crafted
    command = {
        "translate": [str(REPO / "scripts" / "translate.py"), str(path), "--device", "cpu"],
        "evaluate": [str(REPO / "scripts" / "evaluate.py"), str(path), "--src", str(tiny_parallel_dir / "test.en"),
                     "--ref", str(tiny_parallel_dir / "test.fr"), "--device", "cpu"],
        "resume": [str(REPO / "train.py"), f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'resumed'}"],
    }[tool]
    done = subprocess.run([sys.executable, *command], input="a cat .\n", cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert str(path) in errors[0] and "posix.system" in errors[0] and "can run code" in errors[0]
    assert not marker.exists()


def test_a_checkpoint_whose_model_config_names_other_code_is_refused(trained, tmp_path) -> None:
    """A file that unpickles safely but whose model config would have Hydra open (truncate) a file of its
    choice: Hydra's own blocklist stops os.system, not everything."""
    marker = tmp_path / "code_ran"
    checkpoint = load_checkpoint_file(trained)
    model = dict(checkpoint["hyper_parameters"]["model"])
    model["activation"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    checkpoint["hyper_parameters"]["model"] = model
    instantiate({"payload": model["activation"]})  # the payload is live: instantiating the config runs it
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="would build 'builtins.open'"):
        load_for_inference(path)
    assert not marker.exists()


def test_attention_nodes_load_only_from_attnmt_modules(trained, tmp_path) -> None:
    """The model config's attention nodes (attnmt.modules.*) load; one naming other code is refused."""
    checkpoint = load_checkpoint_file(trained)
    model = checkpoint["hyper_parameters"]["model"]
    assert model["encoder_self_attention"]["_target_"].startswith("attnmt.modules.")
    load_for_inference(trained)
    model["encoder_self_attention"] = {"_target_": "shutil.rmtree", "path": str(tmp_path / "keep")}
    (tmp_path / "keep").mkdir()
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="model config would build 'shutil.rmtree'"):
        load_for_inference(path)
    assert (tmp_path / "keep").is_dir()


def test_a_checkpoint_whose_run_config_names_other_code_is_refused_when_resuming(trained, tmp_path) -> None:
    checkpoint = load_checkpoint_file(trained)
    checkpoint[CONFIG_KEY]["callbacks"]["payload"] = {"_target_": "shutil.copyfile", "src": "/etc/hostname", "dst": "x"}
    path = tmp_path / "shared.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=r"run config would build 'shutil.copyfile'"):
        resume_config(path, [])
    assert resume_config(trained, []).model._target_.endswith("TransformerSeq2Seq")  # the run's own config passes


def test_checkpoints_written_before_safe_loading_still_load(trained, tmp_path) -> None:
    """Their numpy RNG state (a uint32 array) is the one non-plain entry, allowed for numpy arrays only."""
    from attnmt.task import _set_rng_states

    checkpoint = load_checkpoint_file(trained)
    checkpoint["attnmt_rng"]["numpy"] = np.random.get_state()  # what older attnmt stored
    expected = np.random.rand(3)
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    loaded = load_checkpoint_file(old)
    _set_rng_states(loaded["attnmt_rng"])
    assert np.array_equal(np.random.rand(3), expected)
    model, _, _ = load_for_inference(old)
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(pickle.UnpicklingError):  # numpy is allowed inside attnmt's loader only, not globally
        torch.load(old, weights_only=True)


def test_a_run_folder_whose_data_config_names_other_code_is_refused_by_evaluate(tmp_path) -> None:
    from attnmt.evaluate import run_corpus

    marker = tmp_path / "code_ran"
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    corpus = f"{{_target_: builtins.open, _args_: ['{marker}', w]}}"
    (tmp_path / "run" / ".hydra" / "config.yaml").write_text(f"data:\n  corpus: {corpus}\n")
    with pytest.raises(CheckpointError, match="data.corpus would build 'builtins.open'"):
        run_corpus(tmp_path / "run")
    assert not marker.exists()
