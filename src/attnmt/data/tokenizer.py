"""SentencePiece subwords: train once per (training text, settings), then reuse from a cache.

A model folder holds the model file(s) and `tokenizer.json`; it is self-contained, so a run folder
or checkpoint can keep a copy and reload exactly the vocabulary it was trained with. The
special ids come from vocab.py (pad 0, unk 1, bos 2, eos 3).

Cache: `<cache_dir>/spm-<key>/`, key = hash of the training text digest + every setting + the
sentencepiece version. One process trains while the others wait on a lock file
(streaming.build_lock); training writes into a temporary folder that is then renamed, so a
reader never sees half a model.

Training text may be a list or a stream; sentencepiece keeps at most `input_sentence_size`
sentences of it (a seeded sample), which bounds its memory whatever the corpus size. The data
module hands it a sample already drawn in one pass over the pairs (sampling.training_sample), so
the files are read once for both sides and sentencepiece keeps all it is given.
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
from itertools import chain
from typing import Callable, Iterable, Iterator, Sequence, Union

import sentencepiece as spm

from attnmt.data.streaming import build_lock
from attnmt.permissions import publish_permissions
from attnmt.data.vocab import BOS_ID, BOS_PIECE, EOS_ID, EOS_PIECE, PAD_ID, PAD_PIECE, UNK_ID, UNK_PIECE
from attnmt.errors import ConfigError, DataError

log = logging.getLogger("attnmt.data")

META_FILE = "tokenizer.json"
SAMPLING_SEED = 0  # sentencepiece's sampling of input_sentence_size sentences: same text, same model

# Training text of one side: sentences, or a function that streams them (called once per use).
Text = Union[Iterable[str], Callable[[], Iterable[str]]]


@dataclass(frozen=True)
class TokenizerSettings:
    joint: bool = True  # one model for both languages (shared vocabulary) or one per side
    model_type: str = "unigram"  # unigram | bpe
    vocab_size: int = 8000  # per model
    character_coverage: float = 1.0  # fine for Latin-script languages
    input_sentence_size: int = 2_000_000  # at most this many sentences (sampled) train a model
    shuffle_input_sentence: bool = True  # sample uniformly over the whole text, not its first sentences
    byte_fallback: bool = False  # unknown characters become UTF-8 byte pieces instead of <unk> (+256 pieces)

    def __post_init__(self) -> None:
        if self.model_type not in ("unigram", "bpe"):
            raise ConfigError(f"data.tokenizer.model_type={self.model_type!r}: use 'unigram' or 'bpe'")
        if self.vocab_size <= 4:
            raise ConfigError(f"data.tokenizer.vocab_size={self.vocab_size}: must exceed the 4 special tokens")
        if self.byte_fallback and self.vocab_size <= 260:
            raise ConfigError(f"data.tokenizer.vocab_size={self.vocab_size}: byte_fallback needs more than 256 byte pieces + 4 specials")
        if self.input_sentence_size < 0:
            raise ConfigError(f"data.tokenizer.input_sentence_size={self.input_sentence_size}: use 0 (all sentences) or a positive count")


# Settings added after caches existed: left out of cache keys and tokenizer.json while they hold
# their defaults, so existing caches keep their keys and older code can still read new folders.
_LATER_DEFAULTS = {"shuffle_input_sentence": True, "byte_fallback": False}


def settings_dict(settings: TokenizerSettings) -> dict:
    values = asdict(settings)
    return {k: v for k, v in values.items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}


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


def _stream(text: Text) -> Iterator[str]:
    return iter(text() if callable(text) else text)


def _train_model(lines: Iterable[str], settings: TokenizerSettings, key: str) -> bytes:
    """Train one sentencepiece model on the sentences `lines` yields; returns the serialized model."""
    model = io.BytesIO()
    spm.set_random_generator_seed(SAMPLING_SEED)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=model,
            model_type=settings.model_type,
            vocab_size=settings.vocab_size,
            character_coverage=settings.character_coverage,
            input_sentence_size=settings.input_sentence_size,
            shuffle_input_sentence=settings.shuffle_input_sentence,
            # only when on: the model file records every option given, and so would its fingerprint
            **({"byte_fallback": True} if settings.byte_fallback else {}),
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece=PAD_PIECE, unk_piece=UNK_PIECE, bos_piece=BOS_PIECE, eos_piece=EOS_PIECE,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,  # sentencepiece's progress log is thousands of lines
        )
    except RuntimeError as err:
        if "Vocabulary size" in str(err):
            raise ConfigError(f"data.tokenizer.vocab_size={settings.vocab_size} ({key}): {err}") from None
        raise
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
    def model_bytes(self) -> tuple[bytes, bytes | None]:
        """(source model, target model or None when joint), serialized: what worker processes load."""
        return self._src_bytes, self._tgt_bytes

    @property
    def src_vocab_size(self) -> int:
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self._tgt.get_piece_size()

    # --- training and persistence -------------------------------------------------------
    @classmethod
    def train(cls, src_lines: Text, tgt_lines: Text, settings: TokenizerSettings) -> "Tokenizer":
        """Train new model(s) on the given training sentences (no caching).

        Each side is a list/iterable of sentences or a function that streams them; sentencepiece
        reads it once and keeps at most `settings.input_sentence_size` sentences (its own sample).
        """
        started = time.perf_counter()
        if settings.joint:
            tokenizer = cls(_train_model(chain(_stream(src_lines), _stream(tgt_lines)), settings, "joint"), None, settings)
        else:
            tokenizer = cls(_train_model(_stream(src_lines), settings, "source"),
                            _train_model(_stream(tgt_lines), settings, "target"), settings)
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
        meta = {"settings": settings_dict(self.settings), "files": files, "fingerprint": self.fingerprint,
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
    blob = json.dumps({"settings": settings_dict(settings), "text": text_digest, "spm": spm.__version__}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def load_or_train(
    cache_dir: str | Path,
    settings: TokenizerSettings,
    text_digest: str,
    training_text: Callable[[], tuple[Text, Text]],
) -> tuple[Tokenizer, bool]:
    """The cached tokenizer for (settings, text_digest), trained on `training_text()` if missing.

    `training_text()` returns (source text, target text), each a list of sentences or a function
    that streams them. `text_digest` must change whenever the training sentences change (the
    caller hashes its files). One process trains, concurrent ones wait for it and load its model.
    Returns (tokenizer, cache_hit).
    """
    folder = Path(cache_dir) / f"spm-{cache_key(settings, text_digest)}"
    if (folder / META_FILE).is_file():
        return Tokenizer.load(folder), True
    folder.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(folder):
        if (folder / META_FILE).is_file():  # built by the process we waited for
            return Tokenizer.load(folder), True
        src_lines, tgt_lines = training_text()
        tokenizer = Tokenizer.train(src_lines, tgt_lines, settings)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        tokenizer.save(tmp)
        publish_permissions(tmp)  # mkdtemp made it private (0700): the umask decides, as for any file
        try:
            os.rename(tmp, folder)
        except OSError:
            # another process (without the lock: another machine) renamed its copy first: use it
            shutil.rmtree(tmp, ignore_errors=True)
            return Tokenizer.load(folder), True
    return tokenizer, False
