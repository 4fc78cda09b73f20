"""Every model variant against the Seq2Seq protocol (models/seq2seq.py), and every model YAML.

Tiny sizes so the whole module runs in seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from torch.nn import functional as F

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, padding_mask
from attnmt.models.rnn_seq2seq import RNNSeq2Seq
from attnmt.models.seq2seq import Seq2Seq
from attnmt.models.transformer_seq2seq import TransformerSeq2Seq
from attnmt.modules.sliding_window import SlidingWindowSelfAttention

from attention_nodes import attention as node
from model_configs import MODEL_CONFIGS, PAPER_PRESETS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
VOCAB = 23
TINY_RNN = dict(embedding_size=16, encoder_hidden_size=8, hidden_size=16, attention_size=12, readout_size=16, dropout=0.0)

VARIANTS = {
    "bahdanau_gru": dict(step_order="bahdanau", attention=node("additive"), input_feeding=False),
    "bahdanau_lstm": dict(step_order="bahdanau", attention=node("additive"), input_feeding=False, rnn_type="lstm"),
    "luong_general_feed": dict(step_order="luong", attention=node("general"), input_feeding=True),
    "luong_general_nofeed": dict(step_order="luong", attention=node("general"), input_feeding=False),
    "luong_dot_feed": dict(step_order="luong", attention=node("dot"), input_feeding=True),
    "luong_dot_nofeed": dict(step_order="luong", attention=node("dot"), input_feeding=False),
    "luong_concat_feed": dict(step_order="luong", attention=node("concat"), input_feeding=True),
    "luong_concat_nofeed": dict(step_order="luong", attention=node("concat"), input_feeding=False),
    "luong_lstm_2layers": dict(
        step_order="luong", attention=node("general"), input_feeding=True, rnn_type="lstm", encoder_layers=2, decoder_layers=2
    ),
    "luong_local_m": dict(step_order="luong", attention=node("general", local="monotonic", half_width=2), input_feeding=True),
    "luong_local_p_feed": dict(step_order="luong", attention=node("dot", local="predictive", half_width=2), input_feeding=True),
    "luong_local_p_nofeed": dict(
        step_order="luong", attention=node("concat", local="predictive", half_width=2), input_feeding=False
    ),
    "luong_sparsemax_feed": dict(step_order="luong", attention=node("general", sparsemax=True), input_feeding=True),
    "luong_sparsemax_nofeed": dict(step_order="luong", attention=node("concat", sparsemax=True), input_feeding=False),
    "bahdanau_local_m": dict(
        step_order="bahdanau", attention=node("additive", local="monotonic", half_width=1), input_feeding=False
    ),
    "transformer": {},
    "transformer_window": dict(  # windows far shorter than the sentences
        encoder_self_attention=SlidingWindowSelfAttention(1), decoder_self_attention=SlidingWindowSelfAttention(1)
    ),
}
# local-p multiplies the windowed softmax by a Gaussian (as in the paper): rows sum to at most 1
NOT_NORMALISED = {"luong_local_p_feed", "luong_local_p_nofeed"}


def build(variant: str, shared_vocab: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    if variant.startswith("transformer"):
        return TransformerSeq2Seq(
            VOCAB, VOCAB, shared_vocab, encoder_layers=2, decoder_layers=2, d_model=16, heads=2, ff_size=32, dropout=0.0,
            **VARIANTS[variant],
        )
    return RNNSeq2Seq(VOCAB, VOCAB, shared_vocab, **TINY_RNN, **VARIANTS[variant])


def make_batch(lengths_src: list[int], lengths_tgt: list[int], seed: int = 1) -> tuple[torch.Tensor, ...]:
    """Random right-padded batch: src [B, S] ending in EOS, tgt_in [B, T] (BOS ..), tgt_out [B, T] (.. EOS)."""
    gen = torch.Generator().manual_seed(seed)
    batch = len(lengths_src)
    src = torch.full((batch, max(lengths_src)), PAD_ID)
    tgt_in = torch.full((batch, max(lengths_tgt)), PAD_ID)
    tgt_out = torch.full((batch, max(lengths_tgt)), PAD_ID)
    for i, (s, t) in enumerate(zip(lengths_src, lengths_tgt)):
        src[i, : s - 1] = torch.randint(4, VOCAB, (s - 1,), generator=gen)
        src[i, s - 1] = EOS_ID
        words = torch.randint(4, VOCAB, (t - 1,), generator=gen)
        tgt_in[i, :t] = torch.cat([torch.tensor([BOS_ID]), words])
        tgt_out[i, :t] = torch.cat([words, torch.tensor([EOS_ID])])
    return src, padding_mask(src), tgt_in, tgt_out


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return request.param


def test_implements_protocol_and_shapes(variant: str) -> None:
    model = build(variant)
    assert isinstance(model, Seq2Seq)
    src, src_mask, tgt_in, _ = make_batch([5, 3, 7], [4, 6, 2])
    logits, attention = model(src, src_mask, tgt_in, need_weights=True)
    layers, heads = (2, 2) if variant.startswith("transformer") else (1, 1)
    assert logits.shape == (3, 6, VOCAB)
    assert attention.shape == (3, layers, heads, 6, 7)
    logits_fast, none = model(src, src_mask, tgt_in)  # need_weights=False: fast kernels, same numbers
    assert none is None
    torch.testing.assert_close(logits_fast, logits, atol=1e-5, rtol=1e-5)


def test_attention_sums_to_one_over_real_tokens_and_is_zero_on_padding(variant: str) -> None:
    model = build(variant)
    src, src_mask, tgt_in, _ = make_batch([5, 3, 7], [4, 6, 2])
    _, attention = model(src, src_mask, tgt_in, need_weights=True)  # [B, L, H, T, S]
    keep = src_mask[:, None, None, None, :].expand_as(attention)
    assert torch.all(attention[~keep] == 0.0)
    if variant in NOT_NORMALISED:
        assert torch.all(attention.sum(-1) <= 1.0 + 1e-6) and torch.all(attention.sum(-1) > 0.0)
    else:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))


def test_extra_padding_changes_nothing_at_real_positions(variant: str) -> None:
    model = build(variant).eval()
    src, src_mask, tgt_in, tgt_out = make_batch([5, 3, 7], [4, 6, 2])
    padded_src = F.pad(src, (0, 4), value=PAD_ID)
    padded_tgt = F.pad(tgt_in, (0, 3), value=PAD_ID)
    logits, attention = model(src, src_mask, tgt_in, need_weights=True)
    logits_padded, attention_padded = model(padded_src, padding_mask(padded_src), padded_tgt, need_weights=True)
    real = padding_mask(tgt_out)  # [B, T]
    torch.testing.assert_close(logits_padded[:, :6][real], logits[real], atol=1e-5, rtol=1e-5)
    real_rows = real[:, None, None, :].expand(attention.shape[:-1])
    torch.testing.assert_close(attention_padded[:, :, :, :6, :7][real_rows], attention[real_rows], atol=1e-5, rtol=1e-5)


def test_incremental_steps_reproduce_teacher_forcing(variant: str) -> None:
    model = build(variant).eval()
    src, src_mask, tgt_in, _ = make_batch([5, 3, 7], [4, 6, 2])
    with torch.no_grad():
        logits, attention = model(src, src_mask, tgt_in, need_weights=True)
        state = model.init_state(model.encode(src, src_mask), src_mask)
        for t in range(tgt_in.size(1)):
            logprobs, state, step_attention = model.step(tgt_in[:, t], state)
            assert logprobs.dtype == torch.float32
            torch.testing.assert_close(logprobs, logits[:, t].log_softmax(-1), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(step_attention, attention[:, :, :, t], atol=1e-5, rtol=1e-5)


def test_reorder_state_selects_the_right_entries(variant: str) -> None:
    model = build(variant).eval()
    src, src_mask, tgt_in, _ = make_batch([5, 3, 7], [4, 6, 4])
    index = torch.tensor([2, 0, 2, 1])
    with torch.no_grad():
        state = model.init_state(model.encode(src, src_mask), src_mask)
        for t in range(2):
            _, state, _ = model.step(tgt_in[:, t], state)
        expected, _, expected_attention = model.step(tgt_in[:, 2], state)
        reordered = model.reorder_state(state, index)
        got, _, got_attention = model.step(tgt_in[index, 2], reordered)
    torch.testing.assert_close(got, expected[index], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_attention, expected_attention[index], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(got[0], got[1])  # entries really differ, so selection was tested


def test_overfits_eight_sentences(variant: str) -> None:
    model = build(variant).train()
    src, src_mask, tgt_in, tgt_out = make_batch([4, 6, 5, 7, 3, 6, 5, 4], [5, 4, 6, 7, 3, 5, 6, 4], seed=7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2 if variant.startswith("transformer") else 3e-2)
    losses = []
    for _ in range(120):  # all variants get there in < 60 steps; stop as soon as they do
        logits, _ = model(src, src_mask, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tgt_out.reshape(-1), ignore_index=PAD_ID)
        losses.append(loss.item())
        if losses[-1] < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[0] > 2.5  # ~ln(23) at start: the task is not trivially solved
    assert losses[-1] < 0.05, f"loss still {losses[-1]:.3f} after {len(losses)} steps"


# ---- the YAML files: each composes with Hydra and instantiates as the training code will ----

# MODEL_CONFIGS: every configs/model/*.yaml; PAPER_PRESETS: the papers' sizes (GPU models, 30-180M
# parameters, marked in their YAML), composed, built and stepped in tests/test_presets.py


def compose_model(name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(overrides=[f"+model={name}"]).model


def test_all_expected_model_configs_exist() -> None:
    assert {"bahdanau", "luong", "luong_dot", "luong_concat", "transformer"} <= set(MODEL_CONFIGS)


@pytest.mark.parametrize("name", sorted(set(MODEL_CONFIGS) - set(PAPER_PRESETS)))
def test_model_yaml_instantiates_with_comparable_size(name: str) -> None:
    cfg = compose_model(name)
    model = instantiate(cfg, src_vocab_size=8000, tgt_vocab_size=8000, shared_vocab=True)
    assert isinstance(model, Seq2Seq)
    assert (model.src_vocab_size, model.tgt_vocab_size) == (8000, 8000)
    assert 5_000_000 <= model.num_parameters() <= 10_000_000
    src, src_mask, tgt_in, _ = make_batch([5, 3], [4, 2])
    logits, attention = model.eval()(src, src_mask, tgt_in, need_weights=True)
    assert logits.shape == (2, 4, 8000) and attention.shape[-2:] == (4, 5)


@pytest.mark.parametrize("name", [n for n in MODEL_CONFIGS if n.startswith("luong_") and n not in PAPER_PRESETS])
def test_luong_variants_differ_from_luong_only_in_their_attention(name: str) -> None:
    base, derived = compose_model("luong"), compose_model(name)
    assert derived.attention != base.attention
    assert {k: v for k, v in derived.items() if k != "attention"} == {k: v for k, v in base.items() if k != "attention"}


# Parameters of each shipped variant at a 97-word vocabulary, counted before attention became config
# nodes (commit 1e5ed01): a YAML or constructor change that alters a model's size shows here.
# Variants added later need no entry.
PARAMETERS_AT_VOCAB_97 = {
    "bahdanau": 1553505, "luong": 1224801, "luong_concat": 1290849, "luong_dot": 1159265,
    "luong_local_m": 1224801, "luong_local_p": 1290593, "transformer": 5555456, "transformer_window": 5555456,
}


@pytest.mark.parametrize("name", sorted(PARAMETERS_AT_VOCAB_97))
def test_shipped_variants_keep_their_parameter_count(name: str) -> None:
    model = instantiate(compose_model(name), src_vocab_size=97, tgt_vocab_size=97, shared_vocab=True)
    assert model.num_parameters() == PARAMETERS_AT_VOCAB_97[name]


def test_every_model_class_declares_its_family() -> None:
    families = {get_class(compose_model(name)._target_).family for name in MODEL_CONFIGS}
    assert families == {"rnn", "transformer"}
