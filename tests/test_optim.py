"""Learning-rate schedules: shapes of the curves, not just that they run."""

import math

import pytest
import torch

from attnmt.errors import ConfigError
from attnmt.optim import constant_schedule, inverse_sqrt_schedule, warmup_step_decay_schedule


def _rates(make, steps, **kwargs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make(optimizer, **kwargs)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_inverse_sqrt_warms_up_linearly_then_decays_as_inverse_sqrt():
    rates = _rates(inverse_sqrt_schedule, 400, warmup_steps=100)
    assert rates[0] == pytest.approx(1 / 100)
    assert rates[49] == pytest.approx(50 / 100)
    assert max(rates) == pytest.approx(1.0) and rates.index(max(rates)) == 99
    assert rates[399] == pytest.approx(math.sqrt(100 / 400))


def test_step_decay_is_constant_then_multiplies_by_decay():
    rates = _rates(warmup_step_decay_schedule, 60, warmup_steps=5, decay_start=20, decay_every=10, decay=0.5)
    assert rates[4] == pytest.approx(1.0) and rates[18] == pytest.approx(1.0)
    assert rates[29] == pytest.approx(0.5) and rates[39] == pytest.approx(0.25)


def test_constant_schedule_and_bad_values():
    assert set(_rates(constant_schedule, 5)) == {1.0}
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="optim.scheduler.warmup_steps"):
        inverse_sqrt_schedule(optimizer, warmup_steps=-1)

