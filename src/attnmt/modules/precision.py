"""Regions that must stay in float32 when the rest of a model runs under autocast (bf16/fp16).

Autocast puts GRUCell, LSTMCell, nn.GRU/nn.LSTM, Linear and bmm on its lower-precision list.
For a recurrence that would round the decoder state to bf16's 8-bit mantissa at every time step
(the error compounds over the sentence), and the single-head attention scores with it. Inside
`float32_region` autocast is off and the inputs are cast up, so the RNN cells, the bridge and
the attention run in float32; the large output projection outside it still gets bf16.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def float32_region(device_type: str) -> Iterator[None]:
    """Disable autocast for `device_type` ("cpu", "cuda", ...) inside the block."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type=device_type, enabled=False):
            yield
    else:
        yield


def to_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Cast a floating tensor up to float32 (a no-op when it already is)."""
    return tensor.float() if tensor.is_floating_point() and tensor.dtype != torch.float32 else tensor
