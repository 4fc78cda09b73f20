"""Streaming reading: blocks, chunked pairs; one builder per cache item, file modes.
(Encoding into the token-id cache: test_token_cache.py.)"""

from __future__ import annotations

import gzip
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from attnmt.data.corpus import read_lines
from attnmt.data.streaming import PairStats, iter_line_blocks, iter_pair_chunks
from attnmt.errors import DataError

from conftest import make_tiny_datamodule

TEXT = "\ufeffFirst line \r\nsecond\u2028still second\n\n   \nfourth, much longer than a block of seven bytes\nlast"
EXPECTED = ["First line", "second\u2028still second", "", "", "fourth, much longer than a block of seven bytes", "last"]


def flat(path: Path, block: int) -> list[str]:
    return [line for lines in iter_line_blocks(path, block_bytes=block) for line in lines]


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_lines_are_the_same_for_any_block_size(tmp_path: Path, block: int) -> None:
    plain, packed = tmp_path / "a.txt", tmp_path / "a.gz"
    plain.write_bytes(TEXT.encode())
    packed.write_bytes(gzip.compress(TEXT.encode()))
    assert flat(plain, block) == flat(packed, block) == read_lines(plain) == EXPECTED


@pytest.mark.parametrize("block", [5, 1 << 20])
def test_invalid_utf8_names_the_line_in_any_block(tmp_path: Path, block: int) -> None:
    path = tmp_path / "bad.fr"
    path.write_bytes(("ok\n" * 40).encode() + b"caf\xe9\nok\n")
    with pytest.raises(DataError, match=r"bad.fr, line 41: invalid UTF-8"):
        flat(path, block)


def test_truncated_gzip_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "cut.en.gz"
    path.write_bytes(gzip.compress(("a sentence\n" * 5000).encode())[:-40])
    with pytest.raises(DataError, match="cut.en.gz: cannot decompress gzip data"):
        flat(path, 1 << 12)


def test_pair_chunks_drop_blank_sides_and_keep_line_numbers(tmp_path: Path) -> None:
    src, tgt = tmp_path / "c.en", tmp_path / "c.fr"
    src.write_text("a\nb\n\nd\ne\nf\ng\n")
    tgt.write_text("A\n \nC\nD\nE\nF\nG\n")
    stats = PairStats()
    chunks = list(iter_pair_chunks(src, tgt, chunk_pairs=3, stats=stats))
    assert [c.first for c in chunks] == [0, 1, 4]
    assert [c.src for c in chunks] == [["a"], ["d", "e", "f"], ["g"]]
    assert [n for c in chunks for n in c.line_numbers] == [1, 4, 5, 6, 7]
    assert (stats.total_lines, stats.dropped_empty, stats.kept, stats.done) == (7, 2, 5, True)


def test_line_count_mismatch_found_mid_stream_gives_both_counts(tmp_path: Path) -> None:
    src, tgt = tmp_path / "m.en", tmp_path / "m.fr"
    src.write_text("x\n" * 10)
    tgt.write_text("y\n" * 7)
    with pytest.raises(DataError, match=r"m.en has 10 lines, .*m.fr has 7"):
        list(iter_pair_chunks(src, tgt, chunk_pairs=3))


def _build_in_process(args) -> dict[str, bool]:
    parallel_dir, cache = args
    dm = make_tiny_datamodule(parallel_dir, cache)
    dm.setup()
    return dm.cache_hits


def test_concurrent_processes_build_each_item_once(tiny_parallel_dir: Path, tmp_path: Path) -> None:
    """Like two DDP ranks starting at once: each item (tokenizer, 3 splits) is built by one of them while
    the other waits on its lock and then loads it."""
    with multiprocessing.get_context("fork").Pool(2) as pool:
        hits = pool.map(_build_in_process, [(tiny_parallel_dir, tmp_path)] * 2)
    assert set(hits[0]) == set(hits[1]) == {"tokenizer", "ids/train", "ids/val", "ids/test"}
    assert all(hits[0][item] != hits[1][item] for item in hits[0])  # each item: built by one, loaded by the other
    assert len(list(tmp_path.glob("spm-*"))) == 1 and len(list(tmp_path.glob("ids-*"))) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no lock or temporary files left


def test_cache_files_follow_the_umask(tiny_parallel_dir: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        make_tiny_datamodule(tiny_parallel_dir, tmp_path / "cache").setup()
    finally:
        os.umask(old)
    for path in [tmp_path / "cache", *(tmp_path / "cache").rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))
