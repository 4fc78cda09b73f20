"""The RNN attention nodes of configs/model/*.yaml as the factories Hydra builds from them
(`_partial_: true`), for tests that construct models and attentions directly."""

from __future__ import annotations

from functools import partial

from attnmt.modules.attention import AdditiveAttention, DotProductAttention
from attnmt.modules.local_attention import MonotonicLocalAttention, PredictiveLocalAttention
from attnmt.modules.sparsemax_attention import SparsemaxAttention

SCORES = ("additive", "concat", "dot", "general")


def attention(score: str = "general", local: str | None = None, half_width: int = 5, scaled: bool = True,
              sparsemax: bool = False):
    """score: additive | concat | dot | general; local: None | monotonic | predictive -> a factory."""
    if score in ("additive", "concat"):
        factory = partial(AdditiveAttention)
    else:
        factory = partial(DotProductAttention, bilinear=score == "general", scaled=scaled)
    if sparsemax:
        factory = partial(SparsemaxAttention, score=factory)
    if local is not None:
        wrapper = {"monotonic": MonotonicLocalAttention, "predictive": PredictiveLocalAttention}[local]
        factory = partial(wrapper, score=factory, half_width=half_width)
    return factory


def build(score: str, query_size: int, key_size: int, attention_size: int, **options):
    """The attention a model with these sizes builds from the node (see modules/attention.py: the contract)."""
    return attention(score, **options)(query_size=query_size, key_size=key_size, attention_size=attention_size)
