"""Attention with one interface for every model family.

    forward(query [B, Tq, Dq], keys [B, Tk, Dk], values [B, Tk, Dv], mask [B, 1|Tq, Tk] bool,
            need_weights=True, ...) -> (context [B, Tq, D], weights [B, H, Tq, Tk] or None)

The RNN attentions also take `projected_keys` (below) and `query_positions` [Tq], the target
step of each query, which only local attention (modules/local_attention.py) uses.

Masks follow the project convention (True = real token, keep). Padding always gets exactly zero
weight and a row with no real key at all yields zeros, never NaN, in float32, bf16 and fp16.

- AdditiveAttention: Bahdanau et al. (2015) score v^T tanh(W_q q + W_k k); H = 1. Luong's
  "concat" score is the same function, so it is built from this class too.
- DotProductAttention: Luong et al. (2015) "dot" (q . k) and, with bilinear=True, "general"
  (q . W_a k); H = 1. By default the score is divided by sqrt(d), d the query width, as in
  Vaswani et al. (2017): unscaled, the scores of a d=256 state grow with d and the softmax
  saturates within tens of updates on one source position (in Multi30k the final "."), after
  which no gradient reaches the others; `scaled=False` keeps the paper's unscaled form.
- MultiHeadAttention: scaled dot-product attention with H heads (Transformer).

How an RNN model builds its attention (the contract every RNN attention class keeps): the model
config's `attention:` is a Hydra node with `_partial_: true`; the model calls it with its sizes,
`attention(query_size=<decoder state>, key_size=<encoder annotations>, attention_size=<the hidden
width the model budgets for attention layers>)`, and gets an nn.Module with `precompute(keys)`,
`score(query, projected_keys)` and this forward pass (SingleHeadAttention). A class that needs no
hidden layer accepts attention_size and ignores it. Wrappers (local attention, sparsemax) take the
node of the score they wrap as `score` and build it with the same sizes.

Key projections depend only on the source, so the RNN attentions expose `precompute(keys)` and
accept its result as `projected_keys`; the decoder computes it once per sentence, not per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from attnmt.errors import ConfigError


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis that gives masked positions exactly zero weight.

    scores [..., Tq, Tk], mask broadcastable to it (True = keep) -> weights of the same shape.
    The dtype's most negative finite value (not -inf) keeps fully masked rows finite in the
    forward and backward pass; multiplying by the mask then turns those rows into zeros.
    """
    scores = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1) * mask


class SingleHeadAttention(nn.Module):
    """The forward pass every single-head (RNN) attention shares; subclasses give the scores.

    Subclasses implement `precompute(keys)` (key projections, once per sentence) and
    `score(query, projected_keys) -> [B, Tq, Tk]`; local attention overrides `attention_weights`.
    """

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor,
        need_weights: bool = True,
        projected_keys: torch.Tensor | None = None,
        query_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query [B, Tq, Dq], keys/values [B, Tk, D*], mask [B, 1|Tq, Tk], query_positions [Tq]
        -> (context [B, Tq, Dv], weights [B, 1, Tq, Tk] or None)."""
        if projected_keys is None:
            projected_keys = self.precompute(keys)
        weights = self.attention_weights(query, projected_keys, mask, query_positions)  # [B, Tq, Tk]
        context = torch.bmm(weights, values)  # [B, Tq, Dv]
        return context, weights.unsqueeze(1) if need_weights else None

    def attention_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> torch.Tensor:
        """Global attention: a softmax over every real key (query_positions unused) -> [B, Tq, Tk]."""
        return masked_softmax(self.score(query, projected_keys), mask)


class AdditiveAttention(SingleHeadAttention):
    """Bahdanau (additive / Luong "concat") attention: score(q, k) = v^T tanh(W_q q + W_k k)."""

    def __init__(self, query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_size, attention_size, bias=False)
        self.key_proj = nn.Linear(key_size, attention_size, bias=True)
        self.energy = nn.Linear(attention_size, 1, bias=False)

    def precompute(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [B, Tk, Dk] -> W_k k [B, Tk, A] (once per source sentence)."""
        return self.key_proj(keys)

    def score(self, query: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        """query [B, Tq, Dq], projected_keys [B, Tk, A] -> unnormalised scores [B, Tq, Tk]."""
        hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + projected_keys.unsqueeze(1))  # [B, Tq, Tk, A]
        return self.energy(hidden).squeeze(-1)


