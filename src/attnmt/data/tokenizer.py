"""SentencePiece subwords: train once per (training text, settings), then reuse from a cache.

A model folder holds the model file(s) and `tokenizer.json`; it is self-contained, so a run folder
or checkpoint can keep a copy and reload exactly the vocabulary it was trained with. The
special ids come from vocab.py (pad 0, unk 1, bos 2, eos 3).

Cache: `<cache_dir>/spm-<key>/`, key = hash of the training text digest + every setting + the
sentencepiece version. Training writes into a temporary folder that is then renamed; when two
processes (DDP ranks) race, the loser drops its copy and loads the winner's.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import sentencepiece as spm

from attnmt.data.vocab import BOS_ID, BOS_PIECE, EOS_ID, EOS_PIECE, PAD_ID, PAD_PIECE, UNK_ID, UNK_PIECE
from attnmt.errors import ConfigError, DataError

log = logging.getLogger("attnmt.data")

META_FILE = "tokenizer.json"
# Number of sentencepiece trainings in this process: tests read it to prove a cache hit.
TRAININGS = 0


@dataclass(frozen=True)
class TokenizerSettings:
    joint: bool = True  # one model for both languages (shared vocabulary) or one per side
    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000  # per model
    character_coverage: float = 1.0  # fine for Latin-script languages
    input_sentence_size: int = 2_000_000  # at most this many sentences (sampled) train a model

    def __post_init__(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise ConfigError(f"data.tokenizer.model_type={self.model_type!r}: use 'unigram' or 'bpe'")
        if self.vocab_size <= 4:
            raise ConfigError(f"data.tokenizer.vocab_size={self.vocab_size}: must exceed the 4 special tokens")


def _sha1(*parts: bytes) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(hashlib.sha1(part).digest())  # hash of hashes: part boundaries cannot shift
    return digest.hexdigest()


def fingerprint_of(src_model: bytes, tgt_model: bytes | None) -> str:
    return _sha1(src_model) if tgt_model is None else _sha1(src_model, tgt_model)


def _processor(model: bytes) -> spm.SentencePieceProcessor:
    try:
        return spm.SentencePieceProcessor(model_proto=model)
    except RuntimeError as err:
        raise DataError(f"not a valid sentencepiece model ({err})") from None


def _train_model(lines: list[str], settings: TokenizerSettings, key: str) -> bytes:
    """Train one sentencepiece model on `lines`; returns the serialized model."""
    global TRAININGS
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=settings.model_type,
            vocab_size=settings.vocab_size,
            character_coverage=settings.character_coverage,
            input_sentence_size=settings.input_sentence_size,
            shuffle_input_sentence=True,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece=PAD_PIECE, unk_piece=UNK_PIECE, bos_piece=BOS_PIECE, eos_piece=EOS_PIECE,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # sentencepiece's progress log is thousands of lines
        )
    except RuntimeError as err:
        if "Vocabulary size" in str(err):
            raise ConfigError(f"data.tokenizer.vocab_size={settings.vocab_size} ({key}): {err}") from None
        raise
    TRAININGS += 1
    return model.getvalue()


class Tokenizer:
    """Source and target sentencepiece models (the same one when joint)."""

    def __init__(self, src_model: bytes, tgt_model: bytes | None, settings: TokenizerSettings) -> None:
        self.settings = settings
        self.joint = tgt_model is None
        self._src_bytes, self._tgt_bytes = src_model, tgt_model
        self._src = _processor(src_model)
        self._tgt = self._src if tgt_model is None else _processor(tgt_model)
        for name, proc in (("source", self._src), ("target", self._tgt)):
            specials = [proc.pad_id(), proc.unk_id(), proc.bos_id(), proc.eos_id()]
            if specials != [PAD_ID, UNK_ID, BOS_ID, EOS_ID]:
                raise DataError(f"{name} sentencepiece model has special ids {specials}, expected pad/unk/bos/eos = 0/1/2/3")
        # identifies the exact vocabulary; checkpoints store it to refuse a mismatched one
        self.fingerprint = fingerprint_of(src_model, tgt_model)

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size()

    # --- training and persistence -------------------------------------------------------
    @classmethod
    def train(cls, src_lines: list[str], tgt_lines: list[str], settings: TokenizerSettings) -> "Tokenizer":
        """Train new model(s) on the given training sentences (no caching)."""
        started = time.perf_counter()
        if settings.joint:
            tokenizer = cls(_train_model(src_lines + tgt_lines, settings, "joint"), None, settings)
        else:
            tokenizer = cls(_train_model(src_lines, settings, "source"), _train_model(tgt_lines, settings, "target"), settings)
        log.info("trained sentencepiece (%s) in %.1f s", settings, time.perf_counter() - started)
        return tokenizer

    def save(self, folder: str | Path) -> Path:
        """Write the model file(s) and tokenizer.json into `folder` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = {"src": "joint.model", "tgt": "joint.model"} if self.joint else {"src": "src.model", "tgt": "tgt.model"}
        (folder / files["src"]).write_bytes(self._src_bytes)
        if not self.joint:
            (folder / files["tgt"]).write_bytes(self._tgt_bytes)
        meta = {"settings": asdict(self.settings), "files": files, "fingerprint": self.fingerprint,
                "sentencepiece": spm.__version__}
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        """Reload a folder written by `save`; checks its fingerprint."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / META_FILE).read_text())
            settings = TokenizerSettings(**meta["settings"])
            src = (folder / meta["files"]["src"]).read_bytes()
            tgt = None if settings.joint else (folder / meta["files"]["tgt"]).read_bytes()
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(f"cannot load the tokenizer in {folder}: {err}") from None
        if fingerprint_of(src, tgt) != meta["fingerprint"]:
            raise DataError(f"tokenizer in {folder} is corrupt: model files do not match the fingerprint in {META_FILE}")
        return cls(src, tgt, settings)

    # --- text <-> ids ---------------------------------------------------------------------
    def encode_src(self, sentences: list[str]) -> list[list[int]]:
        """Piece ids of each sentence, no BOS/EOS."""
        return self._src.encode(list(sentences), out_type=int)

    def encode_tgt(self, sentences: list[str]) -> list[list[int]]:
        return self._tgt.encode(list(sentences), out_type=int)

    def decode_tgt(self, sequences: Iterable[Sequence[int]]) -> list[str]:
        """Detokenized text; each sequence is cut at its first EOS, PAD/BOS are skipped."""
        return [self._tgt.decode(_clean(seq)) for seq in sequences]

    def decode_src(self, sequences: Iterable[Sequence[int]]) -> list[str]:
        return [self._src.decode(_clean(seq)) for seq in sequences]

    def src_pieces(self, sentence: str) -> list[str]:
        """Pieces of one source sentence (tick labels), without the EOS the model sees."""
        return self._src.encode(sentence, out_type=str)

    def src_pieces_from_ids(self, ids: Sequence[int]) -> list[str]:
        return [self._src.id_to_piece(int(i)) for i in _as_list(ids)]

    def tgt_pieces_from_ids(self, ids: Sequence[int]) -> list[str]:
        """One piece per id, specials included as `<s>`, `</s>`, `<pad>` (tick labels)."""
        return [self._tgt.id_to_piece(int(i)) for i in _as_list(ids)]

    def __repr__(self) -> str:
        sizes = f"{self.src_vocab_size}" if self.joint else f"{self.src_vocab_size}/{self.tgt_vocab_size}"
        return f"Tokenizer({'joint' if self.joint else 'separate'} {self.settings.model_type} {sizes}, {self.fingerprint[:12]})"


def _as_list(ids: Sequence[int]) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]


def _clean(ids: Sequence[int]) -> list[int]:
    kept = []
    for i in _as_list(ids):
        if i == EOS_ID:
            break
        if i not in (PAD_ID, BOS_ID):
            kept.append(i)
    return kept


def cache_key(settings: TokenizerSettings, text_digest: str) -> str:
    blob = json.dumps({"settings": asdict(settings), "text": text_digest, "spm": spm.__version__}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_or_train(
    cache_dir: str | Path,
    settings: TokenizerSettings,
    text_digest: str,
    training_text: Callable[[], tuple[list[str], list[str]]],
) -> tuple[Tokenizer, bool]:
    """The cached tokenizer for (settings, text_digest), trained on `training_text()` if missing.

    `text_digest` must change whenever the training sentences change (the caller hashes its
    files). Returns (tokenizer, cache_hit).
    """
    folder = Path(cache_dir) / f"spm-{cache_key(settings, text_digest)}"
    if (folder / META_FILE).is_file():
        return Tokenizer.load(folder), True
    src_lines, tgt_lines = training_text()
    tokenizer = Tokenizer.train(src_lines, tgt_lines, settings)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    tokenizer.save(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:
        # another process renamed its copy first: use that one so every rank shares one model
        shutil.rmtree(tmp, ignore_errors=True)
        return Tokenizer.load(folder), True
    return tokenizer, False
