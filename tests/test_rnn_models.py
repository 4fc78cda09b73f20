"""RNN models: encoder packing, Bahdanau vs Luong step order, tying, config errors.

Protocol-level behaviour (shapes, padding, incremental decoding, overfitting) of every RNN
variant is in test_model_protocol.py.
"""

from __future__ import annotations

import logging
from functools import partial

import pytest
import torch

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, padding_mask
from attnmt.errors import ConfigError
from attnmt.models.rnn_seq2seq import RNNSeq2Seq
from attnmt.modules.attention import DotProductAttention

from attention_nodes import attention as node

VOCAB = 19
TINY = dict(embedding_size=16, encoder_hidden_size=8, hidden_size=16, attention_size=12, readout_size=16, dropout=0.0)


def tiny(**overrides) -> RNNSeq2Seq:
    torch.manual_seed(0)
    settings = {**TINY, "step_order": "luong", "attention": node("general"), "input_feeding": True, **overrides}
    return RNNSeq2Seq(VOCAB, VOCAB, True, **settings)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_encoder_padding_never_leaks_into_states(rnn_type: str) -> None:
    model = tiny(rnn_type=rnn_type, encoder_layers=2).eval()
    sentence = torch.tensor([[5, 9, 7, EOS_ID]])
    padded = torch.tensor([[5, 9, 7, EOS_ID, PAD_ID, PAD_ID], [4, 4, EOS_ID, PAD_ID, PAD_ID, PAD_ID]])
    alone = model.encode(sentence, padding_mask(sentence))
    batched = model.encode(padded, padding_mask(padded))
    torch.testing.assert_close(batched.outputs[0, :4], alone.outputs[0], atol=1e-6, rtol=1e-6)
    assert torch.all(batched.outputs[0, 4:] == 0.0)
    # the backward direction must start at the last REAL token, so the final states agree too
    torch.testing.assert_close(batched.final[0], alone.final[0], atol=1e-6, rtol=1e-6)
    assert (batched.final_cell is None) == (rnn_type == "gru")


def attention_after_changing_one_target_token(model: RNNSeq2Seq, position: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[5, 6, 7, 8, EOS_ID]])
    tgt_a = torch.tensor([[BOS_ID, 4, 9, 10, 11]])
    tgt_b = tgt_a.clone()
    tgt_b[0, position] = 15
    _, attention_a = model.eval()(src, padding_mask(src), tgt_a, need_weights=True)
    _, attention_b = model(src, padding_mask(src), tgt_b, need_weights=True)
    return attention_a[0, 0, 0], attention_b[0, 0, 0]  # [T, S]


def test_bahdanau_attends_from_the_previous_state() -> None:
    # y_{t-1} enters the RNN after attention: changing input token t leaves attention at t alone
    a, b = attention_after_changing_one_target_token(tiny(step_order="bahdanau", attention=node("additive"), input_feeding=False), 2)
    torch.testing.assert_close(a[:3], b[:3])
    assert not torch.allclose(a[3], b[3])


@pytest.mark.parametrize("score", ["dot", "general", "concat"])
def test_luong_attends_from_the_current_state(score: str) -> None:
    a, b = attention_after_changing_one_target_token(tiny(attention=node(score)), 2)
    torch.testing.assert_close(a[:2], b[:2])
    assert not torch.allclose(a[2], b[2])


def test_input_feeding_widens_the_decoder_input() -> None:
    fed, plain = tiny(input_feeding=True), tiny(input_feeding=False)
    assert fed.decoder.rnn.cells[0].input_size == TINY["embedding_size"] + TINY["hidden_size"]
    assert plain.decoder.rnn.cells[0].input_size == TINY["embedding_size"]


def test_bahdanau_feeds_context_into_the_rnn_and_uses_maxout() -> None:
    model = tiny(step_order="bahdanau", attention=node("additive"), input_feeding=False, readout_size=10, tie_embeddings=False)
    assert model.decoder.rnn.cells[0].input_size == TINY["embedding_size"] + 2 * TINY["encoder_hidden_size"]
    assert model.decoder.readout.out_features == 2 * 10  # pairs pooled by max
    assert model.output.in_features == 10


@pytest.mark.parametrize("step_order", ["bahdanau", "luong"])
def test_tied_embeddings_share_one_table(step_order: str) -> None:
    extra = dict(step_order="bahdanau", attention=node("additive"), input_feeding=False) if step_order == "bahdanau" else {}
    tied = tiny(tie_embeddings=True, **extra)
    untied = tiny(tie_embeddings=False, **extra)
    assert tied.src_embed is tied.tgt_embed and tied.output.weight is tied.tgt_embed.weight
    assert untied.num_parameters() - tied.num_parameters() == 2 * VOCAB * TINY["embedding_size"]


def test_tying_with_separate_vocabularies_ties_only_the_target(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        model = RNNSeq2Seq(11, VOCAB, False, **TINY, attention=node(), tie_embeddings=True)
    assert model.src_embed is not model.tgt_embed
    assert model.output.weight is model.tgt_embed.weight
    assert model.src_embed.num_embeddings == 11
    assert "target" in caplog.text and "parameters" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"rnn_type": "transformer"}, "model.rnn_type"),
        ({"step_order": "cosine"}, "model.step_order"),
        ({"attention": "general"}, "model.attention"),  # a name (the old string form), not a node
        ({"attention": None}, "model.attention"),
        ({"attention": partial(DotProductAttention, heads=2)}, "model.attention"),  # a key its class does not take
        ({"step_order": "bahdanau", "attention": node("additive"), "input_feeding": True}, "model.input_feeding"),
        ({"hidden_size": 0}, "model.hidden_size"),
        ({"encoder_hidden_size": -8}, "model.encoder_hidden_size"),
        ({"decoder_layers": 0}, "model.decoder_layers"),
        ({"dropout": 1.0}, "model.dropout"),
        ({"attention": node("dot"), "hidden_size": 12}, "model.attention"),
        ({"tie_embeddings": True, "hidden_size": 12}, "model.tie_embeddings"),
    ],
)
def test_bad_configs_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny(**overrides)


def test_decoder_state_is_not_kept_on_modules() -> None:
    model = tiny().eval()
    src = torch.tensor([[5, 6, EOS_ID]])
    state = model.init_state(model.encode(src, padding_mask(src)), padding_mask(src))
    _, after_one, _ = model.step(torch.tensor([BOS_ID]), state)
    again, _, _ = model.step(torch.tensor([BOS_ID]), state)  # the old state is still usable
    first, _, _ = model.step(torch.tensor([BOS_ID]), state)
    torch.testing.assert_close(again, first)
    assert after_one.hidden[0] is not state.hidden[0]
