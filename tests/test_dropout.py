"""The fast CPU dropout (modules/dropout.py) behaves like dropout."""

from __future__ import annotations

import pytest
import torch

from attnmt.modules.dropout import Dropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drops_the_requested_fraction_and_keeps_the_expectation(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002  # 1e6 samples: std of the fraction ~5e-4
    assert abs(y.mean().item() - 1.0) < 0.003  # kept values are scaled by 1 / (1 - p)
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, kept[0].item()))  # one scale for all


def test_mask_bits_are_not_correlated_across_neighbours() -> None:
    torch.manual_seed(0)
    keep, _ = keep_mask(torch.Size([4, 250_000]), 0.5, torch.device("cpu"))
    a, b = keep[:, :-1].float().flatten(), keep[:, 1:].float().flatten()  # 16-bit neighbours share a word
    correlation = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(correlation) < 0.01


def test_gradient_is_the_same_mask_and_scale() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    y.sum().backward()
    factor = torch.where(y != 0, y / x, torch.zeros_like(y)).detach()  # mask * scale, read off the output
    torch.testing.assert_close(x.grad, factor)


def test_eval_mode_zero_p_and_seeding() -> None:
    module = Dropout(0.3)
    x = torch.randn(8, 8)
    assert torch.equal(module.eval()(x), x)
    assert torch.equal(dropout(x, 0.0, training=True), x)
    module.train()
    torch.manual_seed(5)
    first = module(x)
    torch.manual_seed(5)
    assert torch.equal(module(x), first) and not torch.equal(first, x)
