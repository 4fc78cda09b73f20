"""Sliding-window (banded) self-attention: position i attends to positions j with |i - j| <= w
(j in [i - w, i] when causal), the local pattern of Longformer-style sparse attention.

Two exact implementations of the same function:
- blocked (long inputs): the sequence is cut into blocks of w queries; each block attends to the
  keys of its own block and its neighbours (3w keys, 2w when causal), masked to the band. Scores
  and memory grow as S * 3w instead of S^2, with plain tensor ops, so it runs on any device and
  inside autograd. The attention itself still goes through F.scaled_dot_product_attention.
- masked (short inputs, where blocking would not save work): full attention with a band mask.
`WindowPlan.build` picks one per batch and builds its masks once; every layer reuses them.
SlidingWindowSelfAttention is the Transformer's seam object (modules/self_attention.py) for it:

    encoder_self_attention: {_target_: attnmt.modules.sliding_window.SlidingWindowSelfAttention, window: 4}

A query keeps its own position as a key even when that position is padding, so no row is ever
fully masked (padding queries produce values nobody reads; real queries never see padding keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from attnmt.errors import ConfigError
from attnmt.modules.attention import MultiHeadAttention


def band(length_q: int, length_k: int, window: int, causal: bool, device: torch.device) -> torch.Tensor:
    """[Tq, Tk] bool, True where key j is within `window` of query i: |i - j| <= w (and j <= i if causal)."""
    relative = torch.arange(length_k, device=device)[None, :] - torch.arange(length_q, device=device)[:, None]
    keep = relative.abs() <= window
    return keep & (relative <= 0) if causal else keep


def keys_around_block(window: int, causal: bool) -> tuple[int, int]:
    """Blocked path: keys before and after a block of w queries: (w, w), or (w, 0) when causal."""
    return window, 0 if causal else window


@dataclass
class WindowPlan:
    """How one batch's windowed self-attention runs, with its masks built once.

    blocked: mask [B * n, 1, w, K] over n blocks of w queries and K = 3w (2w causal) keys
    masked:  mask [B, 1, S, S]
    """

    window: int
    causal: bool
    blocked: bool
    mask: torch.Tensor


    @classmethod
    def build(cls, key_mask: torch.Tensor | None, window: int, causal: bool, batch: int, length: int,
              device: torch.device, force_blocked: bool | None = None) -> "WindowPlan":
        """key_mask [B, S] bool (True = real) or None (no padding to hide).
        force_blocked: None lets the length decide (blocked from S >= 4w on); tests force either path."""
        blocked = length >= 4 * window if force_blocked is None else force_blocked
        valid = key_mask if key_mask is not None else torch.ones(batch, length, dtype=torch.bool, device=device)
        if not blocked:
            keep = band(length, length, window, causal, device) & valid[:, None, :]  # [B, S, S]
            keep = keep | torch.eye(length, dtype=torch.bool, device=device)  # a query always sees itself
            return cls(window, causal, False, keep.unsqueeze(1))
        w, n = window, -(-length // window)
        behind, ahead = keys_around_block(window, causal)
        key_span = behind + w + ahead
        padded = F.pad(valid, (behind, n * w - length + ahead), value=False)  # [B, behind + n*w + ahead]
        key_valid = padded.unfold(1, key_span, w)  # [B, n, K]
        relative = torch.arange(key_span, device=device)[None, :] - behind - torch.arange(w, device=device)[:, None]  # [w, K]
        in_band = relative.abs() <= w
        if causal:
            in_band &= relative <= 0
        keep = in_band & key_valid[:, :, None, :]  # [B, n, w, K]
        keep = keep | (relative == 0)  # a query always sees itself
        return cls(window, causal, True, keep.flatten(0, 1).unsqueeze(1))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
        """q, k, v [B, H, S, d] -> context [B, H, S, d]."""
        if not self.blocked:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, dropout_p=dropout)
        batch, heads, length, size = q.shape
        w, n = self.window, -(-length // self.window)
        behind, ahead = keys_around_block(w, self.causal)

        def key_windows(x: torch.Tensor) -> torch.Tensor:  # [B, H, S, d] -> [B * n, H, K, d]
            x = F.pad(x, (0, 0, behind, n * w - length + ahead))  # [B, H, behind + n*w + ahead, d]
            x = x.unfold(2, behind + w + ahead, w)  # [B, H, n, d, K]
            return x.permute(0, 2, 1, 4, 3).flatten(0, 1)

        blocks = F.pad(q, (0, 0, 0, n * w - length)).view(batch, heads, n, w, size)  # [B, H, n, w, d]
        blocks = blocks.transpose(1, 2).flatten(0, 1)  # [B * n, H, w, d]
        context = F.scaled_dot_product_attention(blocks, key_windows(k), key_windows(v), attn_mask=self.mask, dropout_p=dropout)
        context = context.view(batch, n, heads, w, size).transpose(1, 2).flatten(2, 3)  # [B, H, n*w, d]
        return context[:, :, :length]


@dataclass(frozen=True)
class SlidingWindowSelfAttention:
    """Self-attention within `window` positions on each side (causal: itself and the `window` before it)."""

    window: int

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ConfigError(
                f"self-attention window={self.window!r} (model.encoder_self_attention / model.decoder_self_attention) "
                "must be a positive number of positions; use FullSelfAttention for full attention"
            )

    def prepare(self, key_mask: torch.Tensor | None, causal: bool, batch: int, length: int, device: torch.device) -> WindowPlan:
        return WindowPlan.build(key_mask, self.window, causal=causal, batch=batch, length=length, device=device)

    def attend(
        self, attention: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: WindowPlan
    ) -> torch.Tensor:
        return attention.attend_windowed(q, k, v, plan)

    def visible(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoding: the last window + 1 cached positions."""
        return k[:, :, -self.window - 1 :], v[:, :, -self.window - 1 :]
