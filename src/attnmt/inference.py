"""Inference: a checkpoint -> model and tokenizer, and batched decoding of sentences with them.

translate, evaluate, compare and benchmark all load and decode through here, so the same
sentences with the same settings give the same outputs everywhere. Nothing here needs Lightning,
the training task or its optimizer: the model is rebuilt from the config stored in the checkpoint,
its weights come from the state_dict, the tokenizer from the sentencepiece model(s) embedded in it,
and the file is read with `checkpoint.load_checkpoint_file` (safe unpickling).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnmt.checkpoint import check_targets, load_checkpoint_file, load_tokenizer
from attnmt.cpu_memory import retain_freed_memory
from attnmt.data.batching import TokenBucketSampler, pad_sources
from attnmt.data.vocab import EOS_PIECE
from attnmt.errors import CheckpointError, ConfigError
from attnmt.search import Hypothesis, decode_batch

MODEL_MODULES = ("attnmt.models.", "attnmt.modules.")  # the only classes a checkpoint's model config may name (models, their attention nodes)


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its best checkpoint (checkpoints/best-*.ckpt), else last.ckpt."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: give a .ckpt file or a run folder (outputs/<task>/<date>_<time>)")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if len(best) > 1:  # save_top_k > 1: the run's summary names the best one
        summary = folder.parent / "train_metrics.json"
        named = json.loads(summary.read_text()).get("best_checkpoint") if summary.is_file() else None
        best = [p for p in best if named and p.name == Path(named).name] or best
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise CheckpointError(f"no checkpoint in {folder}: expected best-*.ckpt or last.ckpt (did the run save any?)")


@dataclass(frozen=True)
class DecodeSettings:
    """How to search: the one declaration of the decoding defaults.

    Validation (config `decode.validation`), evaluation after training (`decode.test`), evaluate,
    translate, compare and benchmark all start from these defaults; configs/train.yaml reads them
    through the ${attnmt.decode_default:<field>} resolver. beam_size 1 is greedy search (alpha
    unused then).
    """

    beam_size: int = 5
    alpha: float = 0.6  # GNMT length penalty exponent ((5 + T) / 6) ** alpha; 0 = no normalisation
    max_len_a: float = 1.5  # max output length (EOS included) = floor(a * source length + b)
    max_len_b: float = 10
    max_tokens: int = 4096  # source tokens per batch, padding and EOS included (beam search multiplies it by beam_size)

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"--beam-size {self.beam_size}: must be at least 1 (1 = greedy search)")
        if self.max_tokens < 1:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be a positive number of tokens")

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None, key: str = "decode") -> DecodeSettings:
        """A config node ({"beam_size": 1, "max_len_b": 5, ...}; missing fields keep the defaults)
        -> settings; an unknown field is a ConfigError naming `key`."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown decoding setting; choose from {', '.join(sorted(known))}")
        return cls(**{name: value for name, value in values.items() if value is not None})

    def search_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of search.decode_batch (all but max_tokens, which batches)."""
        return {"beam_size": self.beam_size, "alpha": self.alpha, "max_len_a": self.max_len_a, "max_len_b": self.max_len_b}

    @property
    def name(self) -> str:
        """Short label used in file names and metrics keys: "greedy" or "beam<K>"."""
        return "greedy" if self.beam_size == 1 else f"beam{self.beam_size}"


def decode_default(name: str) -> Any:
    """A DecodeSettings default by field name (the ${attnmt.decode_default:...} resolver)."""
    defaults = {f.name: f.default for f in fields(DecodeSettings)}
    if name not in defaults:
        raise ConfigError(f"${{attnmt.decode_default:{name}}}: no such decoding setting; choose from {', '.join(defaults)}")
    return defaults[name]


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def load_for_inference(path, map_location="cpu"):
    """A checkpoint -> (model in eval mode, its Tokenizer, the task's hyperparameters).

    Works for any checkpoint written by train.py: the model is rebuilt from the config stored in
    the checkpoint and the tokenizer from the sentencepiece model(s) embedded in it.
    """
    from hydra.utils import instantiate

    checkpoint = load_checkpoint_file(path, map_location=map_location)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or not isinstance(hparams.get("model"), dict) or "_target_" not in hparams["model"]:
        raise CheckpointError(f"{path} is not an attnmt training checkpoint (no model config inside).")
    check_targets(hparams["model"], MODEL_MODULES, path, what="model config")
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


def load_model(path: str | Path, device: torch.device):
    """A .ckpt file -> (model in eval mode on `device`, tokenizer, hparams)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: give a .ckpt file (e.g. {path}/checkpoints/last.ckpt)")
    model, tokenizer, hparams = load_for_inference(path, map_location="cpu")
    if device.type == "cpu":
        retain_freed_memory()  # beam search's per-step tensors reuse memory (attnmt/cpu_memory.py)
    return model.to(device).eval(), tokenizer, hparams


def decode_ids(
    model,
    sequences: Sequence[Sequence[int]],
    settings: DecodeSettings,
    device: torch.device,
    need_attention: bool = True,
) -> list[Hypothesis | None]:
    """Decode source id lists (no EOS) -> the best hypothesis of each, in input order.

    Empty sequences are not decoded (None). The others go through the token-bucket sampler in
    evaluation order (longest first, at most settings.max_tokens source tokens per batch), so
    padding stays low and the same input always forms the same batches.
    """
    results: list[Hypothesis | None] = [None] * len(sequences)
    kept = [i for i, ids in enumerate(sequences) if len(ids) > 0]
    if not kept:
        return results
    lengths = np.array([len(sequences[i]) + 1 for i in kept], dtype=np.int64)  # + EOS
    sampler = TokenBucketSampler(lengths, lengths, settings.max_tokens, shuffle=False, even=False)
    for batch in sampler.batches():
        src, src_mask = pad_sources([sequences[kept[j]] for j in batch], device)
        found = decode_batch(model, src, src_mask, **settings.search_kwargs(), need_attention=need_attention)
        for j, nbest in zip(batch, found):
            results[kept[j]] = nbest[0]
    return results


@dataclass
class Translation:
    """One input line and its translation.

    src_tokens / tgt_tokens label the attention map: source pieces + "</s>" (what the model read),
    output pieces incl. "</s>" when the model ended the output (hypothesis.output_ids).
    """

    line_number: int  # 1-based, in the input
    source: str
    text: str
    hypothesis: Hypothesis | None = field(default=None, repr=False)  # None for an empty line
    src_tokens: list[str] = field(default_factory=list)
    tgt_tokens: list[str] = field(default_factory=list)
    truncated_from: int | None = None  # subword count before truncation, when the line was cut


def translate_lines(
    model,
    tokenizer,
    lines: Sequence[str],
    settings: DecodeSettings,
    device: torch.device,
    max_src_tokens: int | None = 256,
    need_attention: bool = False,
    first_line_number: int = 1,
) -> list[Translation]:
    """Translate sentences (one per item) -> one Translation per item, same order."""
    if max_src_tokens is not None and max_src_tokens < 1:
        raise ConfigError(f"--max-src-tokens {max_src_tokens}: must be at least 1")
    stripped = [line.strip() for line in lines]
    encoded = tokenizer.encode_src(stripped)
    sequences, cut_from = [], []
    for ids in encoded:
        too_long = max_src_tokens is not None and len(ids) > max_src_tokens
        sequences.append(ids[:max_src_tokens] if too_long else ids)
        cut_from.append(len(ids) if too_long else None)
    hypotheses = decode_ids(model, sequences, settings, device, need_attention)
    texts = tokenizer.decode_tgt([h.tokens if h is not None else [] for h in hypotheses])
    results = []
    for offset, (source, ids, hyp, text, cut) in enumerate(zip(stripped, sequences, hypotheses, texts, cut_from)):
        translation = Translation(first_line_number + offset, source, text if hyp is not None else "", hyp, truncated_from=cut)
        if hyp is not None:
            translation.src_tokens = tokenizer.src_pieces_from_ids(ids) + [EOS_PIECE]
            translation.tgt_tokens = tokenizer.tgt_pieces_from_ids(hyp.output_ids)
        results.append(translation)
    return results
