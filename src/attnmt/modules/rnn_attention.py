"""The single-head attention of an RNN decoder, built from its config strings.

Sits above attention.py (the scores) and local_attention.py (the window around any score), so
neither imports the other's builder.
"""

from __future__ import annotations

from torch import nn

from attnmt.errors import ConfigError
from attnmt.modules.attention import AdditiveAttention, DotProductAttention
from attnmt.modules.local_attention import LocalAttention


def _additive(query_size: int, key_size: int, attention_size: int, scaled: bool, config_key: str) -> nn.Module:
    return AdditiveAttention(query_size, key_size, attention_size)  # scaling does not apply to an MLP score


def _dot(query_size: int, key_size: int, attention_size: int, scaled: bool, config_key: str) -> nn.Module:
    return DotProductAttention(query_size, key_size, bilinear=False, scaled=scaled, config_key=config_key)


def _general(query_size: int, key_size: int, attention_size: int, scaled: bool, config_key: str) -> nn.Module:
    return DotProductAttention(query_size, key_size, bilinear=True, scaled=scaled, config_key=config_key)


# score name (model.score) -> the attention computing it; a new score is one entry here
RNN_SCORES = {"additive": _additive, "concat": _additive, "dot": _dot, "general": _general}


def build_rnn_attention(
    score: str,
    query_size: int,
    key_size: int,
    attention_size: int,
    local: str | None = None,
    local_window: int = 5,
    scale_scores: bool = True,
    config_key: str = "model.score",
) -> nn.Module:
    """`score` the score function, `local` None (global) or a LocalAttention mode with half-width
    `local_window`; `scale_scores` divides dot/general scores by sqrt(query_size) (no effect on additive/concat)."""
    if score not in RNN_SCORES:
        raise ConfigError(f"{config_key}={score!r} is not a known attention score; choose one of {', '.join(RNN_SCORES)}")
    scorer = RNN_SCORES[score](query_size, key_size, attention_size, scale_scores, config_key)
    if local is None:
        return scorer
    return LocalAttention(scorer, query_size, local, local_window, predictor_size=attention_size)
