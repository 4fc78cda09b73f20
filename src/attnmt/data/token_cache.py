"""The token-id cache of one split: its format, the one writer (`encode_split`), the reader.

Format (one folder per split): `src_tokens.npy` / `tgt_tokens.npy` hold every sentence's ids back
to back, without specials (int16 when the vocabulary fits, else int32); `src_offsets.npy` /
`tgt_offsets.npy` [N + 1] int64 say where sentence i starts and ends; `positions.npy` [N] int64,
increasing, maps dataset index -> position among the split's usable pairs (those
`streaming.iter_pair_chunks` yields); `meta.json` holds the size, the drop counts and what the
caller adds. The length index is what the training sampler batches by, so that a start never sorts
or even reads the whole split: `length_groups.npy` [K, 4] int64 rows (longer side, source length,
target length, count) of the split's distinct length triples in ascending order, `by_length.npy`
[N] int64 the dataset indices grouped that way (ascending index within a group). A folder appears
complete or not at all: it is written under a temporary name and renamed into place. Caches
written before the length index existed get it on first use (`TokenPairDataset.length_index`).

`encode_split` encodes text chunks, optionally in `num_proc` worker processes, and appends every
array chunk by chunk, so memory stays flat whatever the corpus size. Chunks have a fixed size and
are written in input order, so the cache is byte-identical whatever the worker count.
`TokenPairDataset` reads a pair's ids, and the sampler a batch's indices, with positioned reads
(`NpyReader`, pread) rather than memory maps: a process's RSS stays what it holds, however large
the split and however long it trains (a memory map would add the file pages it ever touched, ~60 MB
per batch of random pairs from a 2.9M-pair split); the kernel's page cache still serves repeats.
Bulk reads (lengths of an evaluation split, the length index build) memory-map the arrays.

This module imports neither torch nor lightning: encoding workers (spawned) start fast.
"""

from __future__ import annotations

import gc
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import types
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Iterator

import numpy as np

from attnmt.data.streaming import PairStats, TextChunk, collector_paused
from attnmt.permissions import publish_permissions
from attnmt.errors import ConfigError

log = logging.getLogger("attnmt.data")

CACHE_FORMAT = "ids-v1"  # part of every cache key: bump it when the layout or the reading rules change
META_FILE = "meta.json"  # written last: a folder with it is complete
_ARRAYS = ("src_tokens", "tgt_tokens", "src_offsets", "tgt_offsets", "positions")
INDEX_FILES = ("by_length.npy", "length_groups.npy")  # the length index (derived from the offsets)
_INDEX_BLOCK = 1 << 20  # pairs per step while the length index is built: memory stays flat
_LENGTH_BITS = 21  # a sort key packs (longer side, source, target) lengths of up to 2**21 - 1 ids each


def token_dtype(vocab_size: int) -> np.dtype:
    """int16 when every id fits, else int32."""
    return np.dtype(np.int16 if vocab_size <= np.iinfo(np.int16).max + 1 else np.int32)


# --- writing .npy files incrementally ---------------------------------------------------------
class NpyAppender:
    """A 1-D .npy file written piece by piece: the header's length is patched in at `close()`.

    The result is an ordinary .npy file (np.load reads it, with or without mmap_mode).
    """

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.path, self.dtype, self.count = path, np.dtype(dtype), 0
        self._handle = open(path, "wb")
        self._header_size = self._write_header(0)

    def _write_header(self, count: int) -> int:
        self._handle.seek(0)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (count,)}
        np.lib.format.write_array_header_1_0(self._handle, header)
        return self._handle.tell()

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self._handle.write(values.tobytes())
        self.count += len(values)

    def close(self) -> None:
        end = self._handle.tell()
        if self._write_header(self.count) != self._header_size:  # same padded size for any count < 10**19
            raise RuntimeError(f"{self.path}: .npy header size changed")
        self._handle.seek(end)
        self._handle.close()


# --- encoding ---------------------------------------------------------------------------------
_PROCESSORS: dict[str, object] = {}  # per process: the sentencepiece processors of the current task


def _init_encoder(src_model: bytes, tgt_model: bytes | None, threads: int = 1) -> None:
    """Processors for this process; `threads`: sentencepiece's own threads per batch encoding
    (it releases the GIL while it encodes, so they run in parallel)."""
    import sentencepiece as spm

    src = spm.SentencePieceProcessor(model_proto=src_model, num_threads=threads)
    _PROCESSORS["src"] = src
    _PROCESSORS["tgt"] = src if tgt_model is None else spm.SentencePieceProcessor(model_proto=tgt_model, num_threads=threads)


