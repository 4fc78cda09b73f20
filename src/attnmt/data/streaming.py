"""Streaming reading of parallel text, and the plumbing every shared cache uses.

Nothing here holds a whole corpus. Text files are read in blocks of a few MiB (gzip or plain),
decoded and split into stripped lines; two aligned files become chunks of sentence pairs
(`iter_pair_chunks`), checked on the way: line counts must match, text must be UTF-8
(an error names the file and line), pairs with a blank side are dropped and counted.
token_cache.py encodes those chunks into a split's token-id cache.

Caches (tokenizers, token ids, exported text, reference alignments) are shared between processes
and users: `build_lock` lets one process build an item while the others wait (their modes:
attnmt.permissions).

This module imports neither torch nor lightning: encoding workers (spawned) start fast.
"""

from __future__ import annotations

import gc
import gzip
import hashlib
import logging
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from attnmt.errors import DataError

log = logging.getLogger("attnmt.data")

GZIP_MAGIC = b"\x1f\x8b"
BLOCK_BYTES = 1 << 22  # read size: 4 MiB of (decompressed) text at a time
CHUNK_PAIRS = 8192  # pairs per encoding task; fixed, so the output never depends on the worker count


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
        lines = list(map(str.strip, text.split("\n")))
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
    line_numbers: Sequence[int]  # 1-based line of each pair in the files


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
        if all(src) and all(tgt):  # the usual chunk: no blank side (checked at C speed)
            numbers: Sequence[int] = range(line + 1, line + read + 1)
        else:
            numbers = [line + i + 1 for i, (s, t) in enumerate(zip(src, tgt)) if s and t]
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


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a block that allocates millions of lists.

    Encoding creates a list of ids per sentence; in a process that has torch and Lightning loaded
    (hundreds of thousands of tracked objects) each of the collections those allocations trigger
    walks all of them, which made in-process encoding ~1.7x slower. The block makes no reference
    cycles: reference counting frees everything it drops. The previous state is restored after.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


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
