"""Under autocast (bf16 on a GPU, tested here with the CPU's bf16 autocast) the RNN encoder and
decoder cells, the bridge and the single-head attention stay in float32 (modules/precision.py)."""

from __future__ import annotations

import pytest
import torch

from attnmt.data.vocab import BOS_ID, EOS_ID, PAD_ID, padding_mask
from attnmt.models.rnn_seq2seq import RNNSeq2Seq

from attention_nodes import attention as node

VOCAB = 40
SIZES = dict(embedding_size=32, encoder_hidden_size=16, hidden_size=32, attention_size=24, readout_size=32, dropout=0.0)
VARIANTS = {
    "bahdanau": dict(step_order="bahdanau", attention=node("additive"), input_feeding=False),
    "luong_general": dict(step_order="luong", attention=node("general"), input_feeding=True),
    "luong_dot_no_feeding": dict(step_order="luong", attention=node("dot"), input_feeding=False),
    "luong_local_m_lstm": dict(step_order="luong", attention=node("general", local="monotonic"), input_feeding=True, rnn_type="lstm"),
    "luong_sparsemax": dict(step_order="luong", attention=node("general", sparsemax=True), input_feeding=True),
}


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    src = torch.randint(4, VOCAB, (3, 9), generator=generator)
    src[:, -1] = EOS_ID
    src[1, 6:] = PAD_ID
    src[1, 5] = EOS_ID
    tgt_in = torch.randint(4, VOCAB, (3, 11), generator=generator)
    tgt_in[:, 0] = BOS_ID
    return src, padding_mask(src), tgt_in


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rnn_states_and_attention_stay_float32_under_bf16_autocast(variant: str) -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(VOCAB, VOCAB, True, **SIZES, **VARIANTS[variant]).eval()
    src, src_mask, tgt_in = batch()
    with torch.no_grad():
        reference_logits, reference_attention = model(src, src_mask, tgt_in, need_weights=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            memory = model.encode(src, src_mask)
            state = model.init_state(memory, src_mask)
            logits, attention = model(src, src_mask, tgt_in, need_weights=True)
            _, stepped, step_attention = model.step(tgt_in[:, 0], state)
    assert memory.outputs.dtype == torch.float32
    assert all(h.dtype == torch.float32 for h in state.hidden + stepped.hidden)
    assert attention.dtype == torch.float32 and step_attention.dtype == torch.float32
    # only the output projection ran in bf16: the attention matches the fp32 run to float32 noise
    torch.testing.assert_close(attention, reference_attention, atol=1e-5, rtol=1e-5)
    assert logits.dtype == torch.bfloat16  # the large output projection still gets autocast's speed
    torch.testing.assert_close(logits.float(), reference_logits, atol=0.05, rtol=0.02)


def test_without_autocast_nothing_changes_dtype() -> None:
    torch.manual_seed(0)
    model = RNNSeq2Seq(VOCAB, VOCAB, True, **SIZES, **VARIANTS["luong_general"]).eval()
    src, src_mask, tgt_in = batch()
    logits, attention = model(src, src_mask, tgt_in, need_weights=True)
    assert logits.dtype == attention.dtype == torch.float32
