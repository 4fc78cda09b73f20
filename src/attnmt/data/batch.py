"""The Batch every model, loss and search sees (the collate function in batching.py builds it)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """A padded batch of sentence pairs. Masks: True = real token (see vocab.padding_mask).

    src:      [B, S] long  source ids, no BOS, ending in EOS, right-padded with PAD_ID
    src_mask: [B, S] bool
    tgt_in:   [B, T] long  BOS y1 .. yn      (decoder input, teacher forcing)
    tgt_out:  [B, T] long  y1 .. yn EOS      (what the decoder must predict)
    tgt_mask: [B, T] bool  True where tgt_out is a real token (EOS included)
    index:    [B]    long  position of each pair in its split (to align hypotheses with references)
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    tgt_mask: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)})

    def pin_memory(self) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in fields(self)})

    def __len__(self) -> int:
        return self.src.size(0)

    @property
    def src_lengths(self) -> torch.Tensor:
        """[B] long number of real source tokens."""
        return self.src_mask.sum(dim=1)
