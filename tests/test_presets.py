"""Paper-size model presets and the WMT14 data configs: they compose, build and train a few steps.

The presets are GPU models (30-180M parameters); here they run on the tiny corpus, narrowed where
noted (widths only: layer counts, cell types, attention and optimiser stay the preset's), and once
at full width on a two-sentence batch (marked slow).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from attnmt.config import compose
from attnmt.data.vocab import PAD_ID
from attnmt.train import train

from test_train import tiny_overrides

PAPER = {
    "transformer_base": dict(encoder_layers=6, decoder_layers=6, d_model=512, heads=8, ff_size=2048, dropout=0.1,
                             tie_embeddings=True),
    "luong_wmt": dict(step_order="luong", input_feeding=True, rnn_type="lstm", embedding_size=1000,
                      encoder_hidden_size=500, hidden_size=1000, encoder_layers=4, decoder_layers=4, dropout=0.2),
    "rnnsearch": dict(step_order="bahdanau", rnn_type="gru", embedding_size=620, encoder_hidden_size=1000,
                      hidden_size=1000, attention_size=1000, readout_size=500, encoder_layers=1, decoder_layers=1),
}
PAPER_ATTENTION = {  # the papers' global attention: general score (Luong), additive (Bahdanau)
    "luong_wmt": {"_target_": "attnmt.modules.attention.DotProductAttention", "_partial_": True, "bilinear": True, "scaled": True},
    "rnnsearch": {"_target_": "attnmt.modules.attention.AdditiveAttention", "_partial_": True},
}
NARROW = {
    "transformer_base": ["model.d_model=32", "model.ff_size=64"],  # 6 + 6 layers and 8 heads kept
    "luong_wmt": ["model.embedding_size=32", "model.encoder_hidden_size=16", "model.hidden_size=32", "model.attention_size=32"],
    "rnnsearch": ["model.embedding_size=32", "model.encoder_hidden_size=16", "model.hidden_size=32",
                  "model.attention_size=32", "model.readout_size=16"],
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_preset_composes_with_the_papers_sizes(name: str) -> None:
    cfg = compose([f"model={name}", "paths.output_dir=unused"])
    assert {key: cfg.model[key] for key in PAPER[name]} == PAPER[name]
    if name in PAPER_ATTENTION:
        assert cfg.model.attention == PAPER_ATTENTION[name]
    family = "noam" if name.startswith("transformer") else "rnn"
    assert cfg.optim.scheduler._target_.endswith("inverse_sqrt_schedule" if family == "noam" else "warmup_step_decay_schedule")
    if name == "transformer_base":
        assert (cfg.optim.scheduler.warmup_steps, cfg.optim.optimizer.lr) == (4000, 7.0e-4)


@pytest.mark.parametrize("data", ["wmt14_en_de", "wmt14_en_fr"])
def test_wmt14_configs_compose(data: str) -> None:
    cfg = compose([f"data={data}", "model=transformer_base", "paths.output_dir=unused"])
    corpus = cfg.data.corpus
    assert (corpus.path, corpus.name) == ("wmt/wmt14", "de-en" if data.endswith("de") else "fr-en")
    assert (corpus.src_lang, corpus.tgt_lang) == ("en", data[-2:])
    assert (corpus.train, corpus.val, dict(corpus.test)) == ("train", "validation", {"test": "test"})
    assert cfg.data.tokenizer.byte_fallback and cfg.data.tokenizer.joint and cfg.data.max_len == 250
    corpus_object = instantiate(corpus, export_dir="/nonexistent")  # builds without touching the network
    assert corpus_object.splits == ["train", "val", "test"]


@pytest.mark.parametrize("name", sorted(PAPER))
def test_preset_trains_a_few_steps_on_tiny_data(name: str, tiny_parallel_dir: Path, tmp_path: Path) -> None:
    overrides = [o for o in tiny_overrides(tiny_parallel_dir, tmp_path / "cache", tmp_path / "run") if not o.startswith("model")]
    cfg = compose(overrides + [f"model={name}", *NARROW[name], "debug=limit", "trainer.max_epochs=1",
                               "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "logger=none"])
    assert {k: cfg.model[k] for k in ("encoder_layers", "decoder_layers")} == {k: PAPER[name][k] for k in ("encoder_layers", "decoder_layers")}
    metrics = train(cfg)
    assert metrics["global_step"] == 2 and math.isfinite(metrics["train/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PAPER))
@pytest.mark.slow
def test_preset_builds_and_steps_at_full_width(name: str) -> None:
    """The paper's widths with a 64-piece vocabulary: one optimiser step on two short sentences."""
    torch.manual_seed(0)
    cfg = compose([f"model={name}", "paths.output_dir=unused"])
    model = instantiate(cfg.model, src_vocab_size=64, tgt_vocab_size=64, shared_vocab=True)
    src = torch.randint(4, 64, (2, 6))
    tgt = torch.randint(4, 64, (2, 5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    logits, _ = model(src, src.ne(PAD_ID), tgt)
    loss = F.cross_entropy(logits.reshape(-1, 64), tgt.reshape(-1))
    loss.backward()
    optimizer.step()
    assert logits.shape == (2, 5, 64) and math.isfinite(loss.item())
