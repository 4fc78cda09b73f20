"""The one attention interface: additive, Luong dot/general/concat, sparsemax, multi-head."""

from __future__ import annotations

import math

import pytest
import torch

from attnmt.errors import ConfigError
from attnmt.modules.attention import (
    AdditiveAttention,
    DotProductAttention,
    MultiHeadAttention,
    masked_softmax,
)
from attnmt.modules.sparsemax_attention import masked_sparsemax

from attention_nodes import build

B, TQ, TK, D = 3, 4, 6, 8
LENGTHS = torch.tensor([6, 2, 4])


def key_mask(lengths: torch.Tensor = LENGTHS, tk: int = TK) -> torch.Tensor:
    """[B, 1, Tk] True on the first `length` keys."""
    return (torch.arange(tk)[None, :] < lengths[:, None]).unsqueeze(1)


def inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(B, TQ, D, generator=gen).to(dtype)
    memory = torch.randn(B, TK, D, generator=gen).to(dtype)
    return query, memory


def all_attentions() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    rnn = {score: build(score, D, D, attention_size=5) for score in ("additive", "concat", "dot", "general")}
    sparse = {"sparsemax_general": build("general", D, D, attention_size=5, sparsemax=True)}
    return {**rnn, **sparse, "multihead": MultiHeadAttention(D, heads=2)}


@pytest.mark.parametrize("name", ["additive", "concat", "dot", "general", "sparsemax_general", "multihead"])
def test_shapes_sums_and_zero_weight_on_padding(name: str) -> None:
    attention = all_attentions()[name]
    query, memory = inputs()
    context, weights = attention(query, memory, memory, key_mask())
    heads = 2 if name == "multihead" else 1
    assert context.shape == (B, TQ, D)
    assert weights.shape == (B, heads, TQ, TK)
    padding = ~key_mask().unsqueeze(1).expand_as(weights)
    assert torch.all(weights[padding] == 0.0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(B, heads, TQ))
    _, no_weights = attention(query, memory, memory, key_mask(), need_weights=False)
    assert no_weights is None


@pytest.mark.parametrize("name", ["additive", "concat", "dot", "general", "sparsemax_general"])
def test_precomputed_keys_give_the_same_result(name: str) -> None:
    attention = all_attentions()[name]
    query, memory = inputs()
    context, weights = attention(query, memory, memory, key_mask())
    cached, cached_weights = attention(query, memory, memory, key_mask(), projected_keys=attention.precompute(memory))
    torch.testing.assert_close(cached, context)
    torch.testing.assert_close(cached_weights, weights)


def test_additive_score_matches_the_formula() -> None:
    attention = AdditiveAttention(D, D, attention_size=5)
    query, memory = inputs()
    _, weights = attention(query, memory, memory, key_mask())
    b, i = 0, 1  # all keys real in row 0
    scores = torch.stack(
        [
            attention.energy.weight[0] @ torch.tanh(attention.query_proj.weight @ query[b, i] + attention.key_proj(memory[b, j]))
            for j in range(TK)
        ]
    )
    torch.testing.assert_close(weights[b, 0, i], scores.softmax(-1))


@pytest.mark.parametrize("scaled", [True, False])
def test_dot_and_general_scores_match_the_formula(scaled: bool) -> None:
    query, memory = inputs()
    scale = D**-0.5 if scaled else 1.0  # scaled (the default): divided by sqrt(key width)
    dot = DotProductAttention(D, D, bilinear=False, scaled=scaled)
    general = DotProductAttention(D, D, bilinear=True, scaled=scaled)
    _, dot_weights = dot(query, memory, memory, key_mask())
    _, general_weights = general(query, memory, memory, key_mask())
    torch.testing.assert_close(dot_weights[0, 0, 2], (scale * memory[0] @ query[0, 2]).softmax(-1))
    bilinear = memory[0] @ general.key_proj.weight.T @ query[0, 2]
    torch.testing.assert_close(general_weights[0, 0, 2], (scale * bilinear).softmax(-1))


def test_scaling_is_the_default() -> None:
    query, memory = inputs()
    default = DotProductAttention(D, D, bilinear=False)
    _, weights = default(query, memory, memory, key_mask())
    torch.testing.assert_close(weights[0, 0, 2], (D**-0.5 * memory[0] @ query[0, 2]).softmax(-1))


