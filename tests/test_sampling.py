"""The sentencepiece training sample: one pass, deterministic, uniform, whole text when it fits."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from attnmt.data.sampling import SmallestKeys, drained, mix64, training_sample
from attnmt.data.streaming import collector_paused, iter_pair_chunks
from attnmt.data.tokenizer import Tokenizer, TokenizerSettings


def write_corpus(folder: Path, pairs: int) -> tuple[Path, Path]:
    src, tgt = folder / "train.en", folder / "train.fr"
    src.write_text("".join(f"source sentence number {i} with word{i % 97}\n" for i in range(pairs)))
    # a blank target every 50 lines: those pairs are not part of the usable text
    tgt.write_text("".join("\n" if i % 50 == 7 else f"phrase cible {i} mot{i % 89}\n" for i in range(pairs)))
    return src, tgt


def sample(files, size: int, joint: bool, chunk_pairs: int = 8192, shuffle: bool = True):
    return training_sample(iter_pair_chunks(*files, chunk_pairs=chunk_pairs), size, joint, shuffle)


@pytest.mark.parametrize("joint", [True, False])
def test_the_sample_does_not_depend_on_how_the_text_is_chunked(tmp_path: Path, joint: bool) -> None:
    files = write_corpus(tmp_path, 3000)
    first = sample(files, 700, joint, chunk_pairs=3)
    assert sample(files, 700, joint, chunk_pairs=128) == first == sample(files, 700, joint, chunk_pairs=10_000)
    assert sum(map(len, first)) == (700 if joint else 1400)


@pytest.mark.parametrize("joint", [True, False])
def test_a_sample_as_large_as_the_text_is_the_text_in_order(tmp_path: Path, joint: bool) -> None:
    files = write_corpus(tmp_path, 500)
    chunks = list(iter_pair_chunks(*files))
    src = [s for c in chunks for s in c.src]
    tgt = [t for c in chunks for t in c.tgt]
    assert len(src) == 490  # pairs with a blank side are not training text
    for size in (0, 980, 5000):
        assert sample(files, size, joint, chunk_pairs=64) == (src, tgt)


def test_a_joint_sample_is_uniform_over_both_sides_and_keeps_corpus_order(tmp_path: Path) -> None:
    files = write_corpus(tmp_path, 20_000)
    src, tgt = sample(files, 4000, joint=True, chunk_pairs=1000)
    assert len(src) + len(tgt) == 4000
    assert 0.45 < len(src) / 4000 < 0.55  # each side about half of the joint sample
    numbers = [int(s.split()[3]) for s in src]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert 0.45 < np.mean(np.asarray(numbers) < 10_000) < 0.55  # first and second half alike
    all_src = {s for c in iter_pair_chunks(*files) for s in c.src}
    assert set(src) <= all_src


def test_without_shuffling_the_sample_is_the_first_sentences(tmp_path: Path) -> None:
    files = write_corpus(tmp_path, 1000)
    src_all = [s for c in iter_pair_chunks(*files) for s in c.src]
    src, tgt = sample(files, 300, joint=True, shuffle=False, chunk_pairs=70)
    assert (src, tgt) == (src_all[:300], [])


def test_smallest_keys_keeps_exactly_the_smallest(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    keys = mix64(rng.permutation(50_000).astype(np.uint64))
    items = [f"item {i}" for i in range(len(keys))]
    kept = SmallestKeys(1234)
    for lo in range(0, len(keys), 999):
        hi = min(lo + 999, len(keys))
        kept.offer(keys[lo:hi], np.arange(lo, hi, dtype=np.uint64), items[lo:hi])
    order, chosen = kept.result()
    expected = np.sort(np.argsort(keys)[:1234])
    assert order.tolist() == expected.tolist()
    assert chosen == [items[i] for i in expected]


def test_a_sample_holding_the_whole_text_trains_the_model_the_text_trains(tmp_path: Path) -> None:
    files = write_corpus(tmp_path, 400)
    settings = TokenizerSettings(vocab_size=120, input_sentence_size=10_000)

    def side(index: int):
        for chunk in iter_pair_chunks(*files):
            yield from (chunk.src if index == 0 else chunk.tgt)

    streamed = Tokenizer.train(lambda: side(0), lambda: side(1), settings)
    sampled = Tokenizer.train(*sample(files, settings.input_sentence_size, joint=True), settings)
    assert sampled.fingerprint == streamed.fingerprint


def test_the_collector_is_paused_inside_and_restored_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError):
        with collector_paused():
            raise RuntimeError("a failed build")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


def test_a_drained_list_yields_in_order_and_ends_empty() -> None:
    items = ["a", "b", "c"]
    assert list(drained(items)) == ["a", "b", "c"] and items == []