def _init_worker(src_model: bytes, tgt_model: bytes | None, threads: int) -> None:
    gc.disable()  # a worker only encodes (see streaming.collector_paused) and ends with the pool
    _init_encoder(src_model, tgt_model, threads)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class EncodedChunk:
    src_tokens: np.ndarray
    src_lengths: np.ndarray  # [n] of the kept pairs
    tgt_tokens: np.ndarray
    tgt_lengths: np.ndarray
    positions: np.ndarray  # [n] int64 positions among the split's usable pairs
    encoded: int  # pairs encoded (kept + dropped as too long)


def _flat(ids: list[list[int]], lengths: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))


def encode_chunk(task: tuple[int, list[str], list[str], int | None, str]) -> EncodedChunk:
    """Encode one chunk (its first position, source and target sentences) with the processors set
    up by `_init_encoder`; drop pairs over `limit`."""
    first, src, tgt, limit, dtype_name = task
    dtype = np.dtype(dtype_name)
    src_ids = _PROCESSORS["src"].encode(src, out_type=int)
    tgt_ids = _PROCESSORS["tgt"].encode(tgt, out_type=int)
    src_len = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_len = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    positions = np.arange(first, first + len(src_ids), dtype=np.int64)
    if limit is not None:
        keep = (src_len <= limit) & (tgt_len <= limit)
        if not keep.all():
            kept = np.flatnonzero(keep).tolist()
            src_ids, tgt_ids = [src_ids[i] for i in kept], [tgt_ids[i] for i in kept]
            src_len, tgt_len, positions = src_len[keep], tgt_len[keep], positions[keep]
    return EncodedChunk(_flat(src_ids, src_len, dtype), src_len, _flat(tgt_ids, tgt_len, dtype), tgt_len,
                        positions, len(src))


