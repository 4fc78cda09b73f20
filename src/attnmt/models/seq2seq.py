"""The Seq2Seq protocol: what search.py, task.py, viz.py and the scripts rely on.

Every model (RNN with Bahdanau or Luong attention, Transformer) implements it, so a new variant
needs a module and a YAML file, nothing else. Shapes: B batch, S source length, T target length,
V target vocabulary, L attention layers (1 for RNNs), H heads (1 for RNNs).

Cross-attention always comes as one tensor [B, L, H, T, S] (teacher forcing) or [B, L, H, S]
(one decoding step): rows sum to 1 over real source tokens and are exactly 0 on padding.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Seq2Seq(Protocol):
    src_vocab_size: int
    tgt_vocab_size: int

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Any:
        """src [B, S] long, src_mask [B, S] bool -> memory (model-specific, batch-first tensors)."""

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced pass -> (logits [B, T, V], cross-attention [B, L, H, T, S] or None).

        With need_weights=False a model may skip materialising the weights (fast kernels).
        """

    def init_state(self, memory: Any, src_mask: torch.Tensor) -> Any:
        """Decoder state before the first step (holds whatever the steps need, memory included)."""

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any, torch.Tensor]:
        """One incremental step: tokens [B] long (previous output, BOS first)
        -> (log-probabilities [B, V] float32, new state, cross-attention [B, L, H, S])."""

    def reorder_state(self, state: Any, index: torch.Tensor) -> Any:
        """Select/reorder the batch entries of a state: index [B'] long -> state with batch B'."""
