"""Sparsemax attention (Martins & Astudillo, 2016; in NMT: Malaviya et al., 2018): the weights are
the Euclidean projection of the scores onto the probability simplex instead of their softmax.

    sparsemax(z)_j = max(z_j - tau(z), 0),   tau such that the weights sum to 1

Most source positions get exactly zero weight, so each target word attends to a few source words:
sharper alignments for the attention maps, statistics and AER than a softmax, which is never
exactly 0. It replaces only the normaliser, so it wraps any score (dot, general, concat /
additive), given as the config node `score` and built with the model's sizes:

    attention:
      _target_: attnmt.modules.sparsemax_attention.SparsemaxAttention
      _partial_: true
      score: {_target_: attnmt.modules.attention.DotProductAttention, _partial_: true, bilinear: true}

Padding gets exactly zero weight and a row without any real key gets zeros, as with softmax.
"""

from __future__ import annotations

import torch

from attnmt.modules.attention import ScoreWrapper


def masked_sparsemax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """scores [..., Tk], mask broadcastable to it (True = keep) -> weights of the same shape.

    Sort, find the support {j : 1 + k z_(k) > sum_{i<=k} z_(i)}, tau = (sum of the support - 1) / k.
    Masked keys are put 1 below the row's best real score, where tau >= max - 1 keeps them out of
    the support, so every number stays finite; autograd through tau gives the sparsemax Jacobian.
    """
    mask = mask.expand_as(scores)
    best = scores.detach().masked_fill(mask.logical_not(), float("-inf")).amax(dim=-1, keepdim=True)
    best = torch.where(torch.isfinite(best), best, torch.zeros_like(best))  # rows without a real key
    z = torch.where(mask, scores, best - 1)
    ordered = z.sort(dim=-1, descending=True).values
    cumulative = ordered.cumsum(dim=-1)
    k = torch.arange(1, z.size(-1) + 1, device=z.device, dtype=z.dtype)
    support = (1 + k * ordered > cumulative).sum(dim=-1, keepdim=True)  # >= 1: the largest is always in
    tau = (cumulative.gather(-1, support - 1) - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0) * mask


class SparsemaxAttention(ScoreWrapper):
    """Any single-head score, normalised by sparsemax instead of softmax."""

    def attention_weights(
        self, query: torch.Tensor, projected_keys: torch.Tensor, mask: torch.Tensor, query_positions: torch.Tensor | None
    ) -> torch.Tensor:
        """-> weights [B, Tq, Tk]: sparse, summing to 1 over the real keys (query_positions unused)."""
        return masked_sparsemax(self.score(query, projected_keys), mask)
