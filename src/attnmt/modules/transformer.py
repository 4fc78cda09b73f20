"""Pre-norm Transformer encoder and decoder stacks with a key/value cache for decoding.

Shapes: B batch, S source length, T target length, D d_model, H heads, d = D / H.
Pre-norm (LayerNorm before each sub-layer, one final LayerNorm per stack) trains stably
without learning-rate warm-up tricks being critical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnmt.modules.attention import MultiHeadAttention
from attnmt.modules.dropout import Dropout
from attnmt.modules.sliding_window import WindowPlan


class FeedForward(nn.Sequential):
    def __init__(self, d_model: int, ff_size: int, dropout: float) -> None:
        super().__init__(nn.Linear(d_model, ff_size), nn.ReLU(), Dropout(dropout), nn.Linear(ff_size, d_model))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, ff_size, dropout)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, window: WindowPlan | None = None) -> torch.Tensor:
        """x [B, S, D], mask [B, 1, 1, S], window: sliding-window plan or None (full attention) -> [B, S, D]"""
        normed = self.self_norm(x)
        q = self.self_attention.project_query(normed)
        k, v = self.self_attention.project_kv(normed, normed)
        if window is None:
            attended, _ = self.self_attention.attend(q, k, v, mask, need_weights=False)
        else:
            attended = self.self_attention.attend_windowed(q, k, v, window)
        x = x + self.dropout(attended)
        return x + self.dropout(self.feed_forward(self.ff_norm(x)))


class TransformerEncoder(nn.Module):
    """window: None for full self-attention, or w: each position attends to w positions each side."""

    def __init__(self, num_layers: int, d_model: int, heads: int, ff_size: int, dropout: float, window: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, heads, ff_size, dropout) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.window = window

    def forward(self, x: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """x [B, S, D] embedded source, src_mask [B, S] bool -> memory [B, S, D]"""
        mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        plan = None
        if self.window is not None:  # masks built once for every layer
            plan = WindowPlan.build(src_mask, self.window, causal=False, batch=x.size(0), length=x.size(1), device=x.device)
        for layer in self.layers:
            x = layer(x, mask, plan)
        return self.final_norm(x)


@dataclass
class LayerCache:
    """Per decoder layer: self-attention K/V grow by one position per step; cross K/V are fixed.

    self_k / self_v [B, H, t, d], cross_k / cross_v [B, H, S, d]
    """

    self_k: torch.Tensor
    self_v: torch.Tensor
    cross_k: torch.Tensor
    cross_v: torch.Tensor

    def index_select(self, index: torch.Tensor) -> "LayerCache":
        return LayerCache(*(t.index_select(0, index) for t in (self.self_k, self.self_v, self.cross_k, self.cross_v)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float, window: int | None = None) -> None:
        super().__init__()
        self.window = window  # causal sliding window of self-attention, None = all previous positions
        self.self_norm = nn.LayerNorm(d_model)
        self.self_attention = MultiHeadAttention(d_model, heads, dropout)
        self.cross_norm = nn.LayerNorm(d_model)
        self.cross_attention = MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, ff_size, dropout)
        self.dropout = Dropout(dropout)

    def empty_cache(self, memory: torch.Tensor) -> LayerCache:
        """memory [B, S, D] -> cache with cross K/V computed once and empty self K/V."""
        cross_k, cross_v = self.cross_attention.project_kv(memory, memory)  # [B, H, S, d]
        empty = cross_k.new_zeros(cross_k.size(0), cross_k.size(1), 0, cross_k.size(3))  # [B, H, 0, d]
        return LayerCache(empty, empty, cross_k, cross_v)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        src_mask: torch.Tensor,
        need_weights: bool,
        self_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
        window: WindowPlan | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, D], memory_kv cross K/V [B, H, S, d], src_mask [B, 1, 1, S].

        self_kv None: teacher forcing, causal self-attention over x (windowed when `window` is given).
        self_kv given: incremental step (T = 1), attend over the cache plus x (its last
        self.window + 1 positions when the layer has a window).
        -> (output [B, T, D], cross weights [B, H, T, S] or None, self K/V including x)
        """
        normed = self.self_norm(x)
        q = self.self_attention.project_query(normed)
        k, v = self.self_attention.project_kv(normed, normed)  # [B, H, T, d]
        if self_kv is not None:
            k, v = torch.cat([self_kv[0], k], dim=2), torch.cat([self_kv[1], v], dim=2)  # [B, H, t+1, d]
        if window is not None:  # teacher forcing with a causal sliding window
            attended = self.self_attention.attend_windowed(q, k, v, window)
        elif self_kv is not None and self.window is not None:  # one step: the window is the last w+1 positions
            attended, _ = self.self_attention.attend(q, k[:, :, -self.window - 1 :], v[:, :, -self.window - 1 :], None, False)
        else:
            attended, _ = self.self_attention.attend(q, k, v, None, need_weights=False, is_causal=self_kv is None)
        x = x + self.dropout(attended)
        query = self.cross_attention.project_query(self.cross_norm(x))
        attended, weights = self.cross_attention.attend(query, memory_kv[0], memory_kv[1], src_mask, need_weights)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.feed_forward(self.ff_norm(x)))
        return x, weights, (k, v)


class TransformerDecoder(nn.Module):
    """window: None for full causal self-attention, or w: each position attends to itself and the w before it."""

    def __init__(self, num_layers: int, d_model: int, heads: int, ff_size: int, dropout: float, window: int | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_size, dropout, window) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)
        self.window = window

    def init_cache(self, memory: torch.Tensor) -> list[LayerCache]:
        return [layer.empty_cache(memory) for layer in self.layers]

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, need_weights: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher forcing: x [B, T, D], memory [B, S, D], src_mask [B, S]
        -> (hidden [B, T, D], cross-attention [B, L, H, T, S] or None)"""
        mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        plan = None
        if self.window is not None:
            plan = WindowPlan.build(None, self.window, causal=True, batch=x.size(0), length=x.size(1), device=x.device)
        all_weights = []
        for layer in self.layers:
            x, weights, _ = layer(x, layer.cross_attention.project_kv(memory, memory), mask, need_weights, window=plan)
            all_weights.append(weights)
        return self.final_norm(x), torch.stack(all_weights, dim=1) if need_weights else None

    def step(
        self, x: torch.Tensor, cache: list[LayerCache], src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[LayerCache], torch.Tensor]:
        """x [B, 1, D] newest position, src_mask [B, 1, 1, S]
        -> (hidden [B, D], new cache, cross-attention [B, L, H, S])"""
        new_cache, all_weights = [], []
        for layer, layer_cache in zip(self.layers, cache):
            x, weights, (k, v) = layer(
                x, (layer_cache.cross_k, layer_cache.cross_v), src_mask, True, (layer_cache.self_k, layer_cache.self_v)
            )
            new_cache.append(LayerCache(k, v, layer_cache.cross_k, layer_cache.cross_v))
            all_weights.append(weights[:, :, 0])  # [B, H, S]
        return self.final_norm(x)[:, 0], new_cache, torch.stack(all_weights, dim=1)
