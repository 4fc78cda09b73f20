"""TranslationDataModule: corpus -> sentencepiece -> cached token ids -> token-bucket DataLoaders.

Everything expensive is cached under `cache_dir` and keyed by content, so a second build (or a
second DDP rank) only opens files:
- `spm-<key>/`: tokenizer, key = train file hashes + how the training sample is drawn
  (sampling.SAMPLE_FORMAT) + tokenizer settings (tokenizer.py);
- `ids-<split>-<key>/`: token ids and the length index the training sampler batches by
  (token_cache.py), key = tokenizer fingerprint + split file hashes + filtering.
Preparation streams: the text is read and checked in chunks (streaming.py), encoded (in
`num_proc` processes) and appended to disk (token_cache.py), so memory stays flat whatever the
corpus size; the sentencepiece model trains on a sample drawn in one pass over the training
pairs (sampling.py).
One process builds each item while the others (DDP ranks, parallel runs) wait on a lock file and
then load it; writes are atomic (temp folder + rename). File hashes are remembered under
`digests/` by (path, size, mtime), so a cached start does not reread a large corpus, and the
training sampler works from the length index, read in place, so it neither sorts nor reads the
split: a cached start costs the same for any corpus size.
`cache_hits` says, per item, whether the last build reused it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from attnmt.data.batching import SPECIALS_PER_SIDE, TokenBucketSampler, collate
from attnmt.data.corpus import Corpus
from attnmt.data.streaming import PairStats, build_lock, file_sha256, iter_pair_chunks
from attnmt.data.sampling import SAMPLE_FORMAT, drained, training_sample
from attnmt.atomic import atomic_file
from attnmt.data.token_cache import CACHE_FORMAT, META_FILE, TokenPairDataset, available_cores, encode_split
from attnmt.data.tokenizer import Tokenizer, TokenizerSettings, load_or_train
from attnmt.errors import ConfigError, DataError

log = logging.getLogger("attnmt.data")


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning stores in checkpoints and restores on resume.

    Lightning saves `state_dict()` of every loader that has one and calls `load_state_dict()`
    before it starts iterating again, so a resumed run continues the interrupted epoch with the
    same batch order, skipping the batches already trained.
    """

    progress: Callable[[], int] | None = None  # batches of the current epoch trained so far

    def state_dict(self) -> dict[str, int]:
        sampler = self.batch_sampler
        return {"epoch": sampler.epoch, "batches_done": self.progress() if self.progress else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume(state["epoch"], state["batches_done"])


def file_digest(path: Path, memo_dir: Path | None = None) -> str:
    """sha256 of a file, streamed; with `memo_dir`, remembered by (path, size, mtime, inode)."""
    path = Path(path)
    if memo_dir is None:
        return file_sha256(path)
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}
    memo = memo_dir / (hashlib.sha1(identity["path"].encode()).hexdigest()[:16] + ".json")
    try:
        stored = json.loads(memo.read_text())
        if stored["identity"] == identity:
            return stored["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = file_sha256(path)
    try:
        with atomic_file(memo) as tmp:  # shared like the rest of the cache (umask modes)
            tmp.write_text(json.dumps({"identity": identity, "sha256": digest}))
    except OSError:
        pass  # a read-only cache folder: hash again next time
    return digest


def _tokenizer_settings(value: Mapping | TokenizerSettings | None) -> TokenizerSettings:
    if value is None:
        return TokenizerSettings()
    if isinstance(value, TokenizerSettings):
        return value
    try:
        return TokenizerSettings(**{str(k): v for k, v in value.items()})
    except TypeError as err:
        raise ConfigError(f"data.tokenizer: {err}") from None


class TranslationDataModule(L.LightningDataModule):
    """Batches of a parallel corpus for training and evaluation.

    Call `prepare_data()` then `setup()` (a Trainer does it); `setup()` alone also works.
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer: Mapping | TokenizerSettings | None = None,
        cache_dir: str | Path = "data/cache",
        max_tokens: int = 4096,
        eval_max_tokens: int = 8192,
        max_len: int | None = 128,
        num_workers: int = 1,
        pin_memory: bool = True,
        seed: int = 0,
        num_proc: int | None = 1,
    ) -> None:
        super().__init__()
        if isinstance(corpus, Mapping):  # a config node that was not instantiated yet
            from hydra.utils import instantiate

            corpus = instantiate(corpus)
        for key, value in (("max_tokens", max_tokens), ("eval_max_tokens", eval_max_tokens)):
            if value <= 0:
                raise ConfigError(f"data.{key}={value}: must be a positive number of tokens")
        if max_len is not None and max_len < 2:
            raise ConfigError(f"data.max_len={max_len}: must be at least 2 (one token + EOS) or null")
        if num_proc is None:
            num_proc = available_cores()
        if num_proc < 1:
            raise ConfigError(f"data.num_proc={num_proc}: must be at least 1 (processes encoding the corpus)")
        self.corpus = corpus
        self.tokenizer_settings = _tokenizer_settings(tokenizer)
        self.cache_dir = Path(cache_dir).expanduser()
        self.max_tokens, self.eval_max_tokens, self.max_len = max_tokens, eval_max_tokens, max_len
        self.num_workers, self.pin_memory, self.seed = num_workers, pin_memory, seed
        self.num_proc = num_proc
        self.tokenizer: Tokenizer | None = None
        self.cache_hits: dict[str, bool] = {}
        self._files: dict[str, tuple[Path, Path]] = {}  # split -> (src file, tgt file)
        self._datasets: dict[str, TokenPairDataset] = {}
        self._texts: dict[tuple[str, int], list[str]] = {}  # (split, side) -> sentences in dataset order
        self._ready = False

    # --- building ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self._build()

    def setup(self, stage: str | None = None) -> None:
        self._build()

    def _build(self) -> None:
        if self._ready:
            return
        started = time.perf_counter()
        for split in self.corpus.splits:
            self._files[split] = self.corpus.files(split)
        train = self.corpus.train_split
        # the sample drawn from the files is part of what the tokenizer is trained on
        train_digest = "+".join([*(self._digest(p) for p in self._files[train]), SAMPLE_FORMAT])

        def training_text():
            # one pass over the training pairs keeps only the sentences sentencepiece trains on
            settings = self.tokenizer_settings
            src, tgt = training_sample(iter_pair_chunks(*self._files[train]), settings.input_sentence_size,
                                       settings.joint, settings.shuffle_input_sentence)
            return drained(src), drained(tgt)

        self.tokenizer, self.cache_hits["tokenizer"] = load_or_train(
            self.cache_dir, self.tokenizer_settings, train_digest, training_text
        )
        for split in self.corpus.splits:
            self._datasets[split] = self._encode(split)
        self._ready = True
        log.info(
            "data ready in %.1f s: %s, %s; cache hits %s",
            time.perf_counter() - started, self.corpus, self.tokenizer, self.cache_hits,
        )

    def _digest(self, path: Path) -> str:
        return file_digest(path, self.cache_dir / "digests")

    def _encode(self, split: str) -> TokenPairDataset:
        """Token ids of a split from the cache, encoding them (streamed) on a miss."""
        assert self.tokenizer is not None
        max_len = self.max_len if split == self.corpus.train_split else None  # never filter evaluation
        key_parts = {
            "format": CACHE_FORMAT,
            "tokenizer": self.tokenizer.fingerprint,
            "files": [self._digest(p) for p in self._files[split]],
            "max_len": max_len,
        }
        key = hashlib.sha1(json.dumps(key_parts, sort_keys=True).encode()).hexdigest()[:16]
        folder = self.cache_dir / f"ids-{re.sub(r'[^A-Za-z0-9_.-]', '_', split)}-{key}"
        hit = (folder / META_FILE).is_file()
        if not hit:
            with build_lock(folder):
                hit = (folder / META_FILE).is_file()  # built by a process we waited for
                if not hit:
                    self._encode_into(split, folder, max_len)
        self.cache_hits[f"ids/{split}"] = hit
        return TokenPairDataset(folder)

    def _encode_into(self, split: str, folder: Path, max_len: int | None) -> None:
        started = time.perf_counter()
        stats = PairStats()
        src_model, tgt_model = self.tokenizer.model_bytes
        files = self._files[split]
        # lengths as the model sees them (with EOS / BOS), so no tensor exceeds max_len
        limit = None if max_len is None else max_len - SPECIALS_PER_SIDE
        result = encode_split(
            iter_pair_chunks(*files, stats=stats), folder, src_model, tgt_model,
            vocab_size=max(self.tokenizer.src_vocab_size, self.tokenizer.tgt_vocab_size),
            max_len_limit=limit, num_proc=self.num_proc, stats=stats,
            meta={"split": split, "files": [str(p) for p in files], "max_len": max_len},
            what=split, all_dropped=f"data.max_len={max_len} drops every training pair of {split}; raise it",
        )
        if result is not None:
            seconds = time.perf_counter() - started
            log.info("%s: encoded %d pairs in %.1f s (%.0f pairs/s, %d process%s); dropped %d empty, %d too long",
                     split, stats.kept, seconds, stats.kept / max(seconds, 1e-9), self.num_proc,
                     "es" if self.num_proc > 1 else "", stats.dropped_empty, result.dropped_long)

    # --- what training and evaluation use -------------------------------------------------
    def dataset(self, split: str) -> TokenPairDataset:
        """Token ids of a split (`splits`), read from the cache."""
        self._build()
        if split not in self._datasets:
            raise DataError(f"unknown split {split!r}; available: {', '.join(self._datasets)}")
        return self._datasets[split]

    @property
    def splits(self) -> list[str]:
        self._build()
        return list(self._datasets)

    @property
    def src_vocab_size(self) -> int:
        self._build()
        return self.tokenizer.src_vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        self._build()
        return self.tokenizer.tgt_vocab_size

    @property
    def joint_vocab(self) -> bool:
        self._build()
        return self.tokenizer.joint

    def sampler(self, split: str, shuffle: bool = False, training: bool | None = None) -> TokenBucketSampler:
        """Token-bucket batches of a split, sharded by the attached Trainer's rank (else 0 of 1)."""
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TokenBucketSampler.for_dataset(
            self.dataset(split),
            self.max_tokens if (shuffle if training is None else training) else self.eval_max_tokens,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=world,
            rank=rank,
        )

    def dataloader(self, split: str, shuffle: bool = False, training: bool | None = None) -> DataLoader:
        """Batches of any split; shuffle=True gives training order (per-epoch, even across ranks)."""
        return ResumableDataLoader(
            self.dataset(split),
            batch_sampler=self.sampler(split, shuffle, training),
            collate_fn=collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
            # its own generator: creating an iterator must not draw from the global RNG, or a
            # resumed run's dropout masks would drift from an uninterrupted run's
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        # overfitting (trainer.overfit_batches) needs the same first batches every epoch
        shuffle = trainer is None or not trainer.overfit_batches
        loader = self.dataloader(self.corpus.train_split, shuffle=shuffle, training=True)
        if trainer is not None:
            # batches of the current epoch already trained: Lightning's counter at save time
            # ("processed": a checkpoint written in on_train_batch_end counts its own batch)
            loader.progress = lambda: trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def val_dataloader(self) -> DataLoader:
        return self.dataloader(self.corpus.val_split)

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per test split, in the order of `test_splits` (dataloader_idx)."""
        return [self.dataloader(split) for split in self.test_splits]

    @property
    def test_splits(self) -> list[str]:
        return list(self.corpus.test_splits)

    def sources(self, split: str) -> list[str]:
        """Source sentences of a split, entry i matching Batch.index == i."""
        return self._side_texts(split, 0)

    def references(self, split: str) -> list[str]:
        """Reference translations of a split, entry i matching Batch.index == i (for sacreBLEU)."""
        return self._side_texts(split, 1)

    def _side_texts(self, split: str, side: int) -> list[str]:
        """One side's sentences in dataset order, streamed from the files (only those kept)."""
        cached = self._texts.get((split, side))
        if cached is not None:
            return cached
        positions = np.asarray(self.dataset(split).positions)  # increasing (the cache format)
        chosen = []
        for chunk in iter_pair_chunks(*self._files[split]):
            end = chunk.first + len(chunk.src)
            lo, hi = np.searchsorted(positions, [chunk.first, end])
            sentences = chunk.src if side == 0 else chunk.tgt
            chosen += [sentences[p - chunk.first] for p in positions[lo:hi].tolist()]
        if split != self.corpus.train_split:  # evaluation sets are small and asked for every validation
            self._texts[(split, side)] = chosen
        return chosen
