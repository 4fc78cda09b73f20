"""Luong et al. (2015) local attention: each target step looks at a window of the source.

A local attention wraps one of the single-head score attentions (dot, general, concat / additive),
given as the config node `score`, and keeps their forward pass (attention.SingleHeadAttention),
replacing only how scores become weights; it uses `query_positions`, the target step t of each
query, which the decoder keeps in its state. Two classes, one per way of placing the window:

- MonotonicLocalAttention (local-m): window centre p_t = t, clamped to the sentence's last real
  position so a target longer than its source still attends to something.
- PredictiveLocalAttention (local-p): p_t = S_b * sigmoid(v_p^T tanh(W_p h_t)), S_b the real
  length of source sentence b; the softmax inside the window is multiplied by
  exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D / 2. As in the paper the Gaussian comes after the
  softmax, so a row sums to at most 1. W_p is attention_size wide.

Source positions with |s - p_t| > D (D = half_width), and padding, get exactly zero weight.

    attention:
      _target_: attnmt.modules.local_attention.PredictiveLocalAttention
      _partial_: true
      half_width: 5
      score: {_target_: attnmt.modules.attention.DotProductAttention, _partial_: true, bilinear: true}
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.attention import ScoreWrapper, SingleHeadAttention, masked_softmax


def source_lengths(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """mask [B, 1|Tq, S] -> real source tokens [B, 1|Tq] (padding is at the end)."""
    return mask.sum(dim=-1).to(dtype)


class LocalAttention(ScoreWrapper):
    """The window around any score; subclasses say where its centre is (`centres`)."""

    def __init__(
        self,
        score: Callable[..., SingleHeadAttention],
        query_size: int,
        key_size: int,
        attention_size: int,
        half_width: int = 5,
        config_key: str = "model.attention",
    ) -> None:
        if not isinstance(half_width, int) or isinstance(half_width, bool) or half_width < 1:
            raise ConfigError(f"{config_key}.half_width={half_width!r} must be a positive integer (the window is 2D+1 positions)")
        super().__init__(score, query_size, key_size, attention_size)
        self.half_width = half_width
        self.build_centre_layers(query_size, attention_size)

    def build_centre_layers(self, query_size: int, attention_size: int) -> None:
        """Parameters that place the window (none by default); called once the score is built."""

    def centres(self, query: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        """query [B, Tq, Dq], mask [B, 1|Tq, S], query_positions [Tq] -> window centres p_t [B, Tq] (float)."""
        raise NotImplementedError

    def window_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (softmax of the scores inside the window [B, Tq, S], distance s - p_t [B, Tq, S])."""
        if query_positions is None:
            raise ValueError("local attention needs query_positions (the target step of each query)")
        centres = self.centres(query, mask, query_positions)  # [B, Tq]
        source_positions = torch.arange(projected_keys.size(1), device=query.device, dtype=query.dtype)  # [S]
        distance = source_positions - centres.unsqueeze(-1)  # [B, Tq, S]
        in_window = distance.abs() <= self.half_width  # [B, Tq, S]
        return masked_softmax(self.score(query, projected_keys), mask & in_window), distance

    def attention_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> torch.Tensor:
        """query [B, Tq, Dq], projected_keys [B, S, *], mask [B, 1|Tq, S] (True = real),
        query_positions [Tq] long (target step of each query) -> weights [B, Tq, S]."""
        return self.window_weights(query, projected_keys, mask, query_positions)[0]


class MonotonicLocalAttention(LocalAttention):
    """Luong's local-m: the window is centred on the target step t (monotonic alignment assumed)."""

    def centres(self, query: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        lengths = source_lengths(mask, query.dtype)
        return torch.minimum(query_positions.to(query.dtype).unsqueeze(0), lengths - 1)  # [B, Tq]


class PredictiveLocalAttention(LocalAttention):
    """Luong's local-p: the decoder predicts the window centre and a Gaussian (sigma = D/2) weights it."""

    def build_centre_layers(self, query_size: int, attention_size: int) -> None:
        self.position_proj = nn.Linear(query_size, attention_size, bias=False)  # W_p
        self.position_energy = nn.Linear(attention_size, 1, bias=False)  # v_p

    def centres(self, query: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        lengths = source_lengths(mask, query.dtype)
        gate = torch.sigmoid(self.position_energy(torch.tanh(self.position_proj(query)))).squeeze(-1)  # [B, Tq]
        return lengths * gate  # [B, Tq]

    def attention_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> torch.Tensor:
        weights, distance = self.window_weights(query, projected_keys, mask, query_positions)
        sigma = self.half_width / 2
        return weights * torch.exp(-distance.square() / (2 * sigma**2))
