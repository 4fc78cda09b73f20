"""Token-bucket sampler and collate (the token-id cache they read: test_token_cache.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnmt.data.batch import Batch
from attnmt.data.batching import TokenBucketSampler, collate
from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID

MAX_TOKENS = 300
# first 3 indices of the first 2 training batches, seed 3, epoch 2, of the `lengths` fixture
FIRST_BATCHES_SEED3_EPOCH2 = [[415, 811, 786], [932, 599, 200]]


@pytest.fixture(scope="module")
def lengths() -> tuple[np.ndarray, np.ndarray]:
    """1000 made-up (src, tgt) lengths, specials included, with a spread like real text."""
    rng = np.random.default_rng(7)
    src = rng.integers(2, 40, size=1000)
    tgt = np.clip(src + rng.integers(-5, 6, size=1000), 2, None)
    return src, tgt


def padded_cost(batch: list[int], src: np.ndarray, tgt: np.ndarray) -> int:
    return len(batch) * int(max(src[batch].max(), tgt[batch].max()))


def test_every_sentence_once_and_within_budget(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(src)))
        assert all(padded_cost(batch, src, tgt) <= MAX_TOKENS for batch in batches)
        assert len(sampler) == len(batches)


def test_similar_lengths_share_a_batch(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=3)
    random_batches = np.array_split(np.random.default_rng(0).permutation(len(src)), len(sampler))
    random_padding = 1 - sum(int(src[b].sum() + tgt[b].sum()) for b in random_batches) / sum(
        len(b) * int(src[b].max() + tgt[b].max()) for b in random_batches)
    assert sampler.padding_ratio() < 0.1 < random_padding


def test_same_seed_and_epoch_same_batches(lengths) -> None:
    src, tgt = lengths
    a = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=11)
    b = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=11)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    count = len(a)
    b.set_epoch(5)
    assert list(a) != list(b)
    assert len(b) == count  # only the composition changes between epochs, not the count
    other_seed = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=12)
    other_seed.set_epoch(4)
    assert list(other_seed) != list(a)


def test_resume_skips_trained_batches_and_moves_past_a_finished_epoch(lengths) -> None:
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=5)
    reference = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=5)
    reference.set_epoch(2)
    epoch_2 = list(reference)
    sampler.resume(2, 3)
    assert list(sampler) == epoch_2[3:]
    assert list(sampler) == epoch_2  # the skip applies to one iteration only
    # saved after the last batch of epoch 2: iterating (before any set_epoch) gives epoch 3 whole
    sampler.resume(2, len(epoch_2))
    reference.set_epoch(3)
    assert sampler.epoch == 3 and list(sampler) == list(reference)


def test_training_shards_are_disjoint_and_even(lengths) -> None:
    src, tgt = lengths
    ranks = [TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    single = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=1)
    for epoch in (0, 3):
        for sampler in ranks:
            sampler.set_epoch(epoch)
        batches = [list(sampler) for sampler in ranks]
        assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == len(ranks[1]) == len(single) // 2
        seen = [set(i for batch in rank_batches for i in batch) for rank_batches in batches]
        assert not seen[0] & seen[1]
        dropped = len(src) - len(seen[0]) - len(seen[1])
        assert (dropped > 0) == (len(single) % 2 == 1)  # only the odd remainder batch is dropped


def test_eval_shards_cover_everything_once(lengths) -> None:
    src, tgt = lengths
    ranks = [TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=False, num_replicas=2, rank=r) for r in (0, 1)]
    flat = [i for sampler in ranks for batch in sampler for i in batch]
    assert sorted(flat) == list(range(len(src)))
    widths = [int(np.maximum(src, tgt)[batch].max()) for batch in ranks[0]]
    assert widths == sorted(widths, reverse=True)  # longest first
    assert all(padded_cost(batch, src, tgt) <= MAX_TOKENS for sampler in ranks for batch in sampler)


def test_overlong_sentence_gets_its_own_batch() -> None:
    src = np.array([5, 500, 6, 7])
    tgt = np.array([5, 20, 6, 7])
    batches = list(TokenBucketSampler(src, tgt, max_tokens=64, shuffle=False))
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]


def test_padding_ratio_counts_both_sides() -> None:
    # one batch: src padded to 4 and tgt to 3 for 2 pairs = 14 cells, 2+4+3+3 = 12 real
    sampler = TokenBucketSampler([2, 4], [3, 3], max_tokens=100, shuffle=False)
    assert len(sampler) == 1
    assert sampler.padding_ratio() == pytest.approx(2 / 14)


def test_sampler_epoch_reaches_lightning_hook(lengths) -> None:
    # Lightning calls set_epoch on dataloader.batch_sampler.sampler, not on the batch sampler
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, seed=0)
    loader = torch.utils.data.DataLoader(list(range(len(src))), batch_sampler=sampler)
    loader.batch_sampler.sampler.set_epoch(6)
    assert sampler.epoch == 6


def test_padding_below_ten_percent_on_multi30k(multi30k_datamodule) -> None:
    sampler = multi30k_datamodule.sampler("train", shuffle=True)
    assert sampler.max_tokens == 4096
    assert 0.0 < sampler.padding_ratio() < 0.10


def test_collate_builds_shifted_targets() -> None:
    items = [(7, np.array([10, 11, 12]), np.array([20])), (3, np.array([13]), np.array([21, 22, 23]))]
    batch = collate(items)
    assert isinstance(batch, Batch)
    assert batch.src.tolist() == [[10, 11, 12, EOS_ID], [13, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 20, PAD_ID, PAD_ID], [BOS_ID, 21, 22, 23]]
    assert batch.tgt_out.tolist() == [[20, EOS_ID, PAD_ID, PAD_ID], [21, 22, 23, EOS_ID]]
    assert batch.src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    assert batch.tgt_mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.index.tolist() == [7, 3]
    assert batch.src.dtype == batch.tgt_in.dtype == torch.long and batch.src_mask.dtype == torch.bool


@pytest.mark.parametrize("max_tokens", [1, 37, 300, 5000])
def test_numpy_cut_matches_the_greedy_loop(lengths, max_tokens: int) -> None:
    """Sorted orders are cut in numpy (a window per batch); the result is the plain greedy loop's."""
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, max_tokens=max_tokens)
    rng = np.random.default_rng(max_tokens)
    ascending = np.lexsort((rng.random(len(src)), tgt, src, sampler.cost))
    for order in (ascending, ascending[::-1].copy(), rng.permutation(len(src))):
        fast = [b.tolist() for b in sampler._cut(order)]
        assert fast == sampler._cut_loop(order)
    for shuffle in (True, False):
        batches = list(TokenBucketSampler(src, tgt, max_tokens=max_tokens, shuffle=shuffle))
        assert all(isinstance(i, int) for i in batches[0])  # the loader gets plain index lists


