"""The constructor checks every model shares, and its parameter count.

A size or rate that cannot work raises ConfigError naming `model.<key>`, so the CLI prints one
`error:` line instead of a failure deep inside torch.
"""

from __future__ import annotations

from torch import nn

from attnmt.errors import ConfigError


def require_positive(**sizes: int) -> None:
    """Raise ConfigError naming `model.<key>` for any size that is not a positive integer."""
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"model.{key}={value!r} must be a positive integer")


def require_dropout(dropout: float, key: str = "dropout") -> None:
    if not 0.0 <= float(dropout) < 1.0:
        raise ConfigError(f"model.{key}={dropout!r} must be in [0, 1)")


def count_parameters(module: nn.Module) -> int:
    """Number of distinct trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
