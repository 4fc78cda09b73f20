"""Local attention (Luong local-m / local-p) and sliding-window Transformer self-attention."""

from __future__ import annotations

import math

import pytest
import torch

from attnmt.errors import ConfigError
from attnmt.models.transformer_seq2seq import TransformerSeq2Seq
from attnmt.modules.attention import MultiHeadAttention, masked_softmax
from attnmt.modules.local_attention import LocalAttention, PredictiveLocalAttention
from attnmt.modules.self_attention import FullSelfAttention
from attnmt.modules.sliding_window import SlidingWindowSelfAttention, WindowPlan, band

from attention_nodes import attention as node, build

B, TQ, S, D = 3, 5, 9, 8
LENGTHS = torch.tensor([9, 4, 6])


def source_mask(lengths: torch.Tensor = LENGTHS, length: int = S) -> torch.Tensor:
    return (torch.arange(length)[None, :] < lengths[:, None]).unsqueeze(1)  # [B, 1, S]


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, TQ, D, generator=gen), torch.randn(B, S, D, generator=gen)


@pytest.mark.parametrize("mode", ["monotonic", "predictive"])
@pytest.mark.parametrize("score", ["general", "concat", "dot"])
def test_weights_outside_the_window_are_exactly_zero(mode: str, score: str) -> None:
    torch.manual_seed(0)
    attention = build(score, D, D, attention_size=6, local=mode, half_width=2)
    query, memory = inputs()
    mask, positions = source_mask(), torch.arange(TQ) + 1
    _, weights = attention(query, memory, memory, mask, query_positions=positions)
    weights = weights[:, 0]  # [B, Tq, S]
    centres = attention.centres(query, mask, positions)  # [B, Tq]
    outside = (torch.arange(S)[None, None, :] - centres[..., None]).abs() > 2
    assert outside.any() and (~outside & mask).any()  # both kinds of positions are really present
    assert torch.all(weights[outside] == 0.0)
    assert torch.all(weights[~mask.expand_as(weights)] == 0.0)
    assert torch.all(weights.sum(-1) > 0.0)  # every row still attends somewhere


def test_local_m_centre_is_the_target_step_clamped_to_the_source() -> None:
    attention = build("dot", D, D, attention_size=6, local="monotonic", half_width=1)
    query, _ = inputs()
    centres = attention.centres(query, source_mask(), torch.arange(TQ) + 3)  # steps 3..7
    expected = torch.minimum((torch.arange(TQ) + 3)[None, :], LENGTHS[:, None] - 1).float()
    torch.testing.assert_close(centres, expected)


def test_local_p_weights_are_a_gaussian_centred_at_the_predicted_position() -> None:
    """With equal scores the windowed softmax is uniform, so the weights are exactly the Gaussian
    exp(-(s - p_t)^2 / (2 sigma^2)), sigma = D/2, over the window, peaking next to p_t."""
    torch.manual_seed(0)
    half_width = 3
    attention = build("dot", D, D, attention_size=6, local="predictive", half_width=half_width)
    query, _ = inputs()
    memory = torch.zeros(B, S, D)  # dot scores all 0
    mask = source_mask()
    _, weights = attention(query, memory, memory, mask, query_positions=torch.arange(TQ))
    weights = weights[:, 0]
    centres = attention.centres(query, mask, torch.arange(TQ))
    assert torch.all(centres >= 0) and torch.all(centres <= LENGTHS[:, None])  # p_t in [0, S_b]
    assert centres.std() > 0  # predicted from h_t, not a constant
    distance = torch.arange(S)[None, None, :] - centres[..., None]
    window = (distance.abs() <= half_width) & mask
    uniform = window / window.sum(-1, keepdim=True)
    expected = uniform * torch.exp(-distance.square() / (2 * (half_width / 2) ** 2))
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)
    peak = weights.argmax(-1)  # the kept position nearest the centre
    nearest = torch.where(window, distance.abs(), torch.inf).argmin(-1)
    assert torch.equal(peak, nearest)


def test_local_p_centre_gets_gradients() -> None:
    attention = build("general", D, D, attention_size=6, local="predictive", half_width=2)
    query, memory = inputs()
    context, _ = attention(query, memory, memory, source_mask(), query_positions=torch.arange(TQ))
    context.sum().backward()
    assert attention.position_proj.weight.grad.abs().sum() > 0  # W_p learns through the Gaussian


@pytest.mark.parametrize("score", ["general", "concat"])
def test_local_m_with_a_window_covering_the_sentence_is_global_attention(score: str) -> None:
    torch.manual_seed(0)
    local = build(score, D, D, attention_size=6, local="monotonic", half_width=S)
    query, memory = inputs()
    context, weights = local(query, memory, memory, source_mask(), query_positions=torch.arange(TQ))
    global_context, global_weights = local.scorer(query, memory, memory, source_mask())
    assert torch.equal(weights, global_weights) and torch.equal(context, global_context)


@pytest.mark.parametrize("half_width", [0, -2, 2.5, True])
def test_local_attention_config_errors_name_the_key(half_width) -> None:
    with pytest.raises(ConfigError, match=r"model\.attention\.half_width"):
        build("general", D, D, 6, local="monotonic", half_width=half_width)


def test_local_attention_needs_query_positions() -> None:
    with pytest.raises(ValueError, match="query_positions"):
        query, memory = inputs()
        build("general", D, D, 6, local="monotonic")(query, memory, memory, source_mask())
    local_p = build("general", D, D, 6, local="predictive")
    assert isinstance(local_p, LocalAttention) and isinstance(local_p, PredictiveLocalAttention)


