"""Luong's dot/general scores, unscaled, saturate their softmax on real Multi30k batches within a
few updates (rows one-hot to float precision, so no gradient reaches the other positions);
divided by sqrt(d) (the default, model.attention.scaled=true) they stay a soft distribution.

A short real run of the default-size Luong model (general score, default init) on the first
Multi30k batches, the same seed and batches for both settings; the statistics are measured on a
validation batch: mean entropy (nats) and mean largest weight of the attention rows. (Both
settings look at the sentence end this early; only the unscaled one is saturated there.)
"""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch
from torch.nn import functional as F

from attnmt.data.vocab import PAD_ID
from attnmt.models.rnn_seq2seq import RNNSeq2Seq
from attnmt.modules.attention import DotProductAttention

UPDATES = 10
ROWS_PER_BATCH = 32  # the first sentences of each 4096-token batch keep the test short


def attention_statistics_after_training(datamodule, scale_scores: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = RNNSeq2Seq(datamodule.src_vocab_size, datamodule.tgt_vocab_size, datamodule.joint_vocab,
                       step_order="luong", attention=partial(DotProductAttention, bilinear=True, scaled=scale_scores))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch in itertools.islice(datamodule.train_dataloader(), UPDATES):
        rows = slice(0, ROWS_PER_BATCH)
        logits, _ = model(batch.src[rows], batch.src_mask[rows], batch.tgt_in[rows])
        loss = F.cross_entropy(logits.flatten(0, 1), batch.tgt_out[rows].flatten(), ignore_index=PAD_ID)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    val = next(iter(datamodule.val_dataloader()))
    with torch.no_grad():
        _, weights = model.eval()(val.src, val.src_mask, val.tgt_in, need_weights=True)
    weights = weights[:, 0, 0][val.tgt_mask]  # [real target positions, S]
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1).mean().item()
    return entropy, weights.amax(-1).mean().item()


@pytest.mark.slow
def test_scaled_scores_do_not_saturate_where_unscaled_ones_do(multi30k_datamodule) -> None:
    unscaled_entropy, unscaled_max = attention_statistics_after_training(multi30k_datamodule, scale_scores=False)
    scaled_entropy, scaled_max = attention_statistics_after_training(multi30k_datamodule, scale_scores=True)
    # unscaled: one-hot rows (a row spread evenly over ~15 source subwords has entropy ~2.7)
    assert unscaled_max > 0.99 and unscaled_entropy < 0.05, (unscaled_entropy, unscaled_max)
    assert scaled_max < 0.9 and scaled_entropy > 0.5, (scaled_entropy, scaled_max)
