"""Learning-rate schedules, as multipliers of the optimizer's base (peak) rate.

Each factory takes the optimizer first so configs can give it as a `_partial_` and the task
completes it: `scheduler = cfg.optim.scheduler(optimizer)`.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from attnmt.errors import ConfigError


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"optim.scheduler.{key} must be >= 0, got {value}")


def inverse_sqrt_schedule(optimizer: Optimizer, warmup_steps: int = 4000) -> LambdaLR:
    """Linear warmup to the peak rate over `warmup_steps`, then decay as sqrt(warmup / step)."""
    _check_positive(warmup_steps=warmup_steps)
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        step = step + 1  # LambdaLR starts at 0; the first update should not use rate 0
        return min(step / warmup, math.sqrt(warmup / step))

    return LambdaLR(optimizer, factor)


def warmup_step_decay_schedule(
    optimizer: Optimizer, warmup_steps: int = 100, decay_start: int = 2000, decay_every: int = 500, decay: float = 0.7
) -> LambdaLR:
    """Linear warmup, constant rate, then multiply by `decay` every `decay_every` steps."""
    _check_positive(warmup_steps=warmup_steps, decay_start=decay_start, decay_every=decay_every, decay=decay)
    warmup, every = max(1, warmup_steps), max(1, decay_every)

    def factor(step: int) -> float:
        step = step + 1
        ramp = min(1.0, step / warmup)
        decays = max(0, step - decay_start) // every
        return ramp * decay**decays

    return LambdaLR(optimizer, factor)


def constant_schedule(optimizer: Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """Linear warmup, then the base rate unchanged (for overfitting and debugging)."""
    _check_positive(warmup_steps=warmup_steps)
    warmup = max(1, warmup_steps)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