class DotProductAttention(SingleHeadAttention):
    """Luong "dot" (score q . k) or, with bilinear=True, "general" (score q . W_a k),
    divided by sqrt(query_size) when `scaled` (the default). attention_size is unused (no hidden layer)."""

    def __init__(
        self,
        query_size: int,
        key_size: int,
        attention_size: int | None = None,
        bilinear: bool = True,
        scaled: bool = True,
        config_key: str = "model.attention",
    ) -> None:
        super().__init__()
        self.scale = 1.0 / math.sqrt(query_size) if scaled else 1.0
        if not bilinear and query_size != key_size:
            raise ConfigError(
                f"{config_key}.bilinear=false (Luong's dot score) needs the decoder state size ({query_size}) to equal "
                f"the encoder output size ({key_size}); set {config_key}.bilinear=true (general) or matching sizes"
            )
        self.key_proj = nn.Linear(key_size, query_size, bias=False) if bilinear else None

    def precompute(self, keys: torch.Tensor) -> torch.Tensor:
        """keys [B, Tk, Dk] -> W_a k [B, Tk, Dq] ("general") or keys unchanged ("dot")."""
        return keys if self.key_proj is None else self.key_proj(keys)

    def score(self, query: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        """query [B, Tq, Dq], projected_keys [B, Tk, Dq] -> unnormalised scores [B, Tq, Tk]."""
        scores = torch.bmm(query, projected_keys.transpose(1, 2))
        return scores if self.scale == 1.0 else scores * self.scale


class ScoreWrapper(SingleHeadAttention):
    """An attention built around another one's score (a `score:` config node): it builds the score
    with the model's sizes (parameters under `scorer.*`) and changes only how scores become weights
    (local attention's window, sparsemax, ...). Subclasses override `attention_weights`."""

    def __init__(self, score: Callable[..., SingleHeadAttention], query_size: int, key_size: int, attention_size: int) -> None:
        super().__init__()
        self.scorer = score(query_size=query_size, key_size=key_size, attention_size=attention_size)

    def precompute(self, keys: torch.Tensor) -> torch.Tensor:
        return self.scorer.precompute(keys)

    def score(self, query: torch.Tensor, projected_keys: torch.Tensor) -> torch.Tensor:
        return self.scorer.score(query, projected_keys)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention.

    Uses F.scaled_dot_product_attention (fused kernels) when the weights are not needed and an
    explicit softmax path returning per-head weights [B, H, Tq, Tk] when they are. The pieces
    (`project_query`, `project_kv`, `attend`) are public so a decoder can cache keys/values.
    """

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, config_key: str = "model.heads") -> None:
        super().__init__()
        if heads <= 0 or d_model % heads != 0:
            raise ConfigError(f"{config_key}={heads} must be positive and divide d_model={d_model}")
        self.heads = heads
        self.head_size = d_model // heads
        self.dropout = dropout
        self.query_proj = nn.Linear(d_model, d_model)
        self.key_proj = nn.Linear(d_model, d_model)
        self.value_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, D] -> [B, H, T, D/H]"""
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_size).transpose(1, 2)

    def project_query(self, query: torch.Tensor) -> torch.Tensor:
        """query [B, Tq, D] -> [B, H, Tq, D/H]"""
        return self._split_heads(self.query_proj(query))

    def project_kv(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """keys, values [B, Tk, D] -> ([B, H, Tk, D/H], [B, H, Tk, D/H])"""
        return self._split_heads(self.key_proj(keys)), self._split_heads(self.value_proj(values))

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        need_weights: bool,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Projected q [B, H, Tq, d], k/v [B, H, Tk, d], mask [B, 1, 1|Tq, Tk] or None
        -> (context [B, Tq, D] after the output projection, weights [B, H, Tq, Tk] or None)."""
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(self.head_size)  # [B, H, Tq, Tk]
            keep = mask
            if is_causal:
                causal = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device).tril()
                keep = causal if keep is None else keep & causal
            weights = scores.softmax(dim=-1) if keep is None else masked_softmax(scores, keep)
            context = torch.matmul(F.dropout(weights, dropout, self.training), v)  # [B, H, Tq, d]
        else:
            weights = None
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)
            if mask is not None:  # rows without any real key: zeros whatever the kernel did
                context = context.masked_fill(mask.any(dim=-1, keepdim=True).logical_not(), 0.0)
        return self._merge_heads(context), weights

    def attend_windowed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan) -> torch.Tensor:
        """Sliding-window self-attention (modules/sliding_window.WindowPlan): q/k/v [B, H, S, d] -> [B, S, D]."""
        return self._merge_heads(plan.attend(q, k, v, self.dropout if self.training else 0.0))

    def _merge_heads(self, context: torch.Tensor) -> torch.Tensor:
        """context [B, H, Tq, d] -> output projection of the concatenated heads [B, Tq, D]."""
        batch, _, length, _ = context.shape
        context = context.transpose(1, 2).reshape(batch, length, self.heads * self.head_size)  # [B, Tq, D]
        return self.out_proj(context)

    def forward(
        self,
        query: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None,
        need_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """query [B, Tq, D], keys/values [B, Tk, D], mask [B, 1|Tq, Tk] bool or None
        -> (context [B, Tq, D], weights [B, H, Tq, Tk] or None)."""
        k, v = self.project_kv(keys, values)
        return self.attend(self.project_query(query), k, v, None if mask is None else mask.unsqueeze(1), need_weights, is_causal)
