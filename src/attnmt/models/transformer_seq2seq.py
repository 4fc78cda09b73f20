"""Transformer encoder-decoder (implements models/seq2seq.py).

Pre-norm stacks, sinusoidal positions, embeddings scaled by sqrt(d_model). With
tie_embeddings and a joint vocabulary one table serves source input, target input and output;
with separate vocabularies only target input and output are tied. encoder_self_attention /
decoder_self_attention say which positions self-attention sees (modules/self_attention.py: full by
default, sliding_window.SlidingWindowSelfAttention, ...); cross-attention always sees the whole source.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.dropout import Dropout
from attnmt.modules.checks import count_parameters, require_dropout, require_positive
from attnmt.modules.embeddings import sinusoidal_positions, tied_embeddings
from attnmt.modules.init import initialise
from attnmt.modules.self_attention import SelfAttentionPattern
from attnmt.modules.transformer import LayerCache, TransformerDecoder, TransformerEncoder

log = logging.getLogger(__name__)


@dataclass
class TransformerState:
    """Incremental decoding state of N = B * beams hypotheses (the beams of a sentence adjacent).

    src_mask [B, 1, 1, S] and the cross K/V of every LayerCache are per sentence. order [N]: the
    cache row each hypothesis continues, or None when they match; reorder_state only records it
    and the next step applies it while copying the cache anyway (LayerCache.extend).
    """

    src_mask: torch.Tensor
    cache: list[LayerCache]
    beams: int
    order: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Target positions decoded so far (a shape, so no device sync)."""
        return self.cache[0].self_k.size(2)

    @property
    def hypotheses(self) -> int:
        return self.cache[0].self_k.size(0) if self.order is None else self.order.size(0)


class TransformerSeq2Seq(nn.Module):
    """encoder_self_attention / decoder_self_attention: the config's `_target_` nodes, built by Hydra
    (None: full self-attention); init: "xavier" (xavier_uniform Linear weights, zero biases) or
    "pytorch" (PyTorch's defaults)."""

    family = "transformer"  # what benchmark.reference_key and the tests' tiny sizes go by

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        shared_vocab: bool,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        d_model: int = 256,
        heads: int = 4,
        ff_size: int = 1024,
        dropout: float = 0.1,
        tie_embeddings: bool = True,
        encoder_self_attention: SelfAttentionPattern | None = None,
        decoder_self_attention: SelfAttentionPattern | None = None,
        init: str = "xavier",
    ) -> None:
        super().__init__()
        require_positive(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            d_model=d_model,
            heads=heads,
            ff_size=ff_size,
        )
        require_dropout(dropout)
        if d_model % heads != 0:
            raise ConfigError(f"model.heads={heads} must divide model.d_model={d_model}")
        self.src_vocab_size = src_vocab_size
        self.tgt_vocab_size = tgt_vocab_size
        self.d_model = d_model
        self.src_embed, self.tgt_embed = tied_embeddings(src_vocab_size, tgt_vocab_size, d_model, shared_vocab, tie_embeddings)
        self.dropout = Dropout(dropout)
        patterns = {"encoder_self_attention": encoder_self_attention, "decoder_self_attention": decoder_self_attention}
        for key, pattern in patterns.items():
            if pattern is not None and not all(callable(getattr(pattern, m, None)) for m in ("prepare", "attend", "visible")):
                raise ConfigError(
                    f"model.{key}={pattern!r} is not a self-attention pattern (prepare/attend/visible): give a _target_ node, "
                    "e.g. attnmt.modules.self_attention.FullSelfAttention (modules/self_attention.py)"
                )
        self.encoder = TransformerEncoder(encoder_layers, d_model, heads, ff_size, dropout, encoder_self_attention)
        self.decoder = TransformerDecoder(decoder_layers, d_model, heads, ff_size, dropout, decoder_self_attention)
        self.output = nn.Linear(d_model, tgt_vocab_size, bias=False)
        initialise(self, init, embeddings=[], embedding_std=0.0)  # Linear layers only
        # part of the architecture, not of the scheme: inputs are scaled by sqrt(d_model), so
        # std d_model^-0.5 tables give unit-variance inputs whatever `init` says
        for table in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(table.weight, std=self.d_model**-0.5)
        if tie_embeddings:
            self.output.weight = self.tgt_embed.weight
        log.info("TransformerSeq2Seq: %d parameters", self.num_parameters())

    def num_parameters(self) -> int:
        return count_parameters(self)

    def _embed(self, table: nn.Embedding, ids: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """ids [B, T] -> [B, T, D] scaled embeddings plus positions offset .. offset+T-1."""
        positions = torch.arange(offset, offset + ids.size(1), device=ids.device)
        embedded = table(ids) * math.sqrt(self.d_model) + sinusoidal_positions(positions, self.d_model)
        return self.dropout(embedded)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """src [B, S] long, src_mask [B, S] bool -> memory [B, S, D]."""
        return self.encoder(self._embed(self.src_embed, src), src_mask)

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src [B, S], src_mask [B, S], tgt_in [B, T] -> (logits [B, T, V], attention [B, L, H, T, S] or None)."""
        memory = self.encode(src, src_mask)
        hidden, weights = self.decoder(self._embed(self.tgt_embed, tgt_in), memory, src_mask, need_weights)
        return self.output(hidden), weights

    def init_state(self, memory: torch.Tensor, src_mask: torch.Tensor) -> TransformerState:
        """memory [B, S, D], src_mask [B, S] -> state of one hypothesis per sentence, cross-attention
        K/V computed once."""
        return TransformerState(src_mask[:, None, None, :], self.decoder.start_cache(memory), beams=1)

    def step(
        self, tokens: torch.Tensor, state: TransformerState, need_weights: bool = True
    ) -> tuple[torch.Tensor, TransformerState, torch.Tensor | None]:
        """tokens [N] long -> (log-probs [N, V] float32, new state, attention [N, L, H, S] or None).

        need_weights=False lets cross-attention use F.scaled_dot_product_attention."""
        embedded = self._embed(self.tgt_embed, tokens.unsqueeze(1), offset=state.length)  # [N, 1, D]
        hidden, cache, weights = self.decoder.step(embedded, state.cache, state.order, state.src_mask, need_weights)
        logprobs = self.output(hidden).float().log_softmax(dim=-1)
        return logprobs, TransformerState(state.src_mask, cache, state.beams), weights

    def reorder_state(self, state: TransformerState, index: torch.Tensor, beams: int | None = None) -> TransformerState:
        """index [N'] long: row i continues hypothesis index[i]; beams: hypotheses per sentence
        after (models/seq2seq.py). Self-attention K/V are not copied here: the next step gathers
        them (TransformerState.order); cross K/V and mask change only when the sentences do."""
        beams = state.beams if beams is None else beams
        order = index if state.order is None else state.order.index_select(0, index)
        if beams == state.beams == 1:
            sentences = index
        elif beams == state.beams and index.size(0) == state.hypotheses:  # the same sentences
            return replace(state, order=order)
        else:
            sentences = index.view(-1, beams)[:, 0].div(state.beams, rounding_mode="floor")  # [B']
        cache = [c.select_sentences(sentences) for c in state.cache]
        return TransformerState(state.src_mask.index_select(0, sentences), cache, beams, order)
