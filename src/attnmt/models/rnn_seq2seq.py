"""RNN encoder-decoder with Bahdanau or Luong attention (implements models/seq2seq.py).

Bahdanau and Luong share every module; `step_order` picks the step order of the one decoder
(see modules/rnn.AttentionalDecoder) and `attention`, a Hydra node the model calls with its sizes,
picks the attention (modules/attention.py: the contract). Cross-attention comes back as
[B, 1, 1, T, S] (one layer, one head).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.dropout import Dropout
from attnmt.modules.checks import count_parameters, require_dropout, require_positive
from attnmt.modules.embeddings import tied_embeddings
from attnmt.modules.init import initialise
from attnmt.modules.rnn import AttentionalDecoder, DecoderState, EncoderOutput, RNNEncoder, check_rnn_type

log = logging.getLogger(__name__)

STEP_ORDERS = ("bahdanau", "luong")


class RNNSeq2Seq(nn.Module):
    """Bidirectional RNN encoder + attentional RNN decoder.

    attention: a factory (the config's `_partial_: true` node) the model calls as
               attention(query_size=hidden_size, key_size=2 * encoder_hidden_size, attention_size=attention_size)
               -> the decoder's single-head attention (global, local, sparsemax, ... around any score)
    step_order: "bahdanau" (attend from s_{t-1}, context into the RNN, maxout readout) or
                "luong" (RNN first, attend from h_t, h~_t = tanh(W_c [c_t; h_t]))
    input_feeding: Luong only: feed h~_{t-1} into the next RNN input
    attention_size: the hidden width of attention layers that have one (additive/concat score,
                    local-p's position predictor); attentions without one ignore it
    init: "pytorch" (PyTorch defaults, measured best here) or "xavier" (xavier_uniform Linear weights,
          zero biases, embeddings N(0, 0.1^2) as OpenNMT/fairseq)
    """

    family = "rnn"  # what benchmark.reference_key and the tests' tiny sizes go by

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        shared_vocab: bool,
        attention: Callable[..., nn.Module] | None = None,
        step_order: str = "luong",
        input_feeding: bool = True,
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
        if not callable(attention):
            raise ConfigError(
                f"model.attention={attention!r} is not an attention node: give a _target_ with _partial_: true "
                "(configs/model/*.yaml, docs/adding_an_attention.md); Bahdanau vs Luong is model.step_order"
            )
        if step_order not in STEP_ORDERS:
            raise ConfigError(f"model.step_order={step_order!r} must be one of {', '.join(STEP_ORDERS)}")
        if step_order == "bahdanau" and input_feeding:
            raise ConfigError("model.input_feeding=true applies to step_order=luong only (Bahdanau always feeds the context)")
        self.src_vocab_size = src_vocab_size
        self.tgt_vocab_size = tgt_vocab_size
        memory_size = 2 * encoder_hidden_size
        decoder_readout = readout_size if step_order == "bahdanau" else hidden_size
        if tie_embeddings and decoder_readout != embedding_size:
            key = "readout_size" if step_order == "bahdanau" else "hidden_size"
            raise ConfigError(
                f"model.tie_embeddings=true needs model.{key} ({decoder_readout}) == model.embedding_size ({embedding_size})"
            )

        self.src_embed, self.tgt_embed = tied_embeddings(
            src_vocab_size, tgt_vocab_size, embedding_size, shared_vocab, tie_embeddings
        )
        self.dropout = Dropout(dropout)
        self.encoder = RNNEncoder(rnn_type, embedding_size, encoder_hidden_size, encoder_layers, dropout)
        try:  # built before the decoder's own layers: the order parameters are drawn in is part of the init
            attention_module = attention(query_size=hidden_size, key_size=memory_size, attention_size=attention_size)
        except TypeError as error:  # a node whose keys the class does not take
            raise ConfigError(f"model.attention could not be built: {error}") from None
        self.decoder = AttentionalDecoder(
            rnn_type=rnn_type,
            embedding_size=embedding_size,
            memory_size=memory_size,
            hidden_size=hidden_size,
            num_layers=decoder_layers,
            dropout=dropout,
            attention=attention_module,
            attend_before_rnn=step_order == "bahdanau",
            input_feeding=input_feeding,
            readout_size=readout_size,
        )
        self.output = nn.Linear(decoder_readout, tgt_vocab_size)
        # OpenNMT and fairseq start RNN embeddings near +-0.1, not PyTorch's N(0, 1)
        initialise(self, init, [self.src_embed, self.tgt_embed], embedding_std=0.1)
        if tie_embeddings:
            self.output.weight = self.tgt_embed.weight
        log.info("RNNSeq2Seq (%s step order, %s): %d parameters",
                 step_order, type(attention_module).__name__, self.num_parameters())

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
