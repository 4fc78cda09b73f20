"""RNN encoder-decoder with Bahdanau or Luong attention (implements models/seq2seq.py).

Bahdanau and Luong share every module; `attention` picks the step order of the one decoder
(see modules/rnn.AttentionalDecoder) and `score` picks the attention function. Cross-attention
comes back as [B, 1, 1, T, S] (one layer, one head).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.rnn_attention import build_rnn_attention
from attnmt.modules.dropout import Dropout
from attnmt.modules.embeddings import count_parameters, require_dropout, require_positive, tied_embeddings
from attnmt.modules.init import initialise
from attnmt.modules.rnn import AttentionalDecoder, DecoderState, EncoderOutput, RNNEncoder, check_rnn_type

log = logging.getLogger(__name__)

ATTENTION_STYLES = ("bahdanau", "luong")


class RNNSeq2Seq(nn.Module):
    """Bidirectional RNN encoder + attentional RNN decoder.

    attention: "bahdanau" (attend from s_{t-1}, context into the RNN, maxout readout) or
               "luong" (RNN first, attend from h_t, h~_t = tanh(W_c [c_t; h_t]))
    score: "additive" / "concat" (v^T tanh(W_q q + W_k k)), "dot", "general" (q^T W_a k)
    input_feeding: Luong only: feed h~_{t-1} into the next RNN input
    local_attention: None (global) or "monotonic" / "predictive": Luong's local-m / local-p window
    local_window: the window's half-width D (2D+1 source positions)
    scale_scores: divide dot/general scores by sqrt(hidden_size) (false: Luong's unscaled form)
    init: "pytorch" (PyTorch defaults, measured best here) or "xavier" (xavier_uniform Linear weights,
          zero biases, embeddings N(0, 0.1^2) as OpenNMT/fairseq)
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        shared_vocab: bool,
        attention: str = "luong",
        score: str = "general",
        input_feeding: bool = True,
        local_attention: str | None = None,
        local_window: int = 5,
        scale_scores: bool = True,
        rnn_type: str = "gru",
        embedding_size: int = 256,
        encoder_hidden_size: int = 128,
        hidden_size: int = 256,
        attention_size: int = 256,
        readout_size: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        dropout: float = 0.3,
        tie_embeddings: bool = False,
        init: str = "pytorch",
    ) -> None:
        super().__init__()
        require_positive(
            src_vocab_size=src_vocab_size,
            tgt_vocab_size=tgt_vocab_size,
            embedding_size=embedding_size,
            encoder_hidden_size=encoder_hidden_size,
            hidden_size=hidden_size,
            attention_size=attention_size,
            readout_size=readout_size,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
        )
        require_dropout(dropout)
        check_rnn_type(rnn_type)
        if attention not in ATTENTION_STYLES:
            raise ConfigError(f"model.attention={attention!r} must be one of {', '.join(ATTENTION_STYLES)}")
        if attention == "bahdanau" and input_feeding:
            raise ConfigError("model.input_feeding=true applies to attention=luong only (Bahdanau always feeds the context)")
        self.src_vocab_size = src_vocab_size
        self.tgt_vocab_size = tgt_vocab_size
        memory_size = 2 * encoder_hidden_size
        decoder_readout = readout_size if attention == "bahdanau" else hidden_size
        if tie_embeddings and decoder_readout != embedding_size:
            key = "readout_size" if attention == "bahdanau" else "hidden_size"
            raise ConfigError(
                f"model.tie_embeddings=true needs model.{key} ({decoder_readout}) == model.embedding_size ({embedding_size})"
            )

        self.src_embed, self.tgt_embed = tied_embeddings(
            src_vocab_size, tgt_vocab_size, embedding_size, shared_vocab, tie_embeddings
        )
        self.dropout = Dropout(dropout)
        self.encoder = RNNEncoder(rnn_type, embedding_size, encoder_hidden_size, encoder_layers, dropout)
        query_size = hidden_size
        self.decoder = AttentionalDecoder(
            rnn_type=rnn_type,
            embedding_size=embedding_size,
            memory_size=memory_size,
            hidden_size=hidden_size,
            num_layers=decoder_layers,
            dropout=dropout,
            attention=build_rnn_attention(
                score, query_size, memory_size, attention_size, local_attention, local_window, scale_scores
            ),
            attend_before_rnn=attention == "bahdanau",
            input_feeding=input_feeding,
            readout_size=readout_size,
        )
        self.output = nn.Linear(decoder_readout, tgt_vocab_size)
        # OpenNMT and fairseq start RNN embeddings near +-0.1, not PyTorch's N(0, 1)
        initialise(self, init, [self.src_embed, self.tgt_embed], embedding_std=0.1)
        if tie_embeddings:
            self.output.weight = self.tgt_embed.weight
        log.info("RNNSeq2Seq (%s, %s score, %s): %d parameters", attention, score, local_attention or "global", self.num_parameters())

    def num_parameters(self) -> int:
        return count_parameters(self)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> EncoderOutput:
        """src [B, S] long, src_mask [B, S] bool -> EncoderOutput (annotations [B, S, M], final states)."""
        return self.encoder(self.dropout(self.src_embed(src)), src_mask)

    def init_state(self, memory: EncoderOutput, src_mask: torch.Tensor) -> DecoderState:
        return self.decoder.init_state(memory, src_mask)

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src [B, S], src_mask [B, S], tgt_in [B, T] -> (logits [B, T, V], attention [B, 1, 1, T, S] or None)."""
        state = self.init_state(self.encode(src, src_mask), src_mask)
        readouts, weights = self.decoder(self.dropout(self.tgt_embed(tgt_in)), state)  # [B, T, R], [B, T, S]
        logits = self.output(self.dropout(readouts))  # one matmul for all steps: [B, T, V]
        return logits, weights[:, None, None] if need_weights else None

    def step(
        self, tokens: torch.Tensor, state: DecoderState, need_weights: bool = True
    ) -> tuple[torch.Tensor, DecoderState, torch.Tensor | None]:
        """tokens [B] long -> (log-probs [B, V] float32, new state, attention [B, 1, 1, S] or None)."""
        readout, state, weights = self.decoder.step(self.dropout(self.tgt_embed(tokens)), state)
        logprobs = self.output(self.dropout(readout)).float().log_softmax(dim=-1)
        return logprobs, state, weights[:, None, None] if need_weights else None

    def reorder_state(self, state: DecoderState, index: torch.Tensor, beams: int | None = None) -> DecoderState:
        """index [N'] long -> state with the selected entries. Every hypothesis keeps its own copy of
        the memory (`beams` unused): copying it per step is a few percent of an RNN's beam search."""
        return state.index_select(index)
