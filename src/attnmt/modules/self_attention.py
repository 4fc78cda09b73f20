"""The Transformer's one seam for self-attention: which positions a position attends to.

A stack (encoder or decoder, modules/transformer.py) is given one of these objects, configured by
a `_target_` node in the model YAML (`model.encoder_self_attention`, `model.decoder_self_attention`),
and shares it with all its layers. Each implements three methods:

    prepare(key_mask [B, S] bool | None, causal, batch, length, device) -> plan
        once per batch per stack: the masks every layer reuses
    attend(attention: MultiHeadAttention, q, k, v [B, H, S, d], plan) -> context [B, S, D]
        teacher forcing / encoding, after the layer's own projections
    visible(k, v [N, H, t, d]) -> (k, v)
        incremental decoding: which of the t cached positions the newest one attends to

FullSelfAttention (here) is the Transformer's own; sliding_window.SlidingWindowSelfAttention is
the banded one. A new pattern is a class with these methods in its own module plus a model YAML
naming it: nothing in the stacks or the model changes. They hold no parameters, so switching one
for another never changes a checkpoint's weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from attnmt.modules.attention import MultiHeadAttention


class SelfAttentionPattern(Protocol):
    def prepare(self, key_mask: torch.Tensor | None, causal: bool, batch: int, length: int, device: torch.device) -> Any: ...

    def attend(
        self, attention: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: Any
    ) -> torch.Tensor: ...

    def visible(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class FullPlan:
    mask: torch.Tensor | None  # [B, 1, 1, S] key padding, or None
    causal: bool


@dataclass(frozen=True)
class FullSelfAttention:
    """Every position attends to every real position (causal: to itself and all before it)."""

    def prepare(self, key_mask: torch.Tensor | None, causal: bool, batch: int, length: int, device: torch.device) -> FullPlan:
        return FullPlan(None if key_mask is None else key_mask[:, None, None, :], causal)

    def attend(
        self, attention: MultiHeadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: FullPlan
    ) -> torch.Tensor:
        context, _ = attention.attend(q, k, v, plan.mask, need_weights=False, is_causal=plan.causal)
        return context

    def visible(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return k, v
