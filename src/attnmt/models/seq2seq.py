"""The Seq2Seq protocol: what search.py, task.py, viz.py and the scripts rely on.

Every model (RNN with Bahdanau or Luong attention, Transformer) implements it, so a new variant
needs a module and a YAML file, nothing else (docs/adding_an_attention.md). Shapes: B batch, S source length, T target length,
V target vocabulary, L attention layers (1 for RNNs), H heads (1 for RNNs).

Cross-attention always comes as one tensor [B, L, H, T, S] (teacher forcing) or [N, L, H, S]
(one decoding step of N hypotheses): rows sum to 1 over real source tokens and are exactly 0 on
padding. Decoding works on N = B * beams hypotheses (beams = 1: greedy search and the first step
of beam search), which search.py reorders and shrinks between steps as beams are chosen and
sentences finish.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Seq2Seq(Protocol):
    family: str  # a class attribute naming the model family ("rnn", "transformer"): benchmarks and tests go by it
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
        """Decoder state before the first step: one hypothesis per sentence (holds whatever the
        steps need, memory included)."""

    def step(self, tokens: torch.Tensor, state: Any, need_weights: bool = True) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """One incremental step: tokens [N] long (previous output, BOS first)
        -> (log-probabilities [N, V] float32, new state, cross-attention [N, L, H, S] or None).

        need_weights=False returns None and lets the model use kernels that skip the weights."""

    def reorder_state(self, state: Any, index: torch.Tensor, beams: int | None = None) -> Any:
        """Select/reorder hypotheses: index [N'] long -> state whose row i continues row index[i].

        beams: hypotheses per sentence in the new state (None: as in `state`). With 1 before and
        after, any index. Otherwise the new rows come in groups of `beams`, one group per
        sentence, sentences in their order, group g continuing the sentence of row
        index[g * beams]: beam search fans each sentence out from 1 to K hypotheses after its first
        step, then reorders hypotheses within their sentence (N' = N), and both searches drop
        finished sentences (N' < N). A model may keep what depends on the source once per sentence."""
