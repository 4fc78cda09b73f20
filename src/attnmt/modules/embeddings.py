"""Token embeddings (one shared table when tied) and sinusoidal positions."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from attnmt.errors import ConfigError

log = logging.getLogger(__name__)


def tied_embeddings(
    src_vocab_size: int, tgt_vocab_size: int, size: int, shared_vocab: bool, tie: bool
) -> tuple[nn.Embedding, nn.Embedding]:
    """(source, target) embeddings; one shared table when the vocabulary is joint and tying is asked.

    With separate vocabularies a source/target table cannot be shared: only the target input
    and output embeddings get tied (by the caller), and a log line says so.
    """
    target = nn.Embedding(tgt_vocab_size, size)
    if tie and shared_vocab:
        if src_vocab_size != tgt_vocab_size:
            raise ConfigError(
                f"shared_vocab is set but src_vocab_size={src_vocab_size} != tgt_vocab_size={tgt_vocab_size}"
            )
        return target, target
    if tie:
        log.info("tie_embeddings with separate vocabularies: tying only target input and output embeddings")
    return nn.Embedding(src_vocab_size, size), target


def sinusoidal_positions(positions: torch.Tensor, size: int) -> torch.Tensor:
    """Vaswani et al. (2017) positions: positions [T] long -> [T, size] float32.

    Computed on the fly (cheap next to a layer) so there is no maximum length.
    """
    half = size // 2
    # frequency of pair i is 10000^(-2i/size)
    frequencies = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32) * (-2.0 * math.log(10000.0) / size))
    angles = positions.float().unsqueeze(1) * frequencies.unsqueeze(0)  # [T, size/2]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if size % 2:
        table = torch.nn.functional.pad(table, (0, 1))
    return table
