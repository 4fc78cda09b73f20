"""Checkpoints: atomic writes, self-contained tokenizers, clear errors on corrupt or mismatched files.

A checkpoint carries the sentencepiece model(s) it was trained with, so evaluate/translate need
nothing but the .ckpt file, and resuming with a different vocabulary is refused by fingerprint.

Checkpoints hold only tensors, plain containers, numbers, strings and bytes, and every load (for
inference and for resuming) unpickles with `weights_only=True`: a shared file cannot run code by
being opened. Nor through its stored configs, which name the classes to build (`_target_`):
`check_targets` refuses any outside the modules a run of attnmt uses.
"""

from __future__ import annotations

import pickle
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.serialization import safe_globals

from attnmt.errors import CheckpointError
from attnmt.atomic import atomic_file
from attnmt.models.legacy import upgrade_checkpoint

TOKENIZER_KEY = "attnmt_tokenizer"
CONFIG_KEY = "attnmt_config"  # the run's composed config (resolved): what ckpt_path= resumes with


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a temporary beside <path>, fsyncs it, then renames it over <path> (atomic.atomic_file):
    a kill mid-save never leaves a truncated checkpoint behind (the previous one stays intact)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        with atomic_file(path, fsync=True) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        # Lightning's resume path: safe unpickling whatever weights_only Lightning asks for
        return load_checkpoint_file(path, map_location=map_location)


def _legacy_numpy_globals() -> list:
    """What checkpoints written before safe loading need beyond plain data: their numpy RNG state, a
    uint32 array. Rebuilding an array from a dtype and raw bytes (or, for object arrays, from items
    the same restricted unpickler made) calls no code the file chooses, so numpy's array reconstruction,
    ndarray, dtype and the uint32 dtype are allowed, nothing more."""
    import numpy as np

    reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
    # pickles name it after the numpy that wrote them: numpy._core (2.x) or numpy.core (1.x)
    names = ("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct")
    return [*((reconstruct, name) for name in names), np.ndarray, np.dtype, np.dtypes.UInt32DType]


def _refused_global(message: str) -> str:
    """The object torch's restricted unpickler refused, out of its multi-paragraph message."""
    named = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"got <class '([\w.]+)'>", message)
    if named:
        return f"it asks for {named.group(1)}"
    lines = [line for line in message.splitlines() if line.strip() and "weights_only" not in line.lower()]
    return lines[0][:200] if lines else "an object torch does not allow"


def load_checkpoint_file(path, map_location=None, mmap: bool = False) -> dict[str, Any]:
    """torch.load(weights_only=True) with errors a user can act on (missing, truncated, unsafe or not a checkpoint).

    mmap: tensors are mapped from the file, not read (for a quick look at small entries).
    """
    path = Path(path)
    fs = get_filesystem(str(path))
    if not fs.exists(str(path)):
        raise CheckpointError(f"checkpoint not found: {path}. Give an existing .ckpt file (e.g. <run>/checkpoints/last.ckpt).")
    try:
        with safe_globals(_legacy_numpy_globals()):  # scoped: the allow-list never outlives this load
            loaded = torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
        return upgrade_checkpoint(loaded, ("hyper_parameters", CONFIG_KEY))  # model configs of older attnmt
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} holds more than tensors and plain data ({_refused_global(str(error))}): attnmt does not "
            "unpickle such files, since that can run code. Use a checkpoint written by attnmt's train.py, from a source you trust."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:  # truncated/corrupt archives
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "Use another checkpoint of the run (best-*.ckpt or last.ckpt)."
        ) from None


def check_targets(config: Any, allowed: tuple[str, ...], path, what: str = "run config") -> None:
    """Refuse a stored config that would have Hydra build anything outside `allowed` (module prefixes).

    A checkpoint's configs name what instantiate() builds and calls, so a crafted `_target_` (e.g.
    os.system, nested anywhere) would run code as surely as an unsafe pickle.
    """
    if isinstance(config, dict):
        target = config.get("_target_")
        if target is not None and not (isinstance(target, str) and target.startswith(allowed)):
            raise CheckpointError(
                f"{path}: its {what} would build {str(target)[:100]!r}, outside {', '.join(allowed)}: "
                "attnmt builds nothing else a file names, since that could run any code. Use a checkpoint or run folder "
                "written by attnmt's train.py, from a source you trust."
            )
        for value in config.values():
            check_targets(value, allowed, path, what)
    elif isinstance(config, list | tuple):
        for value in config:
            check_targets(value, allowed, path, what)


def store_tokenizer(checkpoint: dict[str, Any], tokenizer) -> None:
    """Embed the tokenizer's files and fingerprint in a checkpoint dict."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        files = {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}
    checkpoint[TOKENIZER_KEY] = {"fingerprint": tokenizer.fingerprint, "files": files}


def load_tokenizer(checkpoint: dict[str, Any], path: str | Path = "checkpoint"):
    """Rebuild the Tokenizer stored by `store_tokenizer`."""
    from attnmt.data.tokenizer import Tokenizer

    stored = checkpoint.get(TOKENIZER_KEY)
    if not stored:
        raise CheckpointError(f"{path} holds no tokenizer: it was not written by attnmt's training (train.py).")
    tmp = Path(tempfile.mkdtemp(prefix="attnmt-tok-"))
    for name, data in stored["files"].items():
        (tmp / name).write_bytes(data)
    return Tokenizer.load(tmp)


def check_tokenizer(checkpoint: dict[str, Any], tokenizer, source: str = "checkpoint") -> None:
    """Refuse a checkpoint trained with another sentencepiece model or vocabulary."""
    stored = checkpoint.get(TOKENIZER_KEY)
    if stored is None:
        return
    if stored["fingerprint"] != tokenizer.fingerprint:
        raise CheckpointError(
            f"{source} was trained with another sentencepiece vocabulary (fingerprint {stored['fingerprint'][:12]}, "
            f"the data config now gives {tokenizer.fingerprint[:12]}). Use the data settings of that run "
            "(its .hydra/config.yaml) or start a new run without ckpt_path."
        )


def check_state_dict(stored: dict[str, Any], expected: dict[str, Any], path, stored_variant: str | None = None,
                     variant: str | None = None) -> None:
    """Refuse weights that do not fit the model with one line (names, counts, the first few keys).

    stored: the checkpoint's state_dict; expected: the model's own (both name -> tensor).
    """
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    reshaped = [k for k in expected if k in stored and tuple(stored[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or reshaped):
        return
    trained = f" was trained as {stored_variant!r}" if stored_variant and stored_variant != variant else ""
    details = "; ".join(
        f"{what} {len(keys)} (e.g. {', '.join(keys[:2])})" for what, keys in
        (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)) if keys
    )
    raise CheckpointError(
        f"checkpoint {path}{trained} does not fit the model {variant or ''} being built: {details}. "
        "Resume with only ckpt_path= (the run's own config is restored), or start a new run without it."
    )
