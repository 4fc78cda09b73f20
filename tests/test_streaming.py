"""Streaming preparation: block reading, chunked pairs, incremental cache writing, worker
processes (same bytes for any count), flat memory, one builder per cache item, file modes."""

from __future__ import annotations

import gzip
import multiprocessing
import os
import stat
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from attnmt.data import datamodule as datamodule_module
from attnmt.data import streaming
from attnmt.data import tokenizer as tokenizer_module
from attnmt.data.batching import TokenPairDataset, write_token_cache
from attnmt.data.corpus import read_lines, read_pairs
from attnmt.data.streaming import (
    NpyAppender,
    PairStats,
    encode_split,
    iter_line_blocks,
    iter_pair_chunks,
)
from attnmt.data.tokenizer import Tokenizer, TokenizerSettings
from attnmt.errors import ConfigError, DataError

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
    pairs = read_pairs(src, tgt)
    assert (pairs.src, pairs.line_numbers, pairs.dropped_empty) == (["a", "d", "e", "f", "g"], [1, 4, 5, 6, 7], 2)


def test_line_count_mismatch_found_mid_stream_gives_both_counts(tmp_path: Path) -> None:
    src, tgt = tmp_path / "m.en", tmp_path / "m.fr"
    src.write_text("x\n" * 10)
    tgt.write_text("y\n" * 7)
    with pytest.raises(DataError, match=r"m.en has 10 lines, .*m.fr has 7"):
        list(iter_pair_chunks(src, tgt, chunk_pairs=3))


@pytest.mark.parametrize("count", [0, 1, 70_000])
def test_npy_appender_writes_ordinary_npy_files(tmp_path: Path, count: int) -> None:
    values = np.arange(count, dtype=np.int16)
    writer = NpyAppender(tmp_path / "a.npy", np.int16)
    for part in np.array_split(values, 3):
        writer.append(part)
    writer.close()
    np.save(tmp_path / "b.npy", values)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert np.array_equal(np.load(tmp_path / "a.npy", mmap_mode="r"), values)


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_parallel_dir: Path) -> Tokenizer:
    pairs = read_pairs(tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr")
    return Tokenizer.train(pairs.src, pairs.tgt, TokenizerSettings(vocab_size=200))


def encode(tokenizer: Tokenizer, parallel_dir: Path, folder: Path, num_proc: int, limit: int | None = None):
    chunks = iter_pair_chunks(parallel_dir / "train.en", parallel_dir / "train.fr", chunk_pairs=30)
    return encode_split(chunks, folder, *tokenizer.model_bytes, vocab_size=tokenizer.src_vocab_size,
                        max_len_limit=limit, num_proc=num_proc, meta={"split": "train"})


def test_worker_count_never_changes_the_cache(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    # 200 pairs in chunks of 30: 7 chunks, so two workers really share the work
    one = encode(tiny_tokenizer, tiny_parallel_dir, tmp_path / "one", num_proc=1, limit=20)
    two = encode(tiny_tokenizer, tiny_parallel_dir, tmp_path / "two", num_proc=2, limit=20)
    assert one.size == two.size and one.dropped_long == two.dropped_long > 0
    for name in ("src_tokens.npy", "tgt_tokens.npy", "src_offsets.npy", "tgt_offsets.npy", "positions.npy", "meta.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # and the same bytes as the list-based writer: old and new code share caches
    pairs = read_pairs(tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr")
    src, tgt = tiny_tokenizer.encode_src(pairs.src), tiny_tokenizer.encode_tgt(pairs.tgt)
    kept = [i for i in range(len(src)) if len(src[i]) <= 20 and len(tgt[i]) <= 20]
    write_token_cache(tmp_path / "lists", [src[i] for i in kept], [tgt[i] for i in kept], kept, tiny_tokenizer.src_vocab_size)
    for name in ("src_tokens.npy", "tgt_tokens.npy", "src_offsets.npy", "tgt_offsets.npy", "positions.npy"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "lists" / name).read_bytes(), name
    dataset = TokenPairDataset(tmp_path / "two")
    assert dataset[3][1].tolist() == src[kept[3]]


def test_everything_dropped_is_a_config_error(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        encode(tiny_tokenizer, tiny_parallel_dir, tmp_path / "none", num_proc=1, limit=1)
    assert not list(tmp_path.iterdir())  # the temporary folder is gone


def test_memory_does_not_grow_with_the_corpus(tiny_tokenizer: Tokenizer, tmp_path: Path, monkeypatch) -> None:
    """Python allocations while preparing 4x more pairs stay about the same: blocks and chunks, not the corpus.

    (Read blocks of 32 KiB here instead of 4 MiB, so that both corpora span many blocks.)"""
    monkeypatch.setattr(streaming, "BLOCK_BYTES", 1 << 15)
    peaks = []
    for pairs in (5_000, 20_000):
        folder = tmp_path / f"n{pairs}"
        folder.mkdir()
        for lang, words in (("en", "a man is walking on the beach"), ("fr", "un homme marche sur la plage")):
            (folder / f"t.{lang}").write_text("".join(f"{words} {i}\n" for i in range(pairs)))
        tracemalloc.start()
        chunks = iter_pair_chunks(folder / "t.en", folder / "t.fr", chunk_pairs=1000)
        result = encode_split(chunks, folder / "ids", *tiny_tokenizer.model_bytes, vocab_size=200, max_len_limit=None)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert result.size == pairs
    assert peaks[1] < 1.2 * peaks[0], peaks


def _build_in_process(args) -> tuple[int, int, dict]:
    parallel_dir, cache = args
    dm = make_tiny_datamodule(parallel_dir, cache)
    dm.setup()
    return tokenizer_module.TRAININGS, datamodule_module.ENCODINGS, dm.cache_hits


def test_concurrent_processes_build_each_item_once(tiny_parallel_dir: Path, tmp_path: Path) -> None:
    """Like two DDP ranks starting at once: each item (tokenizer, 3 splits) is built by one of them while
    the other waits on its lock and then loads it."""
    before = (tokenizer_module.TRAININGS, datamodule_module.ENCODINGS)  # forked processes start from these
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_build_in_process, [(tiny_parallel_dir, tmp_path)] * 2)
    trainings = sum(r[0] - before[0] for r in results)
    encodings = sum(r[1] - before[1] for r in results)
    assert (trainings, encodings) == (1, 3)
    hits = [r[2] for r in results]
    assert set(hits[0]) == set(hits[1]) == {"tokenizer", "ids/train", "ids/val", "ids/test"}
    assert all(hits[0][item] != hits[1][item] for item in hits[0])  # each item: built by one, loaded by the other
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
