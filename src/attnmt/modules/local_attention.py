"""Luong et al. (2015) local attention: each target step looks at a window of the source.

LocalAttention wraps one of the single-head score attentions (dot, general, concat / additive)
and keeps their forward pass (attention.SingleHeadAttention), replacing only how scores become
weights; it uses `query_positions`, the target step t of each query, which the decoder keeps
in its state.

- monotonic (local-m): window centre p_t = t, clamped to the sentence's last real position so a
  target longer than its source still attends to something.
- predictive (local-p): p_t = S_b * sigmoid(v_p^T tanh(W_p h_t)), S_b the real length of source
  sentence b; the softmax inside the window is multiplied by exp(-(s - p_t)^2 / (2 sigma^2)),
  sigma = D / 2. As in the paper the Gaussian comes after the softmax, so a row sums to at most 1.

Source positions with |s - p_t| > D, and padding, get exactly zero weight.
"""

from __future__ import annotations

import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.attention import SingleHeadAttention, masked_softmax

LOCAL_MODES = ("monotonic", "predictive")


class LocalAttention(SingleHeadAttention):
    def __init__(
        self,
        scorer: nn.Module,
        query_size: int,
        mode: str,
        half_width: int,
        predictor_size: int,
        config_key: str = "model.local_attention",
    ) -> None:
        super().__init__()
        if mode not in LOCAL_MODES:
            raise ConfigError(f"{config_key}={mode!r} must be one of {', '.join(LOCAL_MODES)} (or null for global attention)")
        if not isinstance(half_width, int) or half_width < 1:
            raise ConfigError(f"model.local_window={half_width!r} must be a positive integer (the window is 2D+1 positions)")
        self.scorer = scorer  # any attention with precompute(keys) and score(query, projected_keys)
        self.mode = mode
        self.half_width = half_width
        if mode == "predictive":
            self.position_proj = nn.Linear(query_size, predictor_size, bias=False)  # W_p
            self.position_energy = nn.Linear(predictor_size, 1, bias=False)  # v_p

    def precompute(self, keys: torch.Tensor) -> torch.Tensor:
        return self.scorer.precompute(keys)

    def centres(self, query: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
        """query [B, Tq, Dq], mask [B, 1|Tq, S], query_positions [Tq] -> window centres p_t [B, Tq] (float)."""
        lengths = mask.sum(dim=-1).to(query.dtype)  # [B, 1|Tq] real source tokens (padding is at the end)
        if self.mode == "monotonic":
            return torch.minimum(query_positions.to(query.dtype).unsqueeze(0), lengths - 1)  # [B, Tq]
        gate = torch.sigmoid(self.position_energy(torch.tanh(self.position_proj(query)))).squeeze(-1)  # [B, Tq]
        return lengths * gate

    def attention_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> torch.Tensor:
        """query [B, Tq, Dq], projected_keys [B, S, *], mask [B, 1|Tq, S] (True = real),
        query_positions [Tq] long (target step of each query) -> weights [B, Tq, S]."""
        if query_positions is None:
            raise ValueError("local attention needs query_positions (the target step of each query)")
        centres = self.centres(query, mask, query_positions)  # [B, Tq]
        source_positions = torch.arange(projected_keys.size(1), device=query.device, dtype=query.dtype)  # [S]
        distance = source_positions - centres.unsqueeze(-1)  # [B, Tq, S]
        in_window = distance.abs() <= self.half_width  # [B, Tq, S]
        weights = masked_softmax(self.scorer.score(query, projected_keys), mask & in_window)  # [B, Tq, S]
        if self.mode == "predictive":
            sigma = self.half_width / 2
            weights = weights * torch.exp(-distance.square() / (2 * sigma**2))
        return weights
