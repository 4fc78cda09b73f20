"""From token ids to padded Batches: `collate` (dataset items), `pad_sources` (text input at
inference) and `TokenBucketSampler` (which pairs share a batch, per epoch and DDP rank).

The Batch type itself is in batch.py; the token-id cache the items come from is token_cache.py.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from attnmt.data.batch import Batch
from attnmt.data.token_cache import TokenPairDataset
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
    the same seed and epoch. Because ties only reorder equal lengths, the number of batches
    never changes between epochs (Lightning counts them once).
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
    ) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = np.asarray(tgt_lengths, dtype=np.int64)
        self.cost = np.maximum(self.src_lengths, self.tgt_lengths)  # padded width of a pair's longer side
        self.max_tokens, self.shuffle, self.seed = max_tokens, shuffle, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.even = shuffle if even is None else even
        self.epoch = 0
        self._cached: tuple[int, list[list[int]]] | None = None
        self._resume: tuple[int, int] | None = None  # (epoch, batches already trained) after a restart
        # Lightning calls set_epoch on `dataloader.batch_sampler.sampler`, not on the batch sampler
        self.sampler = _EpochForwarder(self)

    @classmethod
    def for_dataset(cls, dataset: TokenPairDataset, max_tokens: int, **kwargs) -> "TokenBucketSampler":
        return cls(dataset.src_lengths + SPECIALS_PER_SIDE, dataset.tgt_lengths + SPECIALS_PER_SIDE, max_tokens, **kwargs)

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
        if batches_done >= len(self.batches()):
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
        """Batches of every rank for the current epoch, in order."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            # by padded width, then source length (halves the padding on the shorter side), ties at random
            order = np.lexsort((rng.random(len(self.cost)), self.tgt_lengths, self.src_lengths, self.cost))
            batches = self._cut(order)
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches = self._cut(np.lexsort((-self.tgt_lengths, -self.src_lengths, -self.cost)))
        if self.even:
            batches = batches[: len(batches) // self.num_replicas * self.num_replicas]
        return batches

    def batches(self) -> list[np.ndarray]:
        """This rank's batches for the current epoch: int64 index arrays (views of one sort order)."""
        if self._cached is None or self._cached[0] != self.epoch:
            if self.even:
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
        return (batch.tolist() for batch in self.batches()[skip:])

    def __len__(self) -> int:
        return len(self.batches())

    def padding_ratio(self) -> float:
        """Fraction of this rank's batch tensor cells (src + tgt) that are padding."""
        real = padded = 0
        for batch in self.batches():
            src, tgt = self.src_lengths[batch], self.tgt_lengths[batch]
            real += int(src.sum() + tgt.sum())
            padded += len(batch) * int(src.max() + tgt.max())
        return 1.0 - real / padded if padded else 0.0


class _EpochForwarder(Sampler[int]):
    """`batch_sampler.sampler` for Lightning: forwards set_epoch, iterates the indices in order."""

    def __init__(self, owner: TokenBucketSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self._owner.cost)))

    def __len__(self) -> int:
        return len(self._owner.cost)