def _previous_training_batches(src: np.ndarray, tgt: np.ndarray, max_tokens: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The training order of earlier versions: a full sort with a random key per pair, every epoch."""
    cost = np.maximum(src, tgt)
    rng = np.random.default_rng([seed, epoch])
    order = np.lexsort((rng.random(len(cost)), tgt, src, cost))
    batches = TokenBucketSampler(src, tgt, max_tokens, shuffle=False)._cut(order)
    return [batches[i] for i in rng.permutation(len(batches))]


@pytest.mark.parametrize("max_tokens", [1, 37, 300, 5000])
def test_training_batches_have_the_shapes_of_the_full_sort(lengths, max_tokens: int) -> None:
    """The cut made from length groups is the full sort's cut, and the batch order is the same: step
    after step the same (cost, src, tgt) lengths as before; only which equal-length pairs fill a
    batch was drawn differently (see TokenBucketSampler)."""
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, max_tokens, shuffle=True, seed=3)
    for epoch in (0, 1, 7):
        sampler.set_epoch(epoch)
        new, old = list(sampler), _previous_training_batches(src, tgt, max_tokens, 3, epoch)
        assert len(new) == len(old) == len(sampler)
        shape = lambda batch: sorted((max(src[i], tgt[i]), src[i], tgt[i]) for i in batch)  # noqa: E731
        assert [shape(b) for b in new] == [shape(b) for b in old]


def test_first_training_batches_are_fixed_for_a_seed(lengths) -> None:
    """Same seed and epoch, same batches, across versions too: a change of these numbers changes
    every run's training order (and must say so in the notes)."""
    src, tgt = lengths
    sampler = TokenBucketSampler(src, tgt, MAX_TOKENS, shuffle=True, seed=3)
    sampler.set_epoch(2)
    first = [batch[:3] for batch in list(sampler)[:2]]
    assert first == FIRST_BATCHES_SEED3_EPOCH2, first


def test_dataset_sampler_reads_no_lengths_to_train(tiny_datamodule) -> None:
    """Training batches come from the length index (read in place): the per-pair lengths are never
    read (a start costs the same for any corpus size)."""
    sampler = tiny_datamodule.sampler("train", shuffle=True)
    batches = list(sampler)
    assert sampler._lengths is None
    assert sorted(i for b in batches for i in b) == list(range(len(tiny_datamodule.dataset("train"))))
    dataset = tiny_datamodule.dataset("train")
    reference = TokenBucketSampler(dataset.src_lengths + 1, dataset.tgt_lengths + 1, sampler.max_tokens, shuffle=True,
                                   seed=tiny_datamodule.seed)
    assert batches == list(reference)
