"""Deterministic draws over streamed corpora: a keyed hash, and the sentencepiece training sample.

`mix64` turns positions into pseudo-random 64-bit keys. A draw that keys every item by its
position alone gives the same result however the stream is cut into chunks (or workers).

`training_sample` reads the training pairs once, both sides together, and keeps the sentences
sentencepiece trains on: at most `input_sentence_size` of them, those whose keys are smallest
(a uniform sample without replacement), returned in corpus order. Only the sample is held, never
the corpus; sentencepiece then gets no more sentences than it would keep, so it samples no further.
When the corpus fits (every Multi30k setting), the sample is the whole text in order: exactly what
sentencepiece was given before this module existed, so the same text trains the same model.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from attnmt.data.streaming import collector_paused

SAMPLE_SEED = 0x5EED  # keys of the training sample: same text + settings, same sample
SAMPLE_FORMAT = "sample-pairs-v1"  # part of the tokenizer cache key: change it whenever the same text would give another sample
_SIDE_BIT = np.uint64(1 << 62)  # joint sample: every source sentence sorts before every target one


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic): a bijective 64-bit hash."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class SmallestKeys:
    """The `size` items with the smallest keys offered so far (size 0: every item), with their order.

    Offers are filtered against the largest key still kept (vectorised), so after the buffer first
    fills only about size * ln(N / size) of N items are ever stored; the buffer is pruned back to
    `size` whenever it doubles.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: list[np.ndarray] = []
        self._order: list[np.ndarray] = []
        self._items: list[str] = []
        self._held = 0
        self._bound: np.uint64 | None = None  # keys >= bound can no longer be among the smallest

    def offer(self, keys: np.ndarray, order: np.ndarray, items: list[str]) -> None:
        """keys [n] uint64, order [n] uint64 (output order), items: n strings."""
        if self._bound is not None:
            take = np.flatnonzero(keys < self._bound)
            if len(take) == 0:
                return
            keys, order, items = keys[take], order[take], [items[i] for i in take.tolist()]
        self._keys.append(keys)
        self._order.append(order)
        self._items += items
        self._held += len(keys)
        if self.size and self._held > 2 * self.size:
            self._prune()

    def _prune(self) -> None:
        keys, order = np.concatenate(self._keys), np.concatenate(self._order)
        keep = np.sort(np.argpartition(keys, self.size - 1)[: self.size]) if len(keys) > self.size else np.arange(len(keys))
        self._keys, self._order = [keys[keep]], [order[keep]]
        self._items = [self._items[i] for i in keep.tolist()]
        self._held = len(keep)
        self._bound = keys[keep].max() if len(keep) == self.size else None

    def result(self) -> tuple[np.ndarray, list[str]]:
        """(order [m], items) of the kept items, m = min(size, offered), sorted by order."""
        if not self._keys:
            return np.zeros(0, np.uint64), []
        if self.size:
            self._prune()
        order = np.concatenate(self._order)
        by_order = np.argsort(order, kind="stable")
        return order[by_order], [self._items[i] for i in by_order.tolist()]


def training_sample(
    chunks: Iterable, size: int, joint: bool, shuffle: bool = True
) -> tuple[list[str], list[str]]:
    """(source sentences, target sentences) sentencepiece trains on, from one pass over `chunks`.

    `chunks`: objects with `first` (position of their first pair), `src` and `tgt` (sentence
    lists), as streaming.iter_pair_chunks yields them. `size`: sentences kept per model (0 = all):
    joint draws `size` from both sides together, otherwise `size` from each side. shuffle=False
    keeps the first sentences instead of a uniform sample (sentencepiece's own meaning of it).
    Each returned list is in corpus order; joint training reads source then target.
    Sentencepiece itself still skips sentences it never trains on (over `max_sentence_length`,
    4192 bytes by default), after this sample is drawn: on a corpus with many such lines slightly
    fewer than `size` sentences reach it.
    """
    seed = np.uint64(SAMPLE_SEED)
    sides = [SmallestKeys(size)] if joint else [SmallestKeys(size), SmallestKeys(size)]
    with collector_paused():  # a list per chunk and side, thousands of them
        for chunk in chunks:
            positions = np.arange(chunk.first, chunk.first + len(chunk.src), dtype=np.uint64)
            for side, sentences in enumerate((chunk.src, chunk.tgt)):
                order = positions | _SIDE_BIT if side and joint else positions
                keys = mix64((positions << np.uint64(1)) + np.uint64(side) + seed) if shuffle else order
                sides[0 if joint else side].offer(keys, order, sentences)
    if joint:
        order, sentences = sides[0].result()
        split = int(np.searchsorted(order, _SIDE_BIT))
        return sentences[:split], sentences[split:]
    return sides[0].result()[1], sides[1].result()[1]


def drained(items: list) -> Iterator:
    """The items in order, each dropped from the list once yielded: a sample handed to
    sentencepiece leaves Python's memory as sentencepiece copies it in (the list ends empty)."""
    items.reverse()
    while items:
        yield items.pop()
