"""Checkpoints written before attention became config nodes (model configs with `attention:
luong|bahdanau`, `score`, `local_attention`, `local_window`, `scale_scores`, or the Transformer's
`encoder_window` / `decoder_window` ints) still load, translate and resume (models/legacy.py)."""

from __future__ import annotations

import torch

from attnmt.checkpoint import CONFIG_KEY, load_checkpoint_file
from attnmt.config import compose
from attnmt.data.vocab import padding_mask
from attnmt.inference import load_for_inference
from attnmt.models.legacy import upgrade_model_config
from attnmt.train import resume_config, train

from test_reliability import LONG_RUN
from test_train import tiny_overrides

RNN = "attnmt.models.rnn_seq2seq.RNNSeq2Seq"
SIZES = {"rnn_type": "gru", "embedding_size": 256, "encoder_hidden_size": 128, "hidden_size": 256, "attention_size": 256,
         "readout_size": 256, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.3, "tie_embeddings": False,
         "init": "pytorch"}
GENERAL = {"_target_": "attnmt.modules.attention.DotProductAttention", "_partial_": True, "bilinear": True, "scaled": True}


def test_old_rnn_configs_become_attention_nodes() -> None:
    # configs/model/bahdanau.yaml as it was (no scale_scores key)
    old_bahdanau = {"_target_": RNN, "attention": "bahdanau", "score": "additive", "input_feeding": False,
                    "local_attention": None, "local_window": 5, **SIZES}
    assert upgrade_model_config(old_bahdanau) == {
        "_target_": RNN, "step_order": "bahdanau", "input_feeding": False, **SIZES,
        "attention": {"_target_": "attnmt.modules.attention.AdditiveAttention", "_partial_": True}}
    # luong.yaml overridden as the scaling ablation ran it, with local-p switched on
    old_local_p = {"_target_": RNN, "attention": "luong", "score": "dot", "scale_scores": False, "input_feeding": True,
                   "local_attention": "predictive", "local_window": 10, **SIZES}
    assert upgrade_model_config(old_local_p) == {
        "_target_": RNN, "step_order": "luong", "input_feeding": True, **SIZES,
        "attention": {"_target_": "attnmt.modules.local_attention.PredictiveLocalAttention", "_partial_": True,
                      "half_width": 10, "score": {**GENERAL, "bilinear": False, "scaled": False}}}


def test_old_transformer_windows_become_self_attention_nodes() -> None:
    old = {"_target_": "attnmt.models.transformer_seq2seq.TransformerSeq2Seq", "d_model": 256,
           "encoder_window": 4, "decoder_window": None}
    assert upgrade_model_config(old) == {
        "_target_": old["_target_"], "d_model": 256,
        "encoder_self_attention": {"_target_": "attnmt.modules.sliding_window.SlidingWindowSelfAttention", "window": 4},
        "decoder_self_attention": {"_target_": "attnmt.modules.self_attention.FullSelfAttention"}}


def test_todays_configs_and_values_the_old_code_refused_are_left_alone() -> None:
    for name in ("luong_local_p", "transformer_window", "bahdanau"):
        today = compose([f"model={name}"]).model
        plain = {key: today[key] for key in today}
        assert upgrade_model_config(plain) is plain
    odd = {"_target_": RNN, "attention": "luong", "score": "cosine"}
    assert upgrade_model_config(odd) is odd  # the model then names model.attention in one error line


def test_an_old_checkpoint_translates_the_same_and_resumes(tiny_parallel_dir, tmp_path) -> None:
    """A tiny local-p run whose stored configs are rewritten the way attnmt wrote them before."""
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_parallel_dir, tmp_path / "cache", run, "luong_local_p") + LONG_RUN
    train(compose(overrides + ["trainer.max_steps=2"]))
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint_file(last)
    new = checkpoint["hyper_parameters"]["model"]
    assert new["attention"]["_target_"].endswith("PredictiveLocalAttention")
    old = {key: value for key, value in new.items() if key not in ("attention", "step_order")}
    old.update(attention="luong", score="general", scale_scores=True, local_attention="predictive",
               local_window=new["attention"]["half_width"])
    checkpoint["hyper_parameters"]["model"] = old
    checkpoint[CONFIG_KEY]["model"] = dict(old)
    old_path = run / "checkpoints" / "old.ckpt"
    torch.save(checkpoint, old_path)

    model, _, hparams = load_for_inference(old_path)  # strict state_dict load: same modules, same names
    reference, _, _ = load_for_inference(last)
    assert hparams["model"] == new
    src = torch.tensor([[5, 6, 7, 3], [8, 9, 3, 0]])
    tgt = torch.tensor([[2, 5, 6], [2, 7, 0]])
    assert torch.equal(model(src, padding_mask(src), tgt)[0], reference(src, padding_mask(src), tgt)[0])

    cfg = resume_config(old_path, ["trainer.max_steps=3"])  # the resumed run sees today's keys
    assert cfg.model.step_order == "luong" and "local_window" not in cfg.model
    metrics = train(cfg)
    assert metrics["global_step"] == 3
