"""From token ids to padded Batches: `collate` (dataset items), `pad_sources` (text input at
inference) and `TokenBucketSampler` (which pairs share a batch, per epoch and DDP rank).

The Batch type itself is in batch.py; the token-id cache the items come from is token_cache.py.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from attnmt.data.batch import Batch
from attnmt.data.sampling import mix64
from attnmt.data.token_cache import LengthIndex, TokenPairDataset
from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, padding_mask

# collate adds one special token per side: src + EOS, BOS + tgt (tgt_in), tgt + EOS (tgt_out)
SPECIALS_PER_SIDE = 1


def collate(items: Sequence[tuple[int, Sequence[int], Sequence[int]]]) -> Batch:
    """(index, src ids, tgt ids) items -> Batch: src = ids EOS, tgt_in = BOS ids, tgt_out = ids EOS."""
    size = len(items)
    src_len = max(len(src) for _, src, _ in items) + SPECIALS_PER_SIDE
    tgt_len = max(len(tgt) for _, _, tgt in items) + SPECIALS_PER_SIDE
    src = np.full((size, src_len), PAD_ID, dtype=np.int64)  # [B, S]
    tgt_in = np.full((size, tgt_len), PAD_ID, dtype=np.int64)  # [B, T]
    tgt_out = np.full((size, tgt_len), PAD_ID, dtype=np.int64)  # [B, T]
    for row, (_, s, t) in enumerate(items):
        n, m = len(s), len(t)
        src[row, :n], src[row, n] = s, EOS_ID
        tgt_in[row, 0], tgt_in[row, 1 : m + 1] = BOS_ID, t
        tgt_out[row, :m], tgt_out[row, m] = t, EOS_ID
    src_t, tgt_out_t = torch.from_numpy(src), torch.from_numpy(tgt_out)
    return Batch(
        src=src_t,
        src_mask=padding_mask(src_t),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=tgt_out_t,
        tgt_mask=padding_mask(tgt_out_t),
        index=torch.tensor([index for index, _, _ in items], dtype=torch.long),
    )


def pad_sources(sequences: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Source id lists (no EOS) -> (src [B, S] long with EOS appended and PAD after, mask [B, S] bool).

    The inference-time twin of `collate` for sentences that come as text, not from a dataset.
    """
    if not sequences:
        raise ValueError("pad_sources needs at least one sequence")
    width = max(len(ids) for ids in sequences) + 1
    src = np.full((len(sequences), width), PAD_ID, dtype=np.int64)
    for row, ids in enumerate(sequences):
        src[row, : len(ids)] = ids
        src[row, len(ids)] = EOS_ID
    tensor = torch.from_numpy(src).to(device)
    return tensor, padding_mask(tensor)