@dataclass
class EncodeResult:
    size: int  # pairs in the cache
    dropped_long: int


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While worker processes are spawned, a `__main__` without a file: spawn would otherwise run
    the parent's main script in each worker (train.py: Hydra, torch and Lightning, ~2 CPU s and
    ~200 MB per worker) for nothing, as the workers only need this module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _ordered_map(tasks: Iterator, num_proc: int, initargs: tuple) -> Iterator[EncodedChunk]:
    """encode_chunk over `tasks`, in order; with num_proc > 1 in that many processes, at most
    2 * num_proc chunks in flight (so reading never runs ahead of encoding by more). Each process
    encodes with sentencepiece threads for the cores the processes leave: 1 process on 2 cores
    encodes with 2 threads, 2 processes with 1 each (processes also run the Python part in parallel)."""
    first = list(islice(tasks, 2))
    tasks = chain(first, tasks)
    if num_proc <= 1 or len(first) < 2:  # a small split: starting processes would cost more than it saves
        _init_encoder(*initargs, available_cores())  # the only encoder: threads on every core
        try:
            for task in tasks:
                yield encode_chunk(task)
        finally:
            _PROCESSORS.clear()
        return
    # spawn: a fresh interpreter per worker, safe whatever threads the parent runs (torch, Lightning)
    context = multiprocessing.get_context("spawn")
    with _main_module_hidden():  # the pool starts its workers now (and replaces none later)
        pool = context.Pool(num_proc, initializer=_init_worker, initargs=(*initargs, max(1, available_cores() // num_proc)))
    with pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(encode_chunk, (task,)))
            if len(pending) >= 2 * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def encode_split(
    chunks: Iterator[TextChunk],
    folder: str | Path,
    src_model: bytes,
    tgt_model: bytes | None,
    vocab_size: int,
    max_len_limit: int | None,
    num_proc: int = 1,
    meta: dict | None = None,
    stats: PairStats | None = None,
    what: str = "split",
    all_dropped: str = "max_len drops every pair; raise it",
) -> EncodeResult | None:
    """Encode text chunks into the cache folder `folder`, atomically.

    Arrays are appended chunk by chunk into a temporary folder that is renamed into place.
    `max_len_limit`: pairs with a side of more ids are dropped (None keeps all); when every pair
    is dropped, ConfigError(`all_dropped`). `stats` (filled by the reader of `chunks`) adds the
    count of pairs dropped as empty to meta.json. Returns None when another process created
    `folder` first (its copy is kept).
    """
    folder = Path(folder)
    if num_proc < 1:
        raise ConfigError(f"data.num_proc={num_proc}: must be at least 1")
    dtype = token_dtype(vocab_size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        writers = {name: NpyAppender(tmp / f"{name}.npy", dtype if name.endswith("_tokens") else np.int64)
                   for name in _ARRAYS}
        offsets = {"src": 0, "tgt": 0}
        writers["src_offsets"].append(np.zeros(1, np.int64))
        writers["tgt_offsets"].append(np.zeros(1, np.int64))
        encoded = 0
        # only what encoding needs crosses to the workers (not the chunk's line numbers)
        tasks = ((chunk.first, chunk.src, chunk.tgt, max_len_limit, dtype.name) for chunk in chunks)
        with collector_paused():  # a list per sentence, millions of them: see collector_paused
            for result in _ordered_map(tasks, num_proc, (src_model, tgt_model)):
                encoded += result.encoded
                for side, tokens, lengths in (("src", result.src_tokens, result.src_lengths),
                                              ("tgt", result.tgt_tokens, result.tgt_lengths)):
                    writers[f"{side}_tokens"].append(tokens)
                    ends = offsets[side] + np.cumsum(lengths)
                    writers[f"{side}_offsets"].append(ends)
                    if len(ends):
                        offsets[side] = int(ends[-1])
                writers["positions"].append(result.positions)
        for writer in writers.values():
            writer.close()
        size = writers["positions"].count
        write_length_index(tmp)
        dropped_long = encoded - size
        if max_len_limit is not None:
            if size == 0:
                raise ConfigError(all_dropped)
            if dropped_long:
                log.info("%s: dropped %d of %d pairs longer than max_len (%d ids + specials)", what, dropped_long, encoded, max_len_limit)
        info = {"size": size, **(meta or {})}
        if stats is not None:
            info["dropped_empty"] = stats.dropped_empty
        info["dropped_long"] = dropped_long
        (tmp / META_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish_permissions(tmp)  # mkdtemp made it 0700: the cache is shared as the umask allows
        try:
            os.rename(tmp, folder)
        except OSError:
            if (folder / META_FILE).is_file():
                return None  # lost a race: the winner's identical copy is in place
            raise
        return EncodeResult(size, dropped_long)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the length index -------------------------------------------------------------------------
@dataclass
class LengthIndex:
    """Pairs grouped by (longer side, source, target) length, groups ascending.

    `order` [N]: dataset indices, group after group, ascending within a group (from a cache: an
    NpyReader, indexed per batch); `groups` [K, 4]: (cost, src, tgt, count) per group, where cost = max(src, tgt).
    Lengths are as given (the cache stores them without specials).
    """

    order: np.ndarray
    groups: np.ndarray

    @classmethod
    def of(cls, src_lengths, tgt_lengths) -> "LengthIndex":
        """The index of in-memory lengths (it sorts: for small inputs)."""
        src, tgt = np.asarray(src_lengths, dtype=np.int64), np.asarray(tgt_lengths, dtype=np.int64)
        if src.shape != tgt.shape:
            raise ValueError(f"{len(src)} source lengths but {len(tgt)} target lengths")
        keys = _length_keys(src, tgt)
        unique, counts = np.unique(keys, return_counts=True)
        return cls(np.argsort(keys, kind="stable"), _groups_of(unique, counts))

    def shifted(self, extra: int) -> "LengthIndex":
        """The same index with `extra` added to every length (specials): grouping and order stay."""
        groups = self.groups.copy()
        groups[:, :3] += extra
        return LengthIndex(self.order, groups)

    @property
    def size(self) -> int:
        return len(self.order)


def _length_keys(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """int64 keys that sort like (max(src, tgt), src, tgt)."""
    if len(src):
        longest, shortest = max(int(src.max()), int(tgt.max())), min(int(src.min()), int(tgt.min()))
        if longest >= 1 << _LENGTH_BITS or shortest < 0:
            raise ValueError(f"sentence lengths must be 0..{(1 << _LENGTH_BITS) - 1} ids, got {shortest}..{longest}")
    return (np.maximum(src, tgt) << (2 * _LENGTH_BITS)) | (src << _LENGTH_BITS) | tgt


def _groups_of(unique_keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    mask = (1 << _LENGTH_BITS) - 1
    columns = [unique_keys >> (2 * _LENGTH_BITS), (unique_keys >> _LENGTH_BITS) & mask, unique_keys & mask, counts]
    return np.stack([np.asarray(c, dtype=np.int64) for c in columns], axis=1).reshape(-1, 4)


def write_length_index(folder: str | Path, block_pairs: int | None = None) -> None:
    """Write `by_length.npy` and `length_groups.npy` into a cache folder, from its offsets.

    A counting sort in blocks of `block_pairs` pairs: one pass counts the pairs of every length
    group, a second places each index into a memory-mapped file, so memory stays flat whatever the
    split's size. Each file appears complete or not at all (temporary name + rename,
    `length_groups.npy` last).
    """
    folder = Path(folder)
    block = block_pairs or _INDEX_BLOCK
    src_offsets = np.load(folder / "src_offsets.npy", mmap_mode="r")
    tgt_offsets = np.load(folder / "tgt_offsets.npy", mmap_mode="r")
    size = len(src_offsets) - 1

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, size, block):
            end = min(start + block, size)
            yield start, _length_keys(np.diff(src_offsets[start : end + 1]), np.diff(tgt_offsets[start : end + 1]))

    unique, counts = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _, keys in blocks():  # pass 1: pairs per group
        more, more_counts = np.unique(keys, return_counts=True)
        unique, where = np.unique(np.concatenate([unique, more]), return_inverse=True)
        counts = np.bincount(where, weights=np.concatenate([counts, more_counts]), minlength=len(unique)).astype(np.int64)
    suffix = f".{os.getpid()}.tmp"
    order_tmp, groups_tmp = folder / f"by_length{suffix}.npy", folder / f"length_groups{suffix}.npy"
    try:
        order = np.lib.format.open_memmap(order_tmp, mode="w+", dtype=np.int64, shape=(size,))
        free = np.cumsum(counts) - counts  # next free slot of every group
        for start, keys in blocks():  # pass 2: each index after the earlier ones of its group
            group = np.searchsorted(unique, keys)
            by_group = np.argsort(group, kind="stable")
            sorted_groups = group[by_group]
            first = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
            rank = np.arange(len(keys)) - np.repeat(first, np.diff(np.r_[first, len(keys)]))
            order[free[sorted_groups] + rank] = start + by_group
            free += np.bincount(group, minlength=len(unique))
        order.flush()
        del order
        np.save(groups_tmp, _groups_of(unique, counts))
        os.replace(order_tmp, folder / "by_length.npy")
        os.replace(groups_tmp, folder / "length_groups.npy")
    finally:
        order_tmp.unlink(missing_ok=True)
        groups_tmp.unlink(missing_ok=True)


# --- reading ----------------------------------------------------------------------------------
class NpyReader:
    """A 1-D .npy file read a part at a time with pread; nothing is mapped or read ahead.

    `reader[i]`, `reader[lo:hi]` (step 1) and `reader[1-D integer array]` return what the same
    index of the array returns (negative indices count from the end). Picklable: a process (a spawned DataLoader worker) opens its own file handle on first
    read; forked processes share the handle, which positioned reads allow.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{self.path}: .npy format {version} not supported (1.0 and 2.0 are)")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, self.dtype = read_header(handle)
            self._start = handle.tell()
        if len(shape) != 1:
            raise ValueError(f"{self.path}: expected a 1-D array, got shape {shape}")
        self.size, self._itemsize = shape[0], self.dtype.itemsize
        self._handle = None

    def _fd(self) -> int:
        if self._handle is None:
            self._handle = open(self.path, "rb", buffering=0)
        return self._handle.fileno()

    def _read(self, lo: int, hi: int) -> np.ndarray:
        count = (hi - lo) * self._itemsize
        data = os.pread(self._fd(), count, self._start + lo * self._itemsize)
        if len(data) != count:
            raise OSError(f"{self.path}: file shorter than its header says (truncated cache?)")
        return np.frombuffer(data, dtype=self.dtype)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, key):
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.size)
            if step != 1:
                raise IndexError("NpyReader slices take step 1")
            return self._read(lo, max(lo, hi))
        if isinstance(key, (int, np.integer)):
            index = int(key) + (self.size if key < 0 else 0)
            if not 0 <= index < self.size:
                raise IndexError(f"index {int(key)} out of range for {self.size} items")
            return self._read(index, index + 1)[0]
        indices = np.asarray(key)
        if indices.ndim != 1 or not (np.issubdtype(indices.dtype, np.integer) or indices.size == 0):
            raise IndexError("NpyReader takes an int, a slice or a 1-D integer array")
        indices = np.where(indices < 0, indices + self.size, indices).astype(np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.size):
            raise IndexError(f"indices out of range for {self.size} items")
        return np.concatenate([self._read(i, i + 1) for i in indices.tolist()]) if len(indices) else np.zeros(0, self.dtype)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None}


def _reads_positioned() -> bool:
    return hasattr(os, "pread")  # POSIX; elsewhere the arrays are memory-mapped


def _read_in_place(path: Path) -> "NpyReader | np.ndarray":
    """A 1-D array of a cache, for reads of a few items at a time: an NpyReader, or a memory map
    where the OS has no pread."""
    return NpyReader(path) if _reads_positioned() else np.load(path, mmap_mode="r")


class TokenPairDataset:
    """Sentence pairs of one split from a cache folder, a map-style dataset for a DataLoader.

    item i -> (i, src ids [n] int64 numpy, tgt ids [m] int64 numpy), without specials.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / META_FILE).read_text())
        self._tokens: tuple | None = None
        self._length_index: LengthIndex | None = None
        self._mapped_arrays: dict[str, np.ndarray] = {}

    def length_index(self) -> LengthIndex:
        """The split's length index (its order read in place, never whole): what TokenBucketSampler batches training by.

        A cache written before the index existed gets it now, once (written into its folder; when
        that folder is read-only, into a temporary folder for this process).
        """
        if self._length_index is None:
            folder = self.folder
            if not all((folder / name).is_file() for name in INDEX_FILES):
                try:
                    write_length_index(folder)
                except OSError as err:
                    folder = Path(tempfile.mkdtemp(prefix="attnmt-length-index-"))
                    log.info("cannot add the length index to %s (%s): built in %s", self.folder, err, folder)
                    for name in ("src_offsets.npy", "tgt_offsets.npy"):
                        os.symlink((self.folder / name).resolve(), folder / name)
                    write_length_index(folder)
            self._length_index = LengthIndex(_read_in_place(folder / "by_length.npy"), np.load(folder / "length_groups.npy"))
        return self._length_index

    # bulk views, memory-mapped on first use (evaluation lengths, source texts): pages shared by
    # every process that reads the split, never copied into each one's heap
    def _mapped(self, name: str) -> np.ndarray:
        if name not in self._mapped_arrays:
            self._mapped_arrays[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
        return self._mapped_arrays[name]

    @property
    def src_offsets(self) -> np.ndarray:
        """[N + 1] int64 where each source sentence starts and ends in src_tokens."""
        return self._mapped("src_offsets")

    @property
    def tgt_offsets(self) -> np.ndarray:
        return self._mapped("tgt_offsets")

    @property
    def positions(self) -> np.ndarray:
        """[N] int64, increasing: each pair's position among the split's usable pairs."""
        return self._mapped("positions")

    @property
    def src_lengths(self) -> np.ndarray:
        """[N] int64 source ids per sentence (no specials)."""
        return np.diff(self.src_offsets)

    @property
    def tgt_lengths(self) -> np.ndarray:
        return np.diff(self.tgt_offsets)

    def _arrays(self) -> tuple:
        """(src tokens, tgt tokens, src offsets, tgt offsets) as item reads see them."""
        if self._tokens is None:  # opened lazily, once per process (DataLoader workers included)
            names = ("src_tokens", "tgt_tokens", "src_offsets", "tgt_offsets")
            self._tokens = tuple(_read_in_place(self.folder / f"{name}.npy") for name in names)
        return self._tokens

    def __getstate__(self) -> dict:
        # pickling a memmap would copy the whole array into the worker: each process reopens them
        skip = ("_tokens", "_mapped_arrays", "_length_index")
        return {key: value for key, value in self.__dict__.items() if key not in skip}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._tokens = None
        self._length_index = None
        self._mapped_arrays = {}

    def __len__(self) -> int:
        return int(self.meta["size"])

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, np.ndarray]:
        index = int(index)
        if not 0 <= index < len(self):  # the end of iteration for `for item in dataset`
            raise IndexError(f"index {index} out of range for {len(self)} pairs")
        src_tokens, tgt_tokens, src_offsets, tgt_offsets = self._arrays()
        src_lo, src_hi = (int(x) for x in src_offsets[index : index + 2])
        tgt_lo, tgt_hi = (int(x) for x in tgt_offsets[index : index + 2])
        return index, src_tokens[src_lo:src_hi].astype(np.int64), tgt_tokens[tgt_lo:tgt_hi].astype(np.int64)
