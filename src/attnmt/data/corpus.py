"""Parallel text: read a pair of aligned files into validated sentence pairs.

Files are UTF-8, one sentence per line, gzipped or not (detected by the gzip magic bytes, so a
misnamed file still reads). Every problem a user can fix raises DataError naming the file (and
line). Pairs where either side is blank are dropped and counted: they carry no training signal
and would make empty references.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

from attnmt.errors import DataError

log = logging.getLogger("attnmt.data")

GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class Pairs:
    """Aligned sentences of one split after validation.

    line_numbers[i] is the 1-based line of pair i in the files (to map results back to them).
    """

    src: list[str]
    tgt: list[str]
    line_numbers: list[int]
    total_lines: int  # lines in each file
    dropped_empty: int  # pairs dropped because one side was blank

    def __len__(self) -> int:
        return len(self.src)


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (gzipped or not), without line ends or outer whitespace."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: cannot decompress gzip data ({err}); the file is truncated or corrupt") from None
    if not raw.strip():
        raise DataError(f"{path} is empty; it must hold one sentence per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: invalid UTF-8 ({err.reason}); convert the file to UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the first sentence
    # split on "\n" only: str.splitlines would also break on U+2028, U+0085, ... and misalign the pair
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # final newline
    return [line.strip() for line in lines]


def read_pairs(src_path: str | Path, tgt_path: str | Path) -> Pairs:
    """Read two aligned files; blank-side pairs are dropped (and logged)."""
    src_lines, tgt_lines = read_lines(src_path), read_lines(tgt_path)
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"line counts differ: {src_path} has {len(src_lines)} lines, {tgt_path} has {len(tgt_lines)}; "
            "the two files of a parallel corpus must be aligned line by line"
        )
    src, tgt, numbers = [], [], []
    for number, (s, t) in enumerate(zip(src_lines, tgt_lines), start=1):
        if s and t:
            src.append(s)
            tgt.append(t)
            numbers.append(number)
    dropped = len(src_lines) - len(src)
    if dropped:
        log.info("dropped %d of %d pairs with an empty side (%s, %s)", dropped, len(src_lines), src_path, tgt_path)
    if not src:
        raise DataError(f"no usable sentence pairs in {src_path} / {tgt_path}: every pair has an empty side")
    return Pairs(src, tgt, numbers, len(src_lines), dropped)


class Corpus:
    """What the DataModule needs from a corpus: named splits of aligned file pairs."""

    src_lang: str
    tgt_lang: str
    train_split: str
    val_split: str
    test_splits: list[str]

    @property
    def splits(self) -> list[str]:
        """Train, validation and test splits, in that order, without repeats."""
        return list(dict.fromkeys([self.train_split, self.val_split, *self.test_splits]))

    def files(self, split: str) -> tuple[Path, Path]:
        """(source file, target file) of a split, present and verified."""
        raise NotImplementedError

    def read(self, split: str) -> Pairs:
        return read_pairs(*self.files(split))

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise DataError(f"unknown split {split!r}; this corpus has: {', '.join(self.splits)}")


class ParallelText(Corpus):
    """Your own parallel files: split `name` is `{prefix}.{src_lang}` + `{prefix}.{tgt_lang}`.

    A `.gz` suffix is tried when the plain file is missing. `test` maps test split names to
    prefixes; a bare string means one split called "test".
    """

    def __init__(
        self,
        src_lang: str,
        tgt_lang: str,
        train: str,
        val: str,
        test: dict[str, str] | str | None = None,
    ) -> None:
        if src_lang == tgt_lang:
            raise DataError(f"data.corpus.src_lang and tgt_lang are both {src_lang!r}; the suffixes must differ")
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        tests = {"test": test} if isinstance(test, str) else dict(test or {})
        if {"train", "val"} & set(tests):
            raise DataError("data.corpus.test: test split names must not be 'train' or 'val'")
        # split name -> (prefix, config key that set it), the key goes into error messages
        self._prefixes = {"train": (train, "data.corpus.train"), "val": (val, "data.corpus.val")}
        self._prefixes.update({name: (prefix, f"data.corpus.test.{name}") for name, prefix in tests.items()})
        self.train_split, self.val_split = "train", "val"
        self.test_splits = list(tests)

    def _file(self, split: str, lang: str) -> Path:
        prefix, key = self._prefixes[split]
        plain = Path(f"{prefix}.{lang}").expanduser()
        for candidate in (plain, plain.with_name(plain.name + ".gz")):
            if candidate.is_file():
                return candidate
        raise DataError(f"missing {split} file {plain} (from {key}={prefix!r} + '.{lang}'); fix {key} or create the file")

    def files(self, split: str) -> tuple[Path, Path]:
        self._check_split(split)
        return self._file(split, self.src_lang), self._file(split, self.tgt_lang)

    def __repr__(self) -> str:
        return f"ParallelText({self.src_lang}-{self.tgt_lang}, {', '.join(p for p, _ in self._prefixes.values())})"
