"""Checkpoints: atomic writes, self-contained tokenizers, clear errors on corrupt or mismatched files.

A checkpoint carries the sentencepiece model(s) it was trained with, so evaluate/translate need
nothing but the .ckpt file, and resuming with a different vocabulary is refused by fingerprint.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from attnmt.errors import CheckpointError

TOKENIZER_KEY = "attnmt_tokenizer"
CONFIG_KEY = "attnmt_config"  # the run's composed config (resolved): what ckpt_path= resumes with


def umask_mode(mode: int = 0o666) -> int:
    """The permissions a plain open() would give a new file under the process's umask.

    mkstemp creates files 0600 whatever the umask; on a shared cluster that hides checkpoints and
    data copies from the rest of the group, so files written through a temporary get these instead.
    """
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes <path>.tmp-<pid>, fsyncs it, then renames over <path>: a kill mid-save never leaves a
    truncated checkpoint behind (the previous one stays intact)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(checkpoint, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, umask_mode())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint_file(path, map_location=map_location)


def load_checkpoint_file(path, map_location=None) -> dict[str, Any]:
    """torch.load with errors a user can act on (missing, truncated or not a checkpoint)."""
    path = Path(path)
    fs = get_filesystem(str(path))
    if not fs.exists(str(path)):
        raise CheckpointError(f"checkpoint not found: {path}. Give an existing .ckpt file (e.g. <run>/checkpoints/last.ckpt).")
    try:
        return torch.load(path, map_location=map_location or "cpu", weights_only=False)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:  # truncated/corrupt archives
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(error).__name__}: {str(error).splitlines()[0][:200]}). "
            "Use another checkpoint of the run (best-*.ckpt or last.ckpt)."
        ) from None


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


def load_for_inference(path, map_location="cpu"):
    """A checkpoint -> (model in eval mode, its Tokenizer, the task's hyperparameters).

    Works for any checkpoint written by train.py: the model is rebuilt from the config stored in
    the checkpoint and the tokenizer from the sentencepiece model(s) embedded in it.
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint_file(path, map_location=map_location)
    hparams = checkpoint.get("hyper_parameters")
    if not hparams or "model" not in hparams:
        raise CheckpointError(f"{path} is not an attnmt training checkpoint (no model config inside).")
    tokenizer = load_tokenizer(checkpoint, path)
    if (hparams["src_vocab_size"], hparams["tgt_vocab_size"]) != (tokenizer.src_vocab_size, tokenizer.tgt_vocab_size):
        raise CheckpointError(
            f"{path}: model vocabulary sizes {hparams['src_vocab_size']}/{hparams['tgt_vocab_size']} do not match its "
            f"tokenizer ({tokenizer.src_vocab_size}/{tokenizer.tgt_vocab_size}); the file was altered."
        )
    # the model alone, as TranslationTask builds it: inference needs neither the task nor its optimizer
    model = instantiate(hparams["model"], src_vocab_size=hparams["src_vocab_size"],
                        tgt_vocab_size=hparams["tgt_vocab_size"], shared_vocab=hparams["shared_vocab"])
    prefix = "model."  # the task holds the model as its `model` attribute
    state = checkpoint["state_dict"]
    unexpected = [key for key in state if not key.startswith(prefix)]
    if unexpected:
        raise RuntimeError(f"{path}: state_dict keys outside the model: {unexpected[:5]}")
    model.load_state_dict({key[len(prefix):]: value for key, value in state.items()})
    return model.eval(), tokenizer, hparams
