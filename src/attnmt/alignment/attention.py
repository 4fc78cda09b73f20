"""Cross-attention read as word alignment, scored per layer and head.

* `teacher_forced_attention`: the attention of the model reading the reference translation
  (Seq2Seq protocol: forward(src, src_mask, tgt_in, need_weights=True) -> [B, L, H, T, S]), so
  every variant is scored on the same target words. Row t is the attention while predicting
  target piece t (the last row predicts </s>).
* `word_attention`: pieces -> words with viz.merge_subwords (a word's source columns summed, its
  target rows averaged), grouped by the alignment's word tokens (words.word_pieces); the mass on
  </s> (and on pieces that belong to no word) goes to one extra last column, "no word".
* `attention_links`: argmax source word per target word (no link when the argmax is the extra
  column, i.e. </s>), or every link whose weight reaches a threshold.
* `AttentionScorer`: pooled AER / precision / recall for every layer and head and for the mean of
  the heads of each layer -> {"layer_<l>": {"head_<h>": {...}, "mean": {...}}} as
  metrics.attention_statistics lays out its statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnmt.alignment.links import AlignmentCounts, Link, Reference
from attnmt.alignment.words import word_pieces
from attnmt.data.vocab import BOS_ID, EOS_ID, EOS_PIECE, PAD_ID, padding_mask


@torch.no_grad()
def teacher_forced_attention(model, tokenizer, sources: Sequence[str], targets: Sequence[str], device: torch.device,
                             max_tokens: int = 4096) -> list[tuple[torch.Tensor, list[str], list[str]] | None]:
    """Cross-attention of the model reading each reference -> per pair (weights [L, H, T, S] float32
    on the CPU, source pieces + "</s>", target pieces + "</s>"); None for a pair with an empty side."""
    src_ids = tokenizer.encode_src([s.strip() for s in sources])
    tgt_ids = tokenizer.encode_tgt([t.strip() for t in targets])
    results: list[Any] = [None] * len(sources)
    order = sorted((i for i in range(len(sources)) if src_ids[i] and tgt_ids[i]),
                   key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
    batch: list[int] = []

    def run(indices: list[int]) -> None:
        width_s = max(len(src_ids[i]) for i in indices) + 1
        width_t = max(len(tgt_ids[i]) for i in indices) + 1
        src = torch.full((len(indices), width_s), PAD_ID, dtype=torch.long)
        tgt_in = torch.full((len(indices), width_t), PAD_ID, dtype=torch.long)
        for row, i in enumerate(indices):
            src[row, : len(src_ids[i])] = torch.tensor(src_ids[i])
            src[row, len(src_ids[i])] = EOS_ID
            tgt_in[row, 0] = BOS_ID
            tgt_in[row, 1: len(tgt_ids[i]) + 1] = torch.tensor(tgt_ids[i])
        src, tgt_in = src.to(device), tgt_in.to(device)
        _, attention = model(src, padding_mask(src), tgt_in, need_weights=True)  # [B, L, H, T, S]
        attention = attention.float().cpu()
        for row, i in enumerate(indices):
            s, t = len(src_ids[i]) + 1, len(tgt_ids[i]) + 1
            results[i] = (attention[row, :, :, :t, :s].clone(),
                          tokenizer.src_pieces_from_ids(src_ids[i]) + [EOS_PIECE],
                          tokenizer.tgt_pieces_from_ids(tgt_ids[i]) + [EOS_PIECE])

    for i in order:
        longest = max(len(src_ids[i]), len(tgt_ids[i])) + 1
        if batch and (len(batch) + 1) * longest > max_tokens:
            run(batch)
            batch = []
        batch.append(i)
    if batch:
        run(batch)
    return results


def word_attention(weights: torch.Tensor | np.ndarray, src_pieces: Sequence[str], tgt_pieces: Sequence[str],
                   src_words: Sequence[str], tgt_words: Sequence[str]) -> np.ndarray:
    """Piece-level attention [..., T, S] -> word-level [..., len(tgt_words), len(src_words) + 1]; the
    last column holds the weight on </s> and on pieces of no word. A target word that no piece
    starts in gets a row of zeros (it is never linked)."""
    from attnmt.viz import merge_subwords

    src_labels, src_groups = word_pieces(src_pieces, src_words)
    tgt_labels, tgt_groups = word_pieces(tgt_pieces, tgt_words)
    merged, _, _ = merge_subwords(weights, src_labels, tgt_labels)  # [..., T groups, S groups]
    columns = np.zeros((len(src_groups), len(src_words) + 1), dtype=np.float32)
    for group, word in enumerate(src_groups):
        columns[group, len(src_words) if word is None else word] = 1.0
    rows = np.zeros((len(tgt_words), len(tgt_groups)), dtype=np.float32)
    for group, word in enumerate(tgt_groups):
        if word is not None:
            rows[word, group] = 1.0
    rows /= np.maximum(rows.sum(axis=1, keepdims=True), 1.0)  # two groups of one word (rare): averaged
    return rows @ merged @ columns


def attention_links(word_weights: np.ndarray, threshold: float | None = None) -> set[Link]:
    """Links of one word-level map [T_words, S_words + 1] (last column = no word): the argmax
    source word of every target row, or with `threshold` every (source, target) with weight >= it."""
    weights = np.asarray(word_weights)
    words = weights.shape[1] - 1
    if threshold is not None:
        t, s = np.nonzero(weights[:, :words] >= threshold)
        return {(int(a), int(b)) for a, b in zip(s, t)}
    best = weights.argmax(axis=1)
    alive = weights.max(axis=1) > 0
    return {(int(s), int(t)) for t, s in enumerate(best) if alive[t] and s < words}


class AttentionScorer:
    """Accumulates, sentence by sentence, the links of every layer/head (and the mean of each
    layer's heads) against references; `scores()` -> nested dict of AER / precision / recall."""

    def __init__(self, threshold: float | None = None) -> None:
        self.threshold = threshold
        self.counts: dict[tuple[int, int | None], AlignmentCounts] = {}
        self.shape: tuple[int, int] | None = None

    def add(self, word_weights: np.ndarray, reference: Reference) -> None:
        """word_weights [L, H, T_words, S_words + 1] of one sentence."""
        layers, heads = word_weights.shape[:2]
        if self.shape is None:
            self.shape = (layers, heads)
        elif self.shape != (layers, heads):
            raise ValueError(f"attention maps disagree on [L, H]: {(layers, heads)} vs {self.shape}")
        means = word_weights.mean(axis=1)
        for layer in range(layers):
            for head in [*range(heads), None]:
                weights = means[layer] if head is None else word_weights[layer, head]
                counts = self.counts.setdefault((layer, head), AlignmentCounts())
                counts.add(attention_links(weights, self.threshold), reference)

    def scores(self) -> dict[str, dict[str, dict[str, float]]]:
        result: dict[str, dict[str, dict[str, float]]] = {}
        for (layer, head), counts in sorted(self.counts.items(), key=lambda kv: (kv[0][0], kv[0][1] is None, kv[0][1] or 0)):
            result.setdefault(f"layer_{layer}", {})["mean" if head is None else f"head_{head}"] = counts.scores()
        return result


def best_map(scores: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any] | None:
    """The layer/head (single heads and head means alike) with the lowest AER -> {"layer", "head", "aer", ...}."""
    candidates = [(values["aer"], layer, head, values) for layer, by_head in scores.items()
                  for head, values in by_head.items() if values["aer"] == values["aer"]]
    if not candidates:
        return None
    aer, layer, head, values = min(candidates, key=lambda c: c[0])
    return {"layer": layer, "head": head, **values}


def diagonal_links(src_len: int, tgt_len: int) -> set[Link]:
    """A baseline: target word j linked to source word round((j + 0.5) * S / T - 0.5)."""
    if src_len == 0:
        return set()
    return {(min(src_len - 1, max(0, round((j + 0.5) * src_len / tgt_len - 0.5))), j) for j in range(tgt_len)}