def test_multihead_sdpa_and_explicit_paths_agree() -> None:
    attention = MultiHeadAttention(D, heads=2).eval()
    query, memory = inputs()
    explicit, weights = attention(query, memory, memory, key_mask(), need_weights=True)
    fused, _ = attention(query, memory, memory, key_mask(), need_weights=False)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    # causal self-attention too (the decoder's training path)
    causal_explicit, causal_weights = attention(memory, memory, memory, None, need_weights=True, is_causal=True)
    causal_fused, _ = attention(memory, memory, memory, None, need_weights=False, is_causal=True)
    torch.testing.assert_close(causal_fused, causal_explicit, atol=1e-5, rtol=1e-5)
    assert torch.all(causal_weights.triu(diagonal=1) == 0.0)


def test_multihead_weights_are_softmax_of_scaled_scores() -> None:
    attention = MultiHeadAttention(D, heads=2)
    query, memory = inputs()
    _, weights = attention(query, memory, memory, key_mask())
    q = attention.project_query(query)
    k, _ = attention.project_kv(memory, memory)
    scores = q[0, 1] @ k[0, 1].T / math.sqrt(D // 2)  # row 0 has no padding
    torch.testing.assert_close(weights[0, 1], scores.softmax(-1))


@pytest.mark.parametrize("name", ["additive", "concat", "dot", "general", "sparsemax_general", "multihead"])
def test_fully_masked_row_gives_zeros_and_finite_gradients(name: str) -> None:
    attention = all_attentions()[name]
    query, memory = inputs()
    memory.requires_grad_(True)
    mask = key_mask(torch.tensor([6, 0, 4]))  # batch entry 1 has no real key at all
    # the weighted sum is zero; multi-head attention then adds its output projection's bias
    empty = attention.out_proj.bias.detach() if name == "multihead" else torch.zeros(D)
    for need_weights in (True, False):
        context, weights = attention(query, memory, memory, mask, need_weights=need_weights)
        assert torch.isfinite(context).all()
        assert torch.equal(context[1].detach(), empty.expand(TQ, D))
        if weights is not None:
            assert torch.all(weights[1] == 0.0)
        if need_weights:  # the explicit path must also train safely
            (grad,) = torch.autograd.grad(context.sum(), memory)
            assert torch.isfinite(grad).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["additive", "general", "multihead"])
def test_low_precision_masking_keeps_padding_at_zero(name: str, dtype: torch.dtype) -> None:
    attention = all_attentions()[name].to(dtype)
    query, memory = inputs(dtype)
    query = query * 30  # large scores: a finite fill value that is too small would leak weight
    context, weights = attention(query, memory, memory, key_mask())
    assert weights.dtype == dtype and torch.isfinite(context).all()
    padding = ~key_mask().unsqueeze(1).expand_as(weights)
    assert torch.all(weights[padding] == 0.0)
    torch.testing.assert_close(weights.float().sum(-1), torch.ones(weights.shape[:-1]), atol=2e-2, rtol=0)


def test_masked_softmax_on_bf16_extremes() -> None:
    scores = torch.tensor([[-3.0e38, 1.0e38, 5.0]], dtype=torch.bfloat16)
    mask = torch.tensor([[True, False, True]])
    weights = masked_softmax(scores, mask)
    assert weights[0, 1] == 0.0 and torch.isfinite(weights).all()
    assert weights[0, 2] == 1.0


def test_dot_score_with_mismatched_sizes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.attention\.bilinear=false"):
        build("dot", 8, 16, 5)


def test_sparsemax_is_a_sparse_distribution_on_real_keys() -> None:
    scores = torch.tensor([[[3.0, 1.0, 0.2, 2.9, 9.0], [0.1, 0.2, 0.3, 0.4, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]])
    mask = torch.tensor([[[True, True, True, True, False]]])
    weights = masked_sparsemax(scores, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 3))
    assert torch.all(weights[..., 4] == 0.0)  # padding, however high its score
    torch.testing.assert_close(weights[0, 0], torch.tensor([0.55, 0.0, 0.0, 0.45, 0.0]))  # tau = 2.45: two keys left
    torch.testing.assert_close(weights[0, 2], torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0]))  # ties share equally
    empty = masked_sparsemax(scores[:, :1], torch.zeros(1, 1, 5, dtype=torch.bool))
    assert torch.all(empty == 0.0)  # a row without real keys: zeros, not NaN


def test_sparsemax_gradient_is_the_projections_jacobian() -> None:
    scores = torch.randn(2, 3, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    mask = key_mask(torch.tensor([6, 4]), 6)
    masked_scores = scores.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: masked_sparsemax(z, mask), (masked_scores,))


@pytest.mark.parametrize("heads", [3, 0, -2])
def test_heads_must_divide_d_model(heads: int) -> None:
    with pytest.raises(ConfigError, match=r"model\.heads"):
        MultiHeadAttention(D, heads=heads)
