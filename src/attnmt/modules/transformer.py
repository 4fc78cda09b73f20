"""Pre-norm Transformer encoder and decoder stacks with a key/value cache for decoding.

Shapes: B batch, S source length, T target length, D d_model, H heads, d = D / H.
Pre-norm (LayerNorm before each sub-layer, one final LayerNorm per stack) trains stably
without learning-rate warm-up tricks being critical. Which positions self-attention sees (full,
sliding window, ...) is the stack's self-attention pattern (`pattern`, modules/self_attention.py),
one object shared by its layers; cross-attention always sees the whole source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnmt.modules.attention import MultiHeadAttention
from attnmt.modules.dropout import Dropout
from attnmt.modules.self_attention import FullSelfAttention, SelfAttentionPattern


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_size: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, ff_size), nn.ReLU(), Dropout(dropout), nn.Linear(ff_size, d_model))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float, pattern: SelfAttentionPattern) -> None:
        super().__init__()
        self.pattern = pattern  # which positions self-attention sees (no parameters)
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, ff_size, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, plan) -> torch.Tensor:
        """x [B, S, D], plan: what the stack's pattern prepared for this batch -> [B, S, D]"""
        normed = self.self_norm(x)
        q = self.self_attention.project_query(normed)
        k, v = self.self_attention.project_kv(normed, normed)
        x = x + self.dropout(self.pattern.attend(self.self_attention, q, k, v, plan))
        return x + self.dropout(self.feed_forward(self.ff_norm(x)))


class TransformerEncoder(nn.Module):
    """self_attention: which positions each source position sees (default: all of them)."""

    def __init__(
        self, num_layers: int, d_model: int, heads: int, ff_size: int, dropout: float,
        self_attention: SelfAttentionPattern | None = None,
    ) -> None:
        super().__init__()
        self.pattern = self_attention or FullSelfAttention()
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ff_size, dropout, self.pattern) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """x [B, S, D] embedded source, src_mask [B, S] bool -> memory [B, S, D]"""
        # masks built once for every layer
        plan = self.pattern.prepare(src_mask, causal=False, batch=x.size(0), length=x.size(1), device=x.device)
        for layer in self.layers:
            x = layer(x, plan)
        return self.final_norm(x)


@dataclass
class LayerCache:
    """One decoder layer's keys/values while decoding N = B * beams hypotheses of B sentences.

    self_k / self_v [N0, H, t, d]: self-attention keys/values of the t positions decoded so far,
    one row per hypothesis of the previous step (TransformerState.order says which row each
    current hypothesis continues: a reorder or a drop is applied by the next step's copy).
    cross_k / cross_v [B, H, S, d]: cross-attention keys/values, computed once per sentence and
    shared by its beams, which attend to them as B groups of `beams` queries.
    """

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    @classmethod
    def start(cls, cross_k: torch.Tensor, cross_v: torch.Tensor) -> "LayerCache":
        """cross K/V [B, H, S, d] -> a cache for one hypothesis per sentence, no position decoded yet."""
        batch, heads, _, size = cross_k.shape
        empty = cross_k.new_zeros(batch, heads, 0, size)  # [B, H, 0, d]
        return cls(empty, empty, cross_k, cross_v)

    def extend(self, k: torch.Tensor, v: torch.Tensor, order: torch.Tensor | None) -> "LayerCache":
        """k / v [N, H, 1, d] of the newest position, order [N] rows of this cache each hypothesis
        continues (None: the same rows) -> cache of t + 1 positions, contiguous for the attention."""
        return LayerCache(_extend(self.self_k, k, order), _extend(self.self_v, v, order), self.cross_k, self.cross_v)

    def select_sentences(self, sentences: torch.Tensor) -> "LayerCache":
        """sentences [B'] -> the same cache with the cross K/V of those sentences only."""
        cross_k, cross_v = self.cross_k.index_select(0, sentences), self.cross_v.index_select(0, sentences)
        return LayerCache(self.self_k, self.self_v, cross_k, cross_v)