def test_local_attention_builds_its_score_with_the_models_sizes() -> None:
    local = node("dot", local="monotonic", half_width=2)(query_size=D, key_size=D, attention_size=6)
    assert local.scorer.key_proj is None and local.half_width == 2
    with pytest.raises(ConfigError, match=r"model\.attention\.bilinear=false"):  # the wrapped score's own check
        node("dot", local="predictive")(query_size=D, key_size=D + 1, attention_size=6)


# ---- sliding-window self-attention ------------------------------------------------------------

def reference_windowed(q, k, v, key_mask, window: int, causal: bool) -> torch.Tensor:
    """Naive O(S^2) reference: softmax over the band, padding keys excluded."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # [B, H, S, S]
    keep = band(q.size(2), k.size(2), window, causal, q.device) & key_mask[:, None, None, :]
    keep = keep | torch.eye(q.size(2), dtype=torch.bool)  # the plans' rule for padding queries
    return masked_softmax(scores, keep) @ v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length,window", [(13, 2), (16, 4), (7, 3), (5, 1)])
def test_blocked_and_masked_paths_equal_the_naive_band(causal: bool, length: int, window: int) -> None:
    gen = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 3, length, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    key_mask = torch.arange(length)[None, :] < torch.tensor([length, length - 3])[:, None]
    expected = reference_windowed(q, k, v, key_mask, window, causal)
    real = key_mask[:, None, :, None].expand_as(expected)  # padding queries are nobody's business
    for blocked in (True, False):
        plan = WindowPlan.build(key_mask, window, causal, batch=2, length=length, device=q.device, force_blocked=blocked)
        got = plan.attend(q, k, v, dropout=0.0)
        torch.testing.assert_close(got[real], expected[real], atol=1e-10, rtol=1e-10)
        assert torch.isfinite(got).all()


def test_blocked_path_has_finite_gradients_with_padding() -> None:
    q, k, v = (torch.randn(2, 2, 12, 4, requires_grad=True) for _ in range(3))
    key_mask = torch.arange(12)[None, :] < torch.tensor([12, 3])[:, None]
    plan = WindowPlan.build(key_mask, 2, causal=False, batch=2, length=12, device=q.device)
    assert plan.blocked
    plan.attend(q, k, v, dropout=0.0).sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_window_covering_the_sentence_reproduces_full_attention_exactly() -> None:
    kwargs = dict(encoder_layers=2, decoder_layers=2, d_model=16, heads=2, ff_size=32, dropout=0.0)
    torch.manual_seed(0)
    full = TransformerSeq2Seq(23, 23, True, **kwargs).eval()
    windowed = TransformerSeq2Seq(23, 23, True, encoder_self_attention=SlidingWindowSelfAttention(40),
                                  decoder_self_attention=SlidingWindowSelfAttention(40), **kwargs).eval()
    windowed.load_state_dict(full.state_dict())  # windows add no parameters
    src = torch.randint(4, 23, (3, 9))
    src_mask = torch.arange(9)[None, :] < torch.tensor([9, 5, 7])[:, None]
    tgt = torch.randint(4, 23, (3, 6))
    logits, attention = full(src, src_mask, tgt, need_weights=True)
    logits_windowed, attention_windowed = windowed(src, src_mask, tgt, need_weights=True)
    torch.testing.assert_close(logits_windowed, logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(attention_windowed, attention, atol=1e-6, rtol=1e-6)


def test_a_short_window_really_restricts_the_encoder() -> None:
    """Changing a token far outside every window leaves a distant position's encoder output unchanged."""
    torch.manual_seed(0)
    model = TransformerSeq2Seq(23, 23, True, encoder_layers=2, decoder_layers=1, d_model=16, heads=2, ff_size=32,
                               dropout=0.0, encoder_self_attention=SlidingWindowSelfAttention(2)).eval()
    src = torch.randint(4, 23, (1, 20))
    changed = src.clone()
    changed[0, 19] = (src[0, 19] - 3) % 19 + 4
    mask = torch.ones(1, 20, dtype=torch.bool)
    memory, memory_changed = model.encode(src, mask), model.encode(changed, mask)
    # 2 layers x window 2: position 19 reaches positions >= 15 only
    torch.testing.assert_close(memory_changed[0, :15], memory[0, :15], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(memory_changed[0, 15:], memory[0, 15:])


def test_windowed_dropout_runs_in_training_mode() -> None:
    attention = MultiHeadAttention(8, heads=2, dropout=0.5).train()
    x = torch.randn(2, 16, 8)
    plan = WindowPlan.build(None, 2, causal=False, batch=2, length=16, device=x.device)
    q, (k, v) = attention.project_query(x), attention.project_kv(x, x)
    out = attention.attend_windowed(q, k, v, plan)
    assert out.shape == (2, 16, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("value", [0, -3, 2.5, None])
def test_window_config_errors_name_the_key(value) -> None:
    with pytest.raises(ConfigError, match=r"window=.*model\.encoder_self_attention"):
        SlidingWindowSelfAttention(value)


@pytest.mark.parametrize("key", ["encoder_self_attention", "decoder_self_attention"])
def test_a_self_attention_that_is_not_a_pattern_names_the_key(key: str) -> None:
    with pytest.raises(ConfigError, match=f"model.{key}"):
        TransformerSeq2Seq(23, 23, True, d_model=16, heads=2, **{key: 4})  # the old window int


def test_one_pattern_object_per_stack_shared_by_its_layers() -> None:
    window = SlidingWindowSelfAttention(3)
    model = TransformerSeq2Seq(23, 23, True, encoder_layers=2, decoder_layers=2, d_model=16, heads=2,
                               encoder_self_attention=window)
    assert all(layer.pattern is window for layer in model.encoder.layers)
    assert all(isinstance(layer.pattern, FullSelfAttention) for layer in model.decoder.layers)
    assert len({id(layer.pattern) for layer in model.decoder.layers}) == 1
