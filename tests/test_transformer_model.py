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
from attnmt.modules.sliding_window import SlidingWindowSelfAttention

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


def test_cross_keys_are_shared_by_beams_and_reordering_copies_nothing() -> None:
    model = tiny().eval()
    src = torch.tensor([[5, 6, 7, EOS_ID], [4, EOS_ID, 0, 0]])
    state = model.init_state(model.encode(src, padding_mask(src)), padding_mask(src))
    _, state, _ = model.step(torch.full((2,), BOS_ID), state)  # one hypothesis per sentence first
    state = model.reorder_state(state, torch.tensor([0, 0, 0, 1, 1, 1]), beams=3)  # then 3 each
    cross_k = [c.cross_k for c in state.cache]
    assert cross_k[0].shape == (2, 4, 4, 4)  # [B, H, S, d]: once per sentence, not per beam
    for t in range(1, 4):
        _, state, attention = model.step(torch.full((6,), BOS_ID), state)
        assert state.length == t + 1
        assert all(c.self_k.shape == (6, 4, t + 1, 4) and c.self_k.is_contiguous() for c in state.cache)
        assert all(c.cross_k is k for c, k in zip(state.cache, cross_k))  # computed once, never copied
        assert attention.shape == (6, 2, 4, 4)  # [N, L, H, S]
        reordered = model.reorder_state(state, torch.tensor([2, 2, 0, 4, 3, 3]))  # within each sentence
        assert all(r.self_k is c.self_k for r, c in zip(reordered.cache, state.cache))  # the next step gathers
        state = reordered


def _decode_with_reorders(model: TransformerSeq2Seq, src: torch.Tensor, need_weights: bool, steps: int, beams: int):
    """Step one hypothesis per sentence, fan out to B * beams, then step them with random tokens,
    reordering them within their sentence every step (twice before step 2) and dropping sentence 1
    half-way -> per step (log-probs [N, V], attention, sentence [N], prefix [N, t+1] fed so far)."""
    generator = torch.Generator().manual_seed(3)
    src_mask = padding_mask(src)
    state = model.init_state(model.encode(src, src_mask), src_mask)
    sentence = torch.arange(src.size(0))  # [N]: one hypothesis per sentence at the first step
    prefix = torch.full((sentence.size(0), 1), BOS_ID)  # [N, 1]
    logprobs, state, attention = model.step(prefix[:, -1], state, need_weights=need_weights)
    seen = [(logprobs, attention, sentence, prefix)]
    fan_out = sentence.repeat_interleave(beams)  # [N * beams]
    state, sentence, prefix = model.reorder_state(state, fan_out, beams=beams), sentence[fan_out], prefix[fan_out]
    prefix = torch.cat([prefix, torch.randint(4, VOCAB, (sentence.size(0), 1), generator=generator)], dim=1)
    for t in range(1, steps):
        logprobs, state, attention = model.step(prefix[:, -1], state, need_weights=need_weights)
        seen.append((logprobs, attention, sentence, prefix))
        for again in range(2 if t == 1 else 1):
            groups = sentence.size(0) // beams
            within = torch.stack([torch.randint(0, beams, (beams,), generator=generator) for _ in range(groups)])  # [G, K]
            index = (within + torch.arange(groups)[:, None] * beams).view(-1)  # [N]
            if t == steps // 2:  # sentence 1 finished: its beams leave
                index = index.view(groups, beams)[torch.arange(groups) != 1].view(-1)
            state = model.reorder_state(state, index)
            sentence, prefix = sentence[index], prefix[index]
        next_ids = torch.randint(4, VOCAB, (sentence.size(0), 1), generator=generator)
        prefix = torch.cat([prefix, next_ids], dim=1)
    return seen


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("window", [None, 2])
def test_cached_steps_equal_recomputing_the_whole_prefix(need_weights: bool, window: int | None) -> None:
    """Beams sharing cross K/V, reorders applied by the next step's copy, two reorders in a row
    and a dropped sentence: every step's log-probs (and attention) equal a teacher-forced pass
    over the prefix."""
    model = tiny(decoder_self_attention=None if window is None else SlidingWindowSelfAttention(window)).eval()
    src = torch.tensor([[5, 6, 7, 8, EOS_ID], [4, EOS_ID, 0, 0, 0], [9, 10, EOS_ID, 0, 0]])
    with torch.no_grad():
        seen = _decode_with_reorders(model, src, need_weights, steps=8, beams=3)
        for logprobs, attention, sentence, prefix in seen:
            logits, weights = model(src[sentence], padding_mask(src[sentence]), prefix, need_weights=True)
            torch.testing.assert_close(logprobs, logits[:, -1].log_softmax(-1), atol=1e-5, rtol=1e-5)
            if need_weights:
                torch.testing.assert_close(attention, weights[:, :, :, -1], atol=1e-5, rtol=1e-5)
            else:
                assert attention is None
    assert seen[-1][2].tolist() == [0, 0, 0, 2, 2, 2]  # the drop really happened


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
