"""Transformer: causality, key/value cache, positions, embedding tying, config errors.

Protocol-level behaviour (shapes, padding, incremental decoding, overfitting) is in
test_model_protocol.py.
"""

from __future__ import annotations

import pytest
import torch

from attnmt.data.vocab import BOS_ID, EOS_ID, padding_mask
from attnmt.errors import ConfigError
from attnmt.models.transformer_seq2seq import TransformerSeq2Seq
from attnmt.modules.embeddings import sinusoidal_positions

VOCAB = 21
TINY = dict(encoder_layers=2, decoder_layers=2, d_model=16, heads=4, ff_size=24, dropout=0.0)


def tiny(src_vocab: int = VOCAB, tgt_vocab: int = VOCAB, shared: bool = True, **overrides) -> TransformerSeq2Seq:
    torch.manual_seed(0)
    return TransformerSeq2Seq(src_vocab, tgt_vocab, shared, **{**TINY, **overrides})


def test_decoder_is_causal() -> None:
    model = tiny().eval()
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 8, 9, 10, 11]])
    changed = tgt.clone()
    changed[0, 3] = 12
    logits, _ = model(src, padding_mask(src), tgt)
    logits_changed, _ = model(src, padding_mask(src), changed)
    torch.testing.assert_close(logits_changed[:, :3], logits[:, :3])
    assert not torch.allclose(logits_changed[:, 3], logits[:, 3])


def test_cache_keeps_cross_keys_and_grows_self_keys() -> None:
    model = tiny().eval()
    src = torch.tensor([[5, 6, 7, EOS_ID], [4, EOS_ID, 0, 0]])
    state = model.init_state(model.encode(src, padding_mask(src)), padding_mask(src))
    cross_k = [c.cross_k for c in state.cache]
    assert cross_k[0].shape == (2, 4, 4, 4)  # [B, H, S, d]
    for t in range(3):
        _, state, attention = model.step(torch.tensor([BOS_ID, BOS_ID]), state)
        assert state.length == t + 1
        assert all(c.self_k.shape == (2, 4, t + 1, 4) for c in state.cache)
        assert all(c.cross_k is k for c, k in zip(state.cache, cross_k))  # computed once, never again
        assert attention.shape == (2, 2, 4, 4)  # [B, L, H, S]


def test_attention_returns_every_layer_and_head() -> None:
    model = tiny().eval()
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    _, attention = model(src, padding_mask(src), torch.tensor([[BOS_ID, 8, 9]]), need_weights=True)
    assert attention.shape == (1, 2, 4, 3, 4)
    # layers and heads are distinct maps, not one map copied
    assert not torch.allclose(attention[0, 0], attention[0, 1])
    assert not torch.allclose(attention[0, 0, 0], attention[0, 0, 1])


def test_sinusoidal_positions() -> None:
    table = sinusoidal_positions(torch.arange(50), 16)
    assert table.shape == (50, 16)
    torch.testing.assert_close(table[0], torch.cat([torch.zeros(8), torch.ones(8)]))
    torch.testing.assert_close(table[3, 0], torch.tensor(3.0).sin())  # first pair has frequency 1
    assert torch.cdist(table, table).add(torch.eye(50)).min() > 0.1  # every position is distinct
    torch.testing.assert_close(sinusoidal_positions(torch.arange(10, 12), 16), table[10:12])


def test_joint_vocabulary_ties_all_three_embeddings() -> None:
    model = tiny(tie_embeddings=True)
    assert model.src_embed is model.tgt_embed and model.output.weight is model.tgt_embed.weight
    untied = tiny(tie_embeddings=False)
    assert untied.num_parameters() - model.num_parameters() == 2 * VOCAB * TINY["d_model"]


def test_separate_vocabularies_tie_only_target_input_and_output() -> None:
    model = tiny(src_vocab=13, tgt_vocab=VOCAB, shared=False, tie_embeddings=True)
    assert model.src_embed is not model.tgt_embed
    assert model.output.weight is model.tgt_embed.weight
    assert (model.src_embed.num_embeddings, model.output.out_features) == (13, VOCAB)
    src = torch.tensor([[12, 3]])
    logits, _ = model(src, padding_mask(src), torch.tensor([[BOS_ID, 20]]))
    assert logits.shape == (1, 2, VOCAB)


def test_shared_vocabulary_with_different_sizes_is_an_error() -> None:
    with pytest.raises(ConfigError, match="shared_vocab"):
        tiny(src_vocab=13, tgt_vocab=VOCAB, shared=True, tie_embeddings=True)


def test_dropout_is_active_only_in_training() -> None:
    model = tiny(dropout=0.3)
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 8, 9]])
    model.train()
    assert not torch.allclose(model(src, padding_mask(src), tgt)[0], model(src, padding_mask(src), tgt)[0])
    model.eval()
    torch.testing.assert_close(model(src, padding_mask(src), tgt)[0], model(src, padding_mask(src), tgt)[0])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"heads": 3}, "model.heads"),
        ({"d_model": 0}, "model.d_model"),
        ({"ff_size": -1}, "model.ff_size"),
        ({"encoder_layers": 0}, "model.encoder_layers"),
        ({"dropout": -0.1}, "model.dropout"),
    ],
)
def test_bad_configs_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        tiny(**overrides)
