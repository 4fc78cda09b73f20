"""Hugging Face `datasets` as a corpus source (optional extra: `pip install -e ".[hf]"`).

A split of a dataset becomes a pair of plain text files, written once (streamed from the Arrow
data, which `datasets` memory-maps) into `export_dir`, and from there on everything is as for
`ParallelText`: the same streaming checks, caches keyed by the files' hashes, evaluation against
the exported references. Where the data comes from:

- `path` is a folder written by `DatasetDict.save_to_disk` -> `datasets.load_from_disk` (offline);
- `data_files` is given -> `datasets.load_dataset(path or "parquet", data_files=...)`, e.g. local
  parquet / arrow / json files (offline);
- otherwise `datasets.load_dataset(path, name, revision=...)`: a hub dataset such as `wmt/wmt14`
  with name `de-en` (downloaded once into `datasets`' own cache; offline with HF_DATASETS_OFFLINE=1
  once it is there), or a local folder of parquet files named by split.

Rows hold either a translation dict (`translation_key`, e.g. {"de": ..., "en": ...}, the layout of
WMT on the hub) or one column per language (`translation_key: null`). Language keys default to
the language codes (`src_key` / `tgt_key` override them). A line break inside a sentence becomes
a space, so line i of each exported file is row i of the split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from attnmt.data.corpus import Corpus
from attnmt.data.streaming import build_lock
from attnmt.atomic import atomic_file
from attnmt.errors import ConfigError, DataError

log = logging.getLogger("attnmt.data")

EXPORT_FORMAT = "hf-export-v1"
ROWS_PER_READ = 10_000
_LINE_BREAKS = re.compile(r"[\r\n]+")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            "data.corpus is a Hugging Face dataset, but the `datasets` package is not installed: "
            "pip install -e \".[hf]\" (or pip install datasets)"
        ) from None
    return datasets


class HFDataset(Corpus):
    """Parallel text from a Hugging Face dataset; split `name` maps to a dataset split name.

    `train` / `val` are dataset split names; `test` maps this project's test split names to
    dataset split names (a bare string: one split called "test").
    """

    def __init__(
        self,
        path: str | None,
        src_lang: str,
        tgt_lang: str,
        name: str | None = None,
        train: str = "train",
        val: str = "validation",
        test: Mapping[str, str] | str | None = "test",
        translation_key: str | None = "translation",
        src_key: str | None = None,
        tgt_key: str | None = None,
        data_files: Mapping[str, Any] | str | None = None,
        revision: str | None = None,
        export_dir: str | Path = "data/hf",
        hf_cache_dir: str | Path | None = None,
    ) -> None:
        if src_lang == tgt_lang:
            raise DataError(f"data.corpus.src_lang and tgt_lang are both {src_lang!r}; the languages must differ")
        if not path and not data_files:
            raise ConfigError("data.corpus.path: give a dataset name (e.g. wmt/wmt14), a local folder, or data.corpus.data_files")
        self.path, self.name, self.revision = path, name, revision
        self.data_files = dict(data_files) if isinstance(data_files, Mapping) else data_files
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.translation_key = translation_key
        self.src_key, self.tgt_key = src_key or src_lang, tgt_key or tgt_lang
        tests = {"test": test} if isinstance(test, str) else dict(test or {})
        if {"train", "val"} & set(tests):
            raise ConfigError("data.corpus.test: test split names must not be 'train' or 'val'")
        self._hf_splits = {"train": train, "val": val, **tests}
        self.train_split, self.val_split = "train", "val"
        self.test_splits = list(tests)
        self.export_dir = Path(export_dir).expanduser()
        self.hf_cache_dir = None if hf_cache_dir is None else str(Path(hf_cache_dir).expanduser())
        self._loaded: dict[str, Any] = {}
        self._files: dict[str, tuple[Path, Path]] = {}

    # --- loading ------------------------------------------------------------------------------
    def _describe(self) -> str:
        return f"{self.path or 'data_files'}" + (f" ({self.name})" if self.name else "")

    def _load_split(self, split: str):
        """The `datasets.Dataset` behind one of our splits."""
        hf_split = self._hf_splits[split]
        if hf_split in self._loaded:
            return self._loaded[hf_split]
        datasets = _datasets()
        local = Path(self.path).expanduser() if self.path else None
        try:
            if local is not None and (local / "dataset_dict.json").is_file():
                dataset_dict = datasets.load_from_disk(str(local))
                if hf_split not in dataset_dict:
                    raise DataError(f"{local} has no split {hf_split!r} (data.corpus.{self._key_of(split)}); "
                                    f"it has: {', '.join(dataset_dict)}")
                dataset = dataset_dict[hf_split]
            elif local is not None and (local / "state.json").is_file():
                raise DataError(f"{local} holds a single split (Dataset.save_to_disk); save a DatasetDict with "
                                "one entry per split (train, validation, test, ...)")
            else:
                source = self.path if self.path else "parquet"
                dataset = datasets.load_dataset(source, self.name, split=hf_split, data_files=self.data_files,
                                                revision=self.revision, cache_dir=self.hf_cache_dir)
        except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise DataError(f"cannot load split {hf_split!r} of Hugging Face dataset {self._describe()}: {message}") from None
        self._loaded[hf_split] = dataset
        return dataset

    def _key_of(self, split: str) -> str:
        return split if split in ("train", "val") else f"test.{split}"

    def _columns(self, dataset) -> tuple[str, str]:
        """Checks the layout; returns the columns to read for (source, target)."""
        columns = list(dataset.column_names)
        if self.translation_key is not None:
            if self.translation_key not in columns:
                raise DataError(f"Hugging Face dataset {self._describe()} has no column {self.translation_key!r} "
                                f"(data.corpus.translation_key); columns: {', '.join(columns)}")
            feature = dataset.features[self.translation_key]
            languages = getattr(feature, "languages", None) or (list(feature) if isinstance(feature, Mapping) else None)
            if languages is not None:  # a Translation feature or a struct: its keys are known up front
                for key, which in ((self.src_key, "src_key"), (self.tgt_key, "tgt_key")):
                    if key not in languages:
                        raise DataError(f"Hugging Face dataset {self._describe()}: {self.translation_key!r} has no language "
                                        f"key {key!r} (data.corpus.{which}); it has: {', '.join(languages)}")
            return self.translation_key, self.translation_key
        for key, which in ((self.src_key, "src_key"), (self.tgt_key, "tgt_key")):
            if key not in columns:
                raise DataError(f"Hugging Face dataset {self._describe()} has no column {key!r} "
                                f"(data.corpus.{which}); columns: {', '.join(columns)}")
        return self.src_key, self.tgt_key

    # --- export to text files -----------------------------------------------------------------
    def files(self, split: str) -> tuple[Path, Path]:
        """The split as `<export_dir>/<dataset>-<key>/<split>.<lang>` files, exported on first use."""
        self._check_split(split)
        if split in self._files:
            return self._files[split]
        dataset = self._load_split(split)
        src_column, tgt_column = self._columns(dataset)
        identity = {
            "format": EXPORT_FORMAT, "path": self.path, "name": self.name, "revision": self.revision,
            "data_files": self.data_files, "split": self._hf_splits[split], "fingerprint": getattr(dataset, "_fingerprint", None),
            "rows": len(dataset), "columns": [src_column, tgt_column], "keys": [self.src_key, self.tgt_key],
            "nested": self.translation_key is not None,
        }
        key = hashlib.sha1(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{Path(str(self.path or 'files')).name}-{self.name or 'default'}")
        folder = self.export_dir / f"{slug}-{self.src_lang}-{self.tgt_lang}"
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", split)
        targets = (folder / f"{safe}-{key}.{self.src_lang}", folder / f"{safe}-{key}.{self.tgt_lang}")
        if not all(t.is_file() for t in targets):
            folder.mkdir(parents=True, exist_ok=True)
            with build_lock(targets[0]):
                if not all(t.is_file() for t in targets):
                    self._export(dataset, split, src_column, tgt_column, targets)
        self._files[split] = targets
        return targets

    def _export(self, dataset, split: str, src_column: str, tgt_column: str, targets: tuple[Path, Path]) -> None:
        # both files appear only once both are complete; on the way out the handles close (last in,
        # first out) before each temporary is renamed into place
        with contextlib.ExitStack() as files:
            temps = [files.enter_context(atomic_file(target)) for target in targets]
            handles = [files.enter_context(open(tmp, "w", encoding="utf-8", newline="\n")) for tmp in temps]
            src_out, tgt_out = handles
            row, joined = 0, 0
            columns = [src_column] if src_column == tgt_column else [src_column, tgt_column]
            for batch in dataset.select_columns(columns).iter(batch_size=ROWS_PER_READ):
                src_lines = self._texts(batch[src_column], self.src_key, split, row)
                tgt_lines = self._texts(batch[tgt_column], self.tgt_key, split, row)
                for lines, out in ((src_lines, src_out), (tgt_lines, tgt_out)):
                    for i, text in enumerate(lines):
                        if "\n" in text or "\r" in text:
                            lines[i] = _LINE_BREAKS.sub(" ", text)
                            joined += 1
                    out.write("\n".join(lines) + "\n")
                row += len(src_lines)
            if row == 0:
                raise DataError(f"split {self._hf_splits[split]!r} of Hugging Face dataset {self._describe()} is empty")
        if joined:
            log.info("%s: %d sentences held line breaks; each became one line", split, joined)
        log.info("exported %d rows of %s split %r to %s", row, self._describe(), self._hf_splits[split], targets[0].parent)

    def _texts(self, values: list, key: str, split: str, first_row: int) -> list[str]:
        """Sentences of one language from a batch of column values (dicts when nested)."""
        texts = []
        for offset, value in enumerate(values):
            if self.translation_key is not None:
                if not isinstance(value, Mapping) or key not in value:
                    have = ", ".join(value) if isinstance(value, Mapping) else type(value).__name__
                    raise DataError(
                        f"Hugging Face dataset {self._describe()}, split {self._hf_splits[split]!r}, row {first_row + offset + 1}: "
                        f"{self.translation_key!r} has no language key {key!r} (data.corpus.src_key / tgt_key); it has: {have}"
                    )
                value = value[key]
            if value is None:
                value = ""  # an empty side: dropped and counted when read
            if not isinstance(value, str):
                raise DataError(
                    f"Hugging Face dataset {self._describe()}, split {self._hf_splits[split]!r}, row {first_row + offset + 1}: "
                    f"{key!r} is a {type(value).__name__}, not text"
                )
            texts.append(value)
        return texts

    def __repr__(self) -> str:
        return f"HFDataset({self.src_lang}-{self.tgt_lang}, {self._describe()})"
