"""Special token ids and the mask convention, fixed once for the whole project.

Nothing else hard-codes these ids or compares token ids to PAD_ID: use `padding_mask`.
"""

from __future__ import annotations

import torch

PAD_ID = 0  # padding; never predicted, ignored by the loss
UNK_ID = 1  # unknown piece (rare with sentencepiece byte fallback off)
BOS_ID = 2  # begin of sentence: first decoder input
EOS_ID = 3  # end of sentence: last decoder output

PAD_PIECE, UNK_PIECE, BOS_PIECE, EOS_PIECE = "<pad>", "<unk>", "<s>", "</s>"


def padding_mask(ids: torch.Tensor) -> torch.Tensor:
    """Mask convention: True = a real token (keep), False = padding.

    ids: [B, T] long -> [B, T] bool
    """
    return ids.ne(PAD_ID)
