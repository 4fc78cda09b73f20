"""The token-id cache: what encode_split writes (ids, positions, drops, dtype, file modes, same bytes
for any worker count, flat memory), what TokenPairDataset reads back, incremental .npy files."""

from __future__ import annotations

import json
import os
import pickle
import stat
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from attnmt.data import streaming, token_cache
from attnmt.data.streaming import PairStats, iter_pair_chunks
from attnmt.data.batching import TokenBucketSampler
from attnmt.data.token_cache import INDEX_FILES, LengthIndex, NpyAppender, NpyReader, TokenPairDataset, encode_split, write_length_index
from attnmt.data.tokenizer import Tokenizer, TokenizerSettings
from attnmt.errors import ConfigError

ARRAYS = ("src_tokens.npy", "tgt_tokens.npy", "src_offsets.npy", "tgt_offsets.npy", "positions.npy", *INDEX_FILES)


def text_pairs(src: Path, tgt: Path) -> tuple[list[str], list[str]]:
    chunks = list(iter_pair_chunks(src, tgt))
    return [s for c in chunks for s in c.src], [t for c in chunks for t in c.tgt]


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_parallel_dir: Path) -> Tokenizer:
    src, tgt = text_pairs(tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr")
    return Tokenizer.train(src, tgt, TokenizerSettings(vocab_size=200))


def encode(tokenizer: Tokenizer, src: Path, tgt: Path, folder: Path, limit: int | None = None, num_proc: int = 1,
           vocab_size: int | None = None, chunk_pairs: int = 30, stats: PairStats | None = None):
    chunks = iter_pair_chunks(src, tgt, chunk_pairs=chunk_pairs, stats=stats)
    return encode_split(chunks, folder, *tokenizer.model_bytes, vocab_size=vocab_size or tokenizer.src_vocab_size,
                        max_len_limit=limit, num_proc=num_proc, meta={"split": "train"}, stats=stats)


@pytest.fixture
def small_pair(tmp_path: Path) -> tuple[Path, Path]:
    """5 lines: one pair with a blank side (dropped as empty), one far longer than the others."""
    src, tgt = tmp_path / "s.en", tmp_path / "s.fr"
    src.write_text("A man walks.\n\nTwo dogs run.\n" + "a very long sentence " * 20 + "\nA cat sleeps.\n")
    tgt.write_text("Un homme marche.\nVide.\nDeux chiens courent.\n" + "une phrase très longue " * 20 + "\nUn chat dort.\n")
    return src, tgt


def test_cache_holds_the_tokenizer_ids_of_the_kept_pairs(tiny_tokenizer: Tokenizer, small_pair, tmp_path: Path) -> None:
    stats = PairStats()
    result = encode(tiny_tokenizer, *small_pair, tmp_path / "ids", limit=20, stats=stats, chunk_pairs=2)
    assert (result.size, result.dropped_long, stats.dropped_empty) == (3, 1, 1)
    dataset = TokenPairDataset(tmp_path / "ids")
    usable = (["A man walks.", "Two dogs run.", "A cat sleeps."], ["Un homme marche.", "Deux chiens courent.", "Un chat dort."])
    src_ids, tgt_ids = tiny_tokenizer.encode_src(usable[0]), tiny_tokenizer.encode_tgt(usable[1])
    assert len(dataset) == 3 and dataset.positions.tolist() == [0, 1, 3]  # among usable pairs: the long one was 2
    assert [(i, s.tolist(), t.tolist()) for i, s, t in (dataset[k] for k in range(3))] == [
        (k, src_ids[k], tgt_ids[k]) for k in range(3)]
    assert dataset.src_lengths.tolist() == [len(ids) for ids in src_ids]
    assert dataset.tgt_lengths.tolist() == [len(ids) for ids in tgt_ids]
    assert dataset.meta == {"size": 3, "split": "train", "dropped_empty": 1, "dropped_long": 1}
    assert np.load(tmp_path / "ids" / "src_tokens.npy", mmap_mode="r").dtype == np.int16
    assert isinstance(dataset._arrays()[0], NpyReader if hasattr(os, "pread") else np.memmap)
    # DataLoader workers get the dataset pickled: open files and memory maps must not travel with it
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._tokens is None and clone[1][2].tolist() == tgt_ids[1]
    with pytest.raises(IndexError):
        dataset[3]


def test_reading_pairs_maps_none_of_the_token_files(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    """Items and training batches are read with pread: RSS holds no pages of the split's files."""
    maps = Path("/proc/self/maps")
    if not maps.is_file() or not hasattr(os, "pread"):
        pytest.skip("needs /proc/self/maps and os.pread")
    folder = tmp_path / "ids"
    encode(tiny_tokenizer, tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr", folder)
    dataset = TokenPairDataset(folder)
    sampler = TokenBucketSampler.for_dataset(dataset, max_tokens=64, shuffle=True, seed=1)
    items = [dataset[i] for batch in sampler for i in batch]
    assert len(items) == len(dataset)
    mapped = [line for line in maps.read_text().splitlines() if str(folder) in line]
    assert mapped == []


def test_without_pread_items_come_from_memory_maps(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ids"
    encode(tiny_tokenizer, tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr", folder)
    expected = [(i, s.tolist(), t.tolist()) for i, s, t in (TokenPairDataset(folder)[k] for k in range(5))]
    sampler_batches = list(TokenBucketSampler.for_dataset(TokenPairDataset(folder), max_tokens=64, shuffle=True, seed=1))
    monkeypatch.setattr(token_cache, "_reads_positioned", lambda: False)
    dataset = TokenPairDataset(folder)
    assert isinstance(dataset._arrays()[0], np.memmap)
    assert [(i, s.tolist(), t.tolist()) for i, s, t in (dataset[k] for k in range(5))] == expected
    assert list(TokenBucketSampler.for_dataset(dataset, max_tokens=64, shuffle=True, seed=1)) == sampler_batches


@pytest.mark.skipif(not hasattr(os, "pread"), reason="NpyReader needs os.pread")
@pytest.mark.parametrize("dtype", [np.int16, np.int64])
def test_npy_reader_reads_what_numpy_reads(tmp_path: Path, dtype) -> None:
    values = np.arange(-50, 950, 3).astype(dtype)
    np.save(tmp_path / "a.npy", values)
    reader = NpyReader(tmp_path / "a.npy")
    assert len(reader) == len(values) and reader.dtype == values.dtype
    assert reader[5] == values[5] and reader[-1] == values[-1]
    assert reader[10:40].tolist() == values[10:40].tolist() and reader[7:7].tolist() == []
    picks = np.array([0, 332, 17, 17, 5, -1])
    assert reader[picks].tolist() == values[picks].tolist()
    with pytest.raises(IndexError):
        reader[np.ones(len(values), dtype=bool)]  # a mask is not a list of indices
    assert pickle.loads(pickle.dumps(reader))[10:12].tolist() == values[10:12].tolist()
    with pytest.raises(IndexError):
        reader[len(values)]
    with pytest.raises(IndexError):
        reader[np.array([1, len(values)])]


def test_a_second_writer_keeps_the_first_copy(tiny_tokenizer: Tokenizer, small_pair, tmp_path: Path) -> None:
    assert encode(tiny_tokenizer, *small_pair, tmp_path / "ids", limit=20) is not None
    before = {name: (tmp_path / "ids" / name).read_bytes() for name in ARRAYS}
    assert encode(tiny_tokenizer, *small_pair, tmp_path / "ids", limit=None) is None  # lost the race
    assert {name: (tmp_path / "ids" / name).read_bytes() for name in ARRAYS} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # its temporary folder is gone


def test_large_vocabulary_uses_int32(tiny_tokenizer: Tokenizer, small_pair, tmp_path: Path) -> None:
    encode(tiny_tokenizer, *small_pair, tmp_path / "i16")
    encode(tiny_tokenizer, *small_pair, tmp_path / "i32", vocab_size=50_000)
    assert np.load(tmp_path / "i32" / "tgt_tokens.npy").dtype == np.int32
    narrow, wide = TokenPairDataset(tmp_path / "i16"), TokenPairDataset(tmp_path / "i32")
    assert [narrow[i][1].tolist() for i in range(len(narrow))] == [wide[i][1].tolist() for i in range(len(wide))]


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_cache_follows_the_umask(tiny_tokenizer: Tokenizer, small_pair, tmp_path: Path, umask: int,
                                 folder_mode: int, file_mode: int) -> None:
    """mkdtemp makes a 0700 folder; the cache folder others on a cluster read must get the umask's modes."""
    previous = os.umask(umask)
    try:
        encode(tiny_tokenizer, *small_pair, tmp_path / "ids")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "ids").stat().st_mode) == folder_mode
    files = list((tmp_path / "ids").iterdir())
    assert len(files) == 8 and {stat.S_IMODE(f.stat().st_mode) for f in files} == {file_mode}


def test_worker_count_never_changes_the_cache(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    # 200 pairs in chunks of 30: 7 chunks, so two workers really share the work
    files = tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr"
    one = encode(tiny_tokenizer, *files, tmp_path / "one", limit=20, num_proc=1)
    two = encode(tiny_tokenizer, *files, tmp_path / "two", limit=20, num_proc=2)
    assert one.size == two.size and one.dropped_long == two.dropped_long > 0
    for name in (*ARRAYS, "meta.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    src, tgt = text_pairs(*files)
    src_ids, tgt_ids = tiny_tokenizer.encode_src(src), tiny_tokenizer.encode_tgt(tgt)
    kept = [i for i in range(len(src)) if len(src_ids[i]) <= 20 and len(tgt_ids[i]) <= 20]
    dataset = TokenPairDataset(tmp_path / "two")
    assert dataset.positions.tolist() == kept
    assert all(dataset[k][1].tolist() == src_ids[p] and dataset[k][2].tolist() == tgt_ids[p] for k, p in enumerate(kept))


def test_everything_dropped_is_a_config_error(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_len drops every pair"):
        encode(tiny_tokenizer, tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr", tmp_path / "none", limit=1)
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
        result = encode(tiny_tokenizer, folder / "t.en", folder / "t.fr", folder / "ids", chunk_pairs=1000)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert result.size == pairs
        assert json.loads((folder / "ids" / "meta.json").read_text())["size"] == pairs
    assert peaks[1] < 1.2 * peaks[0], peaks


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


def test_length_index_groups_the_pairs_by_length(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    encode(tiny_tokenizer, tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr", tmp_path / "ids", limit=20)
    dataset = TokenPairDataset(tmp_path / "ids")
    index = dataset.length_index()
    src, tgt = dataset.src_lengths, dataset.tgt_lengths
    expected = np.lexsort((np.arange(len(src)), tgt, src, np.maximum(src, tgt)))  # stable: ascending index in a group
    assert isinstance(index.order, NpyReader) and index.order[:].tolist() == expected.tolist()  # read in place
    assert index.groups[:, 3].sum() == len(dataset)
    starts = np.r_[0, np.cumsum(index.groups[:, 3])]
    for (cost, s, t, _), a, b in zip(index.groups.tolist(), starts[:-1], starts[1:]):
        members = index.order[a:b]
        assert (src[members] == s).all() and (tgt[members] == t).all() and cost == max(s, t)
    assert LengthIndex.of(src, tgt).order.tolist() == expected.tolist()


@pytest.mark.parametrize("size", [0, 1, 5, 2_000])
def test_length_index_is_built_in_blocks(tmp_path: Path, size: int) -> None:
    rng = np.random.default_rng(size)
    src, tgt = rng.integers(0, 50, size), rng.integers(0, 50, size)
    np.save(tmp_path / "src_offsets.npy", np.r_[0, np.cumsum(src)].astype(np.int64))
    np.save(tmp_path / "tgt_offsets.npy", np.r_[0, np.cumsum(tgt)].astype(np.int64))
    write_length_index(tmp_path, block_pairs=97)  # many blocks: the counting sort must match one sort
    reference = LengthIndex.of(src, tgt)
    assert np.load(tmp_path / "by_length.npy").tolist() == reference.order.tolist()
    assert np.load(tmp_path / "length_groups.npy").tolist() == reference.groups.tolist()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src_offsets.npy", "tgt_offsets.npy", *INDEX_FILES])


def test_a_cache_without_length_index_gets_one(tiny_tokenizer: Tokenizer, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    """Caches written before the length index existed keep their key: the index is added on first use."""
    encode(tiny_tokenizer, tiny_parallel_dir / "train.en", tiny_parallel_dir / "train.fr", tmp_path / "ids")
    expected = TokenPairDataset(tmp_path / "ids").length_index()
    expected = (expected.order[:].tolist(), expected.groups.tolist())
    for name in INDEX_FILES:
        (tmp_path / "ids" / name).unlink()
    index = TokenPairDataset(tmp_path / "ids").length_index()
    assert (index.order[:].tolist(), index.groups.tolist()) == expected
    assert all((tmp_path / "ids" / name).is_file() for name in INDEX_FILES)


def test_workers_are_spawned_without_the_main_script() -> None:
    """spawn would run the parent's main script (train.py: Hydra, torch, Lightning) in every worker."""
    import sys

    from attnmt.data.token_cache import _main_module_hidden

    main = sys.modules["__main__"]
    with _main_module_hidden():
        hidden = sys.modules["__main__"]
        assert getattr(hidden, "__file__", None) is None and getattr(hidden, "__spec__", None) is None
    assert sys.modules["__main__"] is main
