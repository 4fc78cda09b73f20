"""Streaming data preparation: corpora read, validated and encoded in chunks, in flat memory.

Nothing here holds a whole corpus. Text files are read in blocks of a few MiB (gzip or plain),
decoded and split into stripped lines; two aligned files become chunks of sentence pairs
(`iter_pair_chunks`), with the same checks as ever: line counts must match, text must be UTF-8
(an error names the file and line), pairs with a blank side are dropped and counted.

`encode_split` turns those chunks into a token-id cache folder (the format of batching.py),
writing every array incrementally, optionally in `num_proc` worker processes. Chunks have a fixed
size and are written in input order, so the cache is byte-identical whatever the worker count.

This module imports neither torch nor lightning: worker processes start fast.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
import zlib
from collections import deque
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from attnmt.errors import ConfigError, DataError

log = logging.getLogger("attnmt.data")

GZIP_MAGIC = b"\x1f\x8b"
BLOCK_BYTES = 1 << 22  # read size: 4 MiB of (decompressed) text at a time
CHUNK_PAIRS = 8192  # pairs per encoding task; fixed, so the output never depends on the worker count
META_FILE = "meta.json"


# --- permissions ------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_permissions(path: str | Path) -> None:
    """Give a folder made by tempfile.mkdtemp (0700) and its files the modes the user's umask allows.

    Caches are renamed from temporary folders into place; without this they would stay private
    to the user who built them, whatever the umask says.
    """
    path = Path(path)
    mask = _umask()
    for child in path.rglob("*") if path.is_dir() else ():
        child.chmod((0o777 if child.is_dir() else 0o666) & ~mask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


# --- reading ----------------------------------------------------------------------------------
def _open(path: Path) -> BinaryIO:
    """Binary handle on the (decompressed) content: gzip is detected by its magic bytes."""
    if not path.is_file():
        raise DataError(f"file not found: {path}")
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")


def iter_line_blocks(path: str | Path, block_bytes: int | None = None) -> Iterator[list[str]]:
    """Lines of a UTF-8 text file (gzipped or not) in blocks, without line ends or outer whitespace.

    Lines end at "\\n" only (U+2028, U+0085, ... stay inside a line, so pairs stay aligned). A
    byte-order mark at the start is dropped. Raises DataError on a missing, empty (whitespace
    only), corrupt gzip or non-UTF-8 file, naming the file (and the line).
    """
    path = Path(path)
    block_bytes = block_bytes or BLOCK_BYTES
    lines_before, tail, first, has_text = 0, b"", True, False

    def lines_of(data: bytes) -> list[str]:
        nonlocal lines_before, first, has_text
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = lines_before + data[: err.start].count(b"\n") + 1
            raise DataError(f"{path}, line {line}: invalid UTF-8 ({err.reason}); convert the file to UTF-8") from None
        if first:
            first = False
            if text.startswith("\ufeff"):
                text = text[1:]  # a byte-order mark is not part of the first sentence
        lines = [line.strip() for line in text.split("\n")]
        lines_before += len(lines)
        has_text = has_text or any(lines)
        return lines

    with _open(path) as handle:
        while True:
            try:
                block = handle.read(block_bytes)
            except (OSError, EOFError, zlib.error) as err:
                raise DataError(f"{path}: cannot decompress gzip data ({err}); the file is truncated or corrupt") from None
            if not block:
                break
            data = tail + block
            cut = data.rfind(b"\n")
            if cut < 0:
                tail = data  # a line longer than a block: keep reading
                continue
            tail = data[cut + 1 :]
            yield lines_of(data[:cut])
        if tail:
            yield lines_of(tail)
    if not has_text:
        raise DataError(f"{path} is empty; it must hold one sentence per line")


def iter_lines(path: str | Path) -> Iterator[str]:
    """Lines of a file one by one (see iter_line_blocks)."""
    return chain.from_iterable(iter_line_blocks(path))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class TextChunk:
    """Consecutive usable pairs of a split: `first` is the position (among usable pairs) of pair 0."""

    first: int
    src: list[str]
    tgt: list[str]
    line_numbers: list[int]


@dataclass
class PairStats:
    """Filled in while a split is read; complete once the iteration ended."""

    total_lines: int = 0  # lines in each file
    dropped_empty: int = 0  # pairs dropped because one side was blank
    kept: int = 0
    done: bool = False


def iter_pair_chunks(
    src_path: str | Path,
    tgt_path: str | Path,
    chunk_pairs: int = CHUNK_PAIRS,
    stats: PairStats | None = None,
) -> Iterator[TextChunk]:
    """Usable sentence pairs of two aligned files in chunks of up to `chunk_pairs` pairs.

    Pairs with a blank side are dropped and counted in `stats`; differing line counts, and files
    without a single usable pair, raise DataError (once the shorter file ends).
    """
    stats = stats if stats is not None else PairStats()
    src_lines, tgt_lines = iter_lines(src_path), iter_lines(tgt_path)
    line = 0
    while True:
        src = list(islice(src_lines, chunk_pairs))
        tgt = list(islice(tgt_lines, chunk_pairs))
        if len(src) != len(tgt):
            src_total = line + len(src) + sum(1 for _ in src_lines)
            tgt_total = line + len(tgt) + sum(1 for _ in tgt_lines)
            raise DataError(
                f"line counts differ: {src_path} has {src_total} lines, {tgt_path} has {tgt_total}; "
                "the two files of a parallel corpus must be aligned line by line"
            )
        if not src:
            break
        read = len(src)
        numbers = [line + i + 1 for i, (s, t) in enumerate(zip(src, tgt)) if s and t]
        if len(numbers) < read:
            src = [src[n - line - 1] for n in numbers]
            tgt = [tgt[n - line - 1] for n in numbers]
        line += read
        if numbers:
            yield TextChunk(stats.kept, src, tgt, numbers)
            stats.kept += len(numbers)
    stats.total_lines = line
    stats.dropped_empty = stats.total_lines - stats.kept
    stats.done = True
    if stats.dropped_empty:
        log.info("dropped %d of %d pairs with an empty side (%s, %s)", stats.dropped_empty, stats.total_lines, src_path, tgt_path)
    if not stats.kept:
        raise DataError(f"no usable sentence pairs in {src_path} / {tgt_path}: every pair has an empty side")


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


def token_dtype(vocab_size: int) -> np.dtype:
    """int16 when every id fits, else int32 (the cache format of batching.py)."""
    return np.dtype(np.int16 if vocab_size <= np.iinfo(np.int16).max + 1 else np.int32)


# --- encoding ---------------------------------------------------------------------------------
_PROCESSORS: dict[str, object] = {}  # per process: the sentencepiece processors of the current task


def _init_encoder(src_model: bytes, tgt_model: bytes | None) -> None:
    import sentencepiece as spm

    src = spm.SentencePieceProcessor(model_proto=src_model, num_threads=1)
    _PROCESSORS["src"] = src
    _PROCESSORS["tgt"] = src if tgt_model is None else spm.SentencePieceProcessor(model_proto=tgt_model, num_threads=1)


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


def encode_chunk(task: tuple[TextChunk, int | None, str]) -> EncodedChunk:
    """Encode one chunk with the processors set up by `_init_encoder`; drop pairs over `limit`."""
    chunk, limit, dtype_name = task
    dtype = np.dtype(dtype_name)
    src_ids = _PROCESSORS["src"].encode(chunk.src, out_type=int)
    tgt_ids = _PROCESSORS["tgt"].encode(chunk.tgt, out_type=int)
    src_len = np.fromiter(map(len, src_ids), dtype=np.int64, count=len(src_ids))
    tgt_len = np.fromiter(map(len, tgt_ids), dtype=np.int64, count=len(tgt_ids))
    positions = np.arange(chunk.first, chunk.first + len(src_ids), dtype=np.int64)
    if limit is not None:
        keep = (src_len <= limit) & (tgt_len <= limit)
        if not keep.all():
            kept = np.flatnonzero(keep).tolist()
            src_ids, tgt_ids = [src_ids[i] for i in kept], [tgt_ids[i] for i in kept]
            src_len, tgt_len, positions = src_len[keep], tgt_len[keep], positions[keep]
    return EncodedChunk(_flat(src_ids, src_len, dtype), src_len, _flat(tgt_ids, tgt_len, dtype), tgt_len,
                        positions, len(chunk.src))


def _worker_encode(task: tuple[TextChunk, int | None, str]) -> EncodedChunk:
    return encode_chunk(task)


@dataclass
class EncodeResult:
    size: int  # pairs in the cache
    dropped_long: int
    stats: PairStats = field(default_factory=PairStats)


def _ordered_map(tasks: Iterator, num_proc: int, initargs: tuple) -> Iterator[EncodedChunk]:
    """encode_chunk over `tasks`, in order; with num_proc > 1 in that many processes, at most
    2 * num_proc chunks in flight (so reading never runs ahead of encoding by more)."""
    first = list(islice(tasks, 2))
    tasks = chain(first, tasks)
    if num_proc <= 1 or len(first) < 2:  # a small split: starting processes would cost more than it saves
        _init_encoder(*initargs)
        try:
            for task in tasks:
                yield encode_chunk(task)
        finally:
            _PROCESSORS.clear()
        return
    # spawn: a fresh interpreter per worker, safe whatever threads the parent runs (torch, Lightning)
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_proc, initializer=_init_encoder, initargs=initargs) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(_worker_encode, (task,)))
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
    """Encode text chunks into the token-id cache `folder` (format: batching.py), atomically.

    Arrays are appended chunk by chunk into a temporary folder that is renamed into place.
    `max_len_limit`: pairs with a side of more ids are dropped (None keeps all); when every pair
    is dropped, ConfigError(`all_dropped`). Returns None when another process created `folder` first.
    """
    folder = Path(folder)
    if num_proc < 1:
        raise ConfigError(f"data.num_proc={num_proc}: must be at least 1")
    dtype = token_dtype(vocab_size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        writers = {
            "src_tokens": NpyAppender(tmp / "src_tokens.npy", dtype),
            "tgt_tokens": NpyAppender(tmp / "tgt_tokens.npy", dtype),
            "src_offsets": NpyAppender(tmp / "src_offsets.npy", np.int64),
            "tgt_offsets": NpyAppender(tmp / "tgt_offsets.npy", np.int64),
            "positions": NpyAppender(tmp / "positions.npy", np.int64),
        }
        offsets = {"src": 0, "tgt": 0}
        writers["src_offsets"].append(np.zeros(1, np.int64))
        writers["tgt_offsets"].append(np.zeros(1, np.int64))
        encoded = 0
        tasks = ((chunk, max_len_limit, dtype.name) for chunk in chunks)
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
        publish_permissions(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if (folder / META_FILE).is_file():
                return None  # lost a race: the winner's identical copy is in place
            raise
        return EncodeResult(size, dropped_long, stats or PairStats())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- one builder per cache item ---------------------------------------------------------------
class build_lock:
    """Exclusive file lock `<parent>/.<name>.lock` while a cache item is built.

    Processes that want the same item (DDP ranks, parallel runs) queue on the lock: the first one
    builds it, the others wait, then find it built and only load it. The lock goes with its
    process, so a builder that dies lets the next one build; the builder removes the lock file
    when done, so caches hold no leftovers. Without fcntl (Windows) it is a no-op
    and the atomic renames keep the cache consistent.
    """

    def __init__(self, item: str | Path) -> None:
        item = Path(item)
        self.path = item.parent / f".{item.name}.lock"
        self._handle = None

    def __enter__(self) -> "build_lock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "a")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log.info("waiting for another process to build %s", self.path.name[1:-5])
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            # removed while still held: the item is in place by now, so a process that locks a
            # new lock file finds it built; processes queued on this one find it too
            self.path.unlink(missing_ok=True)
            self._handle.close()
            self._handle = None