def _extend(past: torch.Tensor, new: torch.Tensor, order: torch.Tensor | None) -> torch.Tensor:
    """past [N0, H, t, d], new [N, H, 1, d], order [N] or None -> [N, H, t + 1, d] in one copy.

    Beam search reorders hypotheses every step; gathering the rows while appending copies the
    cache once per step instead of twice (torch.cat, then index_select). Measured on a 2-core CPU,
    this beat a preallocated buffer written in place: F.scaled_dot_product_attention's CPU kernel
    reads the strided prefix of such a buffer more slowly than the copy costs."""
    if order is None:
        return torch.cat([past, new], dim=2)
    if torch.is_grad_enabled() and (past.requires_grad or new.requires_grad):  # out= has no autograd
        return torch.cat([past.index_select(0, order), new], dim=2)
    extended = new.new_empty(new.size(0), new.size(1), past.size(2) + 1, new.size(3))
    torch.index_select(past, 0, order, out=extended[:, :, :-1])  # written straight into place
    extended[:, :, -1:] = new
    return extended


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float, pattern: SelfAttentionPattern) -> None:
        super().__init__()
        self.pattern = pattern  # which previous positions self-attention sees (no parameters)
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attention = MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, ff_size, dropout)
        self.dropout = Dropout(dropout)

    def start_cache(self, memory: torch.Tensor) -> LayerCache:
        """memory [B, S, D] -> cache with cross K/V computed once per sentence."""
        return LayerCache.start(*self.cross_attention.project_kv(memory, memory))  # cross K/V [B, H, S, d]

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        src_mask: torch.Tensor,
        need_weights: bool,
        plan,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: x [B, T, D], memory_kv cross K/V [B, H, S, d], src_mask [B, 1, 1, S],
        plan: what the stack's pattern prepared (causal self-attention over x)
        -> (output [B, T, D], cross weights [B, H, T, S] or None)"""
        normed = self.self_norm(x)
        q = self.self_attention.project_query(normed)
        k, v = self.self_attention.project_kv(normed, normed)  # [B, H, T, d]
        attended = self.pattern.attend(self.self_attention, q, k, v, plan)
        return self._cross_and_feed_forward(x + self.dropout(attended), memory_kv, src_mask, need_weights)

    def step(
        self, x: torch.Tensor, cache: LayerCache, order: torch.Tensor | None, src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, LayerCache, torch.Tensor | None]:
        """One position: x [N, 1, D] (N = B * beams, beams of a sentence adjacent), cache of t
        positions and the order of its rows (LayerCache.extend), src_mask [B, 1, 1, S]
        -> (output [N, 1, D], cache of t + 1 positions, cross weights [N, H, S] or None)"""
        normed = self.self_norm(x)
        q = self.self_attention.project_query(normed)
        cache = cache.extend(*self.self_attention.project_kv(normed, normed), order)  # self K/V [N, H, t+1, d]
        keys, values = self.pattern.visible(cache.self_k, cache.self_v)
        attended, _ = self.self_attention.attend(q, keys, values, None, need_weights=False)
        x = x + self.dropout(attended)
        # the beams of a sentence are that sentence's queries: [B, beams, D] against its K/V [B, H, S, d]
        batch = src_mask.size(0)
        grouped, weights = self._cross_and_feed_forward(
            x.view(batch, -1, x.size(-1)), (cache.cross_k, cache.cross_v), src_mask, need_weights
        )
        if weights is not None:  # [B, H, beams, S] -> [N, H, S]
            weights = weights.transpose(1, 2).flatten(0, 1)
        return grouped.view_as(x), cache, weights

    def _cross_and_feed_forward(
        self, x: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor], src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, Tq, D]: Tq queries per sentence (its target positions, or its beams at one position)
        -> (output [B, Tq, D], cross weights [B, H, Tq, S] or None)"""
        query = self.cross_attention.project_query(self.cross_norm(x))
        attended, weights = self.cross_attention.attend(query, memory_kv[0], memory_kv[1], src_mask, need_weights)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.ff_norm(x))), weights


class TransformerDecoder(nn.Module):
    """self_attention: which previous positions each target position sees (default: all of them)."""

    def __init__(
        self, num_layers: int, d_model: int, heads: int, ff_size: int, dropout: float,
        self_attention: SelfAttentionPattern | None = None,
    ) -> None:
        super().__init__()
        self.pattern = self_attention or FullSelfAttention()
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_size, dropout, self.pattern) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def start_cache(self, memory: torch.Tensor) -> list[LayerCache]:
        """memory [B, S, D] -> one LayerCache per layer, one hypothesis per sentence."""
        return [layer.start_cache(memory) for layer in self.layers]

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: x [B, T, D], memory [B, S, D], src_mask [B, S]
        -> (hidden [B, T, D], cross-attention [B, L, H, T, S] or None)"""
        mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        plan = self.pattern.prepare(None, causal=True, batch=x.size(0), length=x.size(1), device=x.device)  # once for every layer
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, layer.cross_attention.project_kv(memory, memory), mask, need_weights, plan)
            all_weights.append(weights)
        return self.final_norm(x), torch.stack(all_weights, dim=1) if need_weights else None

    def step(
        self, x: torch.Tensor, cache: list[LayerCache], order: torch.Tensor | None, src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, list[LayerCache], torch.Tensor | None]:
        """x [N, 1, D] newest position, caches of t positions and the order of their rows,
        src_mask [B, 1, 1, S] -> (hidden [N, D], caches of t + 1 positions, cross-attention [N, L, H, S] or None)"""
        new_cache, all_weights = [], []
        for layer, layer_cache in zip(self.layers, cache):
            x, layer_cache, weights = layer.step(x, layer_cache, order, src_mask, need_weights)
            new_cache.append(layer_cache)
            all_weights.append(weights)
        return self.final_norm(x)[:, 0], new_cache, torch.stack(all_weights, dim=1) if need_weights else None
