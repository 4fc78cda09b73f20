"""Corpora: what the DataModule needs from one (`Corpus`), your own files (`ParallelText`), and
`read_lines` for whole evaluation files.

Files are UTF-8, one sentence per line, gzipped or not (detected by the gzip magic bytes, so a
misnamed file still reads); streaming.py reads and checks them. Every problem a user can fix
raises DataError naming the file (and line). Pairs where either side is blank are dropped and
counted: they carry no training signal and would make empty references.
"""

from __future__ import annotations

from pathlib import Path

from attnmt.data.streaming import iter_lines
from attnmt.errors import DataError


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (gzipped or not), without line ends or outer whitespace.

    The whole file as a list: for evaluation sets, references and hypotheses. Preparation streams
    (streaming.iter_pair_chunks), so corpora of any size are read in flat memory.
    """
    return list(iter_lines(path))


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
