"""Initialisation schemes (`model.init`): xavier_uniform Linear weights with zero biases, family
embedding scales, PyTorch's defaults kept on request, tied weights still tied."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnmt.errors import ConfigError
from attnmt.models.rnn_seq2seq import RNNSeq2Seq
from attnmt.models.transformer_seq2seq import TransformerSeq2Seq

from attention_nodes import attention as node

VOCAB = 500


def models(init: str) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "rnn": RNNSeq2Seq(VOCAB, VOCAB, True, attention=node("general"), step_order="luong", init=init),
        "transformer": TransformerSeq2Seq(VOCAB, VOCAB, True, init=init),
    }


def linears(model: nn.Module) -> list[nn.Linear]:
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.weight.size(0) != VOCAB]  # output may be tied


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_xavier_gives_glorot_std_and_zero_biases(family: str) -> None:
    model = models("xavier")[family]
    for layer in linears(model):
        fan_out, fan_in = layer.weight.shape
        expected = math.sqrt(2.0 / (fan_in + fan_out))
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.1)
        assert layer.bias is None or torch.all(layer.bias == 0)


@pytest.mark.parametrize("family", ["rnn", "transformer"])
def test_pytorch_scheme_keeps_the_defaults(family: str) -> None:
    model = models("pytorch")[family]
    for layer in linears(model):
        fan_in = layer.weight.size(1)
        # kaiming_uniform(a=sqrt(5)) = uniform(+-1/sqrt(fan_in)): std 1/sqrt(3 fan_in)
        assert layer.weight.std().item() == pytest.approx(1 / math.sqrt(3 * fan_in), rel=0.1)


def test_embedding_scales_per_family() -> None:
    for init in ("xavier", "pytorch"):
        transformer = models(init)["transformer"]
        # scaled by sqrt(d_model) on input: N(0, 1/d_model) whatever the scheme; one tied table
        assert transformer.src_embed.weight.std().item() == pytest.approx(transformer.d_model**-0.5, rel=0.05)
        assert transformer.output.weight is transformer.tgt_embed.weight
    assert models("xavier")["rnn"].src_embed.weight.std().item() == pytest.approx(0.1, rel=0.05)
    assert models("pytorch")["rnn"].src_embed.weight.std().item() == pytest.approx(1.0, rel=0.05)


def test_unknown_scheme_names_the_key() -> None:
    with pytest.raises(ConfigError, match="model.init='glorot'"):
        RNNSeq2Seq(VOCAB, VOCAB, True, attention=node("general"), init="glorot")