class TokenBucketSampler(Sampler[list[int]]):
    """Batches of similar-length pairs holding at most `max_tokens` tokens, padding included.

    Cost of a batch = size * longest side in it, lengths as the collated tensors have them
    (specials included). A pair longer than `max_tokens` on its own becomes a batch of one.

    Training (shuffle=True): sort by (width, source length, target length) with random
    tie-breaks, cut greedily, shuffle the batch order; fresh per `set_epoch(e)`, identical for
    the same seed and epoch. Because ties only reorder equal lengths, the cut never changes
    between epochs (Lightning counts the batches once): it is made once, from the length groups
    of a `LengthIndex` (the token cache stores one per split), and an epoch only permutes the
    batches (numpy's generator seeded (seed, epoch), as before) and, batch by batch, which pairs
    of a length group fill its share of a batch (a keyed Feistel permutation within the group).
    So a start neither sorts nor reads the split whole: the first batch costs the same for 29k or
    29M pairs, and memory holds only the batch bounds (8 bytes per batch).
    Evaluation (shuffle=False): same sort, longest first (memory trouble shows on the first batch).
    Sharding: rank r takes batches r, r + R, ... With even=True (default for training) the
    remainder batches are dropped so every rank gets the same number (at most R - 1 batches
    per epoch, different ones each epoch); with even=False (evaluation) sentences are dealt to the
    ranks round-robin in length order before cutting, so every pair is used exactly once and every
    rank has a batch whenever there are at least R pairs.
    """

    def __init__(
        self,
        src_lengths: Sequence[int] | np.ndarray,
        tgt_lengths: Sequence[int] | np.ndarray,
        max_tokens: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        even: bool | None = None,
        index: LengthIndex | None = None,
        lengths: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None,
    ) -> None:
        """`src_lengths` / `tgt_lengths`: per pair, as the collated tensors have them. Instead of
        them, `index` (their LengthIndex) and `lengths` (a function returning them, called only if
        evaluation order or padding_ratio needs them): what `for_dataset` passes."""
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        if src_lengths is not None:
            src, tgt = np.asarray(src_lengths, dtype=np.int64), np.asarray(tgt_lengths, dtype=np.int64)
            lengths = lambda: (src, tgt)  # noqa: E731
        elif index is None or lengths is None:
            raise ValueError("give src_lengths and tgt_lengths, or index and lengths")
        self._lengths_of, self._lengths = lengths, None
        self._index = index
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.even = shuffle if even is None else even
        self.epoch = 0
        self._cached: tuple[int, list[np.ndarray]] | None = None
        self._plan: _Plan | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained) after a restart
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler`, not on the batch sampler
        self.sampler = _EpochForwarder(self)

    @classmethod
    def for_dataset(cls, dataset: TokenPairDataset, max_tokens: int, **kwargs) -> "TokenBucketSampler":
        """Batches of a cached split: its length index is read in place, its lengths only if needed."""
        return cls(None, None, max_tokens, index=dataset.length_index().shifted(SPECIALS_PER_SIDE),
                   lengths=lambda: (dataset.src_lengths + SPECIALS_PER_SIDE, dataset.tgt_lengths + SPECIALS_PER_SIDE),
                   **kwargs)

    # lengths, specials included: read (or computed) on first use only
    @property
    def src_lengths(self) -> np.ndarray:
        return self._all_lengths()[0]

    @property
    def tgt_lengths(self) -> np.ndarray:
        return self._all_lengths()[1]

    @property
    def cost(self) -> np.ndarray:
        """[N] padded width of each pair's longer side."""
        return self._all_lengths()[2]

    def _all_lengths(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._lengths is None:
            src, tgt = self._lengths_of()
            src, tgt = np.asarray(src, dtype=np.int64), np.asarray(tgt, dtype=np.int64)
            self._lengths = (src, tgt, np.maximum(src, tgt))
        return self._lengths

    @property
    def size(self) -> int:
        """Pairs in the split."""
        return self._index.size if self._index is not None else len(self._all_lengths()[0])

    @property
    def index(self) -> LengthIndex:
        if self._index is None:
            self._index = LengthIndex.of(self.src_lengths, self.tgt_lengths)
        return self._index

    @property
    def _lazy(self) -> bool:
        """Training order: made batch by batch from the length index."""
        return self.shuffle and self.even

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        """Continue epoch `epoch` after its first `batches_done` batches (restart from a checkpoint).

        `len()` stays the full epoch's count, as Lightning's batch counter resumes at batches_done;
        only the next iteration of that epoch is shortened. A checkpoint written after the epoch's
        last batch resumes at the start of the next epoch: Lightning creates the loader's iterator
        before it moves the sampler to that epoch, so the next epoch's order must be set here.
        """
        self.epoch = epoch
        if batches_done >= len(self):
            self.epoch, batches_done = epoch + 1, 0
        self._resume = (self.epoch, batches_done)

    def _cut(self, order: np.ndarray) -> list[np.ndarray]:
        """Greedy batches over `order`: each batch is a view of `order` (8 bytes per pair in all).

        Orders sorted by cost (all that this class makes) are cut in numpy, a window per batch;
        any other order goes through the plain loop. Both give the same batches.
        """
        costs = self.cost[order]
        if len(order) == 0:
            return []
        steps = np.diff(costs)
        if (steps >= 0).all():  # ascending (training): the newest pair is the widest
            bounds, start = [0], 0
            while start < len(order):
                width = self.max_tokens // max(int(costs[start]), 1) + 1  # no batch can be longer
                window = costs[start : start + width] * np.arange(1, min(width, len(order) - start) + 1)
                over = np.flatnonzero(window[1:] > self.max_tokens)
                start += 1 + (int(over[0]) if len(over) else len(window) - 1)
                bounds.append(start)
        elif (steps <= 0).all():  # descending (evaluation): the first pair is the widest
            bounds, start = [0], 0
            while start < len(order):
                start += max(1, self.max_tokens // max(int(costs[start]), 1))
                bounds.append(min(start, len(order)))
        else:
            return [np.asarray(b, dtype=np.int64) for b in self._cut_loop(order)]
        return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def _cut_loop(self, order: np.ndarray) -> list[list[int]]:
        batches, current, widest = [], [], 0
        for index, cost in zip(order.tolist(), self.cost[order].tolist()):
            wider = max(widest, cost)
            if current and wider * (len(current) + 1) > self.max_tokens:
                batches.append(current)
                current, wider = [], cost
            current.append(index)
            widest = wider
        if current:
            batches.append(current)
        return batches

    def _all_batches(self) -> list[np.ndarray]:
        """Batches of every rank for the current epoch, in order (evaluation order; with even=True)."""
        batches = self._cut(np.lexsort((-self.tgt_lengths, -self.src_lengths, -self.cost)))
        if self.even:
            batches = batches[: len(batches) // self.num_replicas * self.num_replicas]
        return batches

    def plan(self) -> "_Plan":
        """The training cut (the same every epoch), made from the length groups on first use."""
        if self._plan is None:
            self._plan = _Plan(self.index, self.max_tokens)
        return self._plan

    def _lazy_order(self) -> np.ndarray:
        """This rank's batch numbers (in the plan) for the current epoch, in training order."""
        plan = self.plan()
        rng = np.random.default_rng([self.seed, self.epoch])
        # the batch order the full sort of earlier versions drew: after one draw per pair
        rng.bit_generator.advance(self.size)
        order = rng.permutation(plan.count)
        return order[: plan.count // self.num_replicas * self.num_replicas][self.rank :: self.num_replicas]

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch: int64 index arrays."""
        if self._cached is None or self._cached[0] != self.epoch:
            if self._lazy:
                plan, keys = self.plan(), _epoch_keys(self.seed, self.epoch)
                mine = [plan.batch(int(j), keys) for j in self._lazy_order()]
            elif self.even:
                mine = self._all_batches()[self.rank :: self.num_replicas]
            else:
                # evaluation: deal sentences (not batches) round-robin in length order, so every
                # rank gets a batch even when the whole split fits in one, and similar work
                order = np.lexsort((-self.tgt_lengths, -self.src_lengths, -self.cost))
                mine = self._cut(order[self.rank :: self.num_replicas])
            self._cached = (self.epoch, mine)
        return self._cached[1]

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._resume is not None:
            epoch, done = self._resume
            skip = done if epoch == self.epoch else 0
            self._resume = None
        if self._lazy:  # batch by batch: the first one costs no more for a big split
            return self._iter_lazy(self.epoch, skip)
        return (batch.tolist() for batch in self.batches()[skip:])

    def _iter_lazy(self, epoch: int, skip: int) -> Iterator[list[int]]:
        plan, keys = self.plan(), _epoch_keys(self.seed, epoch)
        for j in self._lazy_order()[skip:].tolist():
            yield plan.batch(j, keys).tolist()

    def __len__(self) -> int:
        if self._lazy:
            return self.plan().count // self.num_replicas
        return len(self.batches())

    def padding_ratio(self) -> float:
        """Fraction of this rank's batch tensor cells (src + tgt) that are padding."""
        real = padded = 0
        for batch in self.batches():
            src, tgt = self.src_lengths[batch], self.tgt_lengths[batch]
            real += int(src.sum() + tgt.sum())
            padded += len(batch) * int(src.max() + tgt.max())
        return 1.0 - real / padded if padded else 0.0


def _epoch_keys(seed: int, epoch: int) -> np.ndarray:
    """Round keys of the within-group shuffles of one epoch."""
    return np.random.SeedSequence([seed, epoch, 0x7A11]).generate_state(4, np.uint64)


def _shuffled(positions: np.ndarray, size: int, keys: np.ndarray) -> np.ndarray:
    """A keyed pseudo-random permutation of range(size), at `positions` (a Feistel network on
    the smallest even number of bits that holds size - 1, cycle-walking back into range)."""
    if size <= 1:
        return positions
    half = max(1, ((size - 1).bit_length() + 1) // 2)
    shift, mask = np.uint64(half), np.uint64((1 << half) - 1)
    values = positions.astype(np.uint64)
    todo = np.arange(len(values))
    while len(todo):
        x = values[todo]
        for key in keys:
            left, right = x >> shift, x & mask
            x = (right << shift) | (left ^ (mix64(right ^ key) & mask))
        values[todo] = x
        todo = todo[x >= np.uint64(size)]
    return values.astype(np.int64)


class _Plan:
    """The training cut of a LengthIndex for `max_tokens`: batch j holds sorted positions
    bounds[j]..bounds[j + 1] (pairs ordered by cost, source, target length; ties in an order
    that changes every epoch). The same greedy cut as `_cut` on an ascending order, made from the
    length groups (a few thousand) instead of the pairs."""

    def __init__(self, index: LengthIndex, max_tokens: int) -> None:
        self.index = index
        groups = index.groups
        self.costs = groups[:, 0]
        self.starts = np.concatenate([[0], np.cumsum(groups[:, 3])]).astype(np.int64)  # [K + 1]
        self.keys = mix64(np.arange(len(groups), dtype=np.uint64) + np.uint64(1))  # one per group
        # runs of equal cost (the cut depends on costs only)
        change = np.flatnonzero(np.r_[True, self.costs[1:] != self.costs[:-1]]) if len(groups) else np.zeros(0, np.int64)
        run_costs, run_starts = self.costs[change], self.starts[change]
        run_ends = np.r_[run_starts[1:], self.starts[-1]]
        bounds, start, run, total = [0], 0, 0, int(self.starts[-1])
        while start < total:
            # batch from `start`: pair k (0-based) fits while (k + 1) * its cost <= max_tokens
            while run_ends[run] <= start:
                run += 1
            end, r = total, run
            while r < len(run_costs):
                first_over = max(int(run_starts[r]), start + max_tokens // int(run_costs[r]))
                if first_over < run_ends[r]:
                    end = max(first_over, start + 1)
                    break
                r += 1
            bounds.append(end)
            start = end
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.count = len(bounds) - 1

    def batch(self, j: int, keys: np.ndarray) -> np.ndarray:
        """Dataset indices of batch j for the epoch whose keys are `keys`."""
        lo, hi = int(self.bounds[j]), int(self.bounds[j + 1])
        g = int(np.searchsorted(self.starts, lo, side="right")) - 1
        parts = []
        while lo < hi:
            first, end = int(self.starts[g]), int(self.starts[g + 1])
            take = np.arange(lo - first, min(hi, end) - first, dtype=np.int64)
            parts.append(np.asarray(self.index.order[first + _shuffled(take, end - first, keys ^ self.keys[g])]))
            lo, g = min(hi, end), g + 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class _EpochForwarder(Sampler[int]):
    """`batch_sampler.sampler` for Lightning: forwards set_epoch, iterates the indices in order."""

    def __init__(self, owner: TokenBucketSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._owner.size))

    def __len__(self) -> int:
        return self._owner.size
