"""Model configs written before attention became config nodes, upgraded when a checkpoint is loaded.

Until then the RNN config named its attention with strings (`attention: bahdanau|luong` for the step
order, `score: additive|concat|dot|general`, `local_attention: null|monotonic|predictive`,
`local_window`, `scale_scores`) and the Transformer's window with ints (`encoder_window`,
`decoder_window`). `upgrade_model_config` rewrites such a config into today's nodes, building the
same modules (same parameter names and shapes), so those checkpoints still translate, evaluate,
compare and resume. It is called from `checkpoint.load_checkpoint_file`, the one load path.
Only this module knows the old names; new variants never need an entry here.
"""

from __future__ import annotations

from typing import Any

RNN_TARGET = "attnmt.models.rnn_seq2seq.RNNSeq2Seq"
TRANSFORMER_TARGET = "attnmt.models.transformer_seq2seq.TransformerSeq2Seq"
ATTENTION = "attnmt.modules.attention."
OLD_RNN_KEYS = ("score", "local_attention", "local_window", "scale_scores")


OLD_SCORES = {  # score name -> the attention node that computes it
    "additive": {"_target_": ATTENTION + "AdditiveAttention", "_partial_": True},
    "concat": {"_target_": ATTENTION + "AdditiveAttention", "_partial_": True},  # the same function
    "dot": {"_target_": ATTENTION + "DotProductAttention", "_partial_": True, "bilinear": False},
    "general": {"_target_": ATTENTION + "DotProductAttention", "_partial_": True, "bilinear": True},
}
OLD_LOCAL = {"monotonic": "MonotonicLocalAttention", "predictive": "PredictiveLocalAttention"}


def _old_window(window: Any) -> dict[str, Any]:
    if window is None:
        return {"_target_": "attnmt.modules.self_attention.FullSelfAttention"}
    return {"_target_": "attnmt.modules.sliding_window.SlidingWindowSelfAttention", "window": window}


def upgrade_model_config(model: Any) -> Any:
    """A stored model config (plain dict) -> the same model in today's keys. Today's configs, and
    values the old code would have refused, come back unchanged (the model then names the key)."""
    if not isinstance(model, dict):
        return model
    target = model.get("_target_")
    if target == RNN_TARGET and isinstance(model.get("attention"), str):
        score, local = model.get("score", "general"), model.get("local_attention")
        if score not in OLD_SCORES or (local is not None and local not in OLD_LOCAL):
            return model
        node = dict(OLD_SCORES[score])
        if "bilinear" in node:
            node["scaled"] = model.get("scale_scores", True)
        if local is not None:
            node = {"_target_": "attnmt.modules.local_attention." + OLD_LOCAL[local], "_partial_": True,
                    "half_width": model.get("local_window", 5), "score": node}
        upgraded = {k: v for k, v in model.items() if k not in (*OLD_RNN_KEYS, "attention")}
        return {**upgraded, "step_order": model["attention"], "attention": node}
    if target == TRANSFORMER_TARGET and ("encoder_window" in model or "decoder_window" in model):
        upgraded = {k: v for k, v in model.items() if k not in ("encoder_window", "decoder_window")}
        upgraded["encoder_self_attention"] = _old_window(model.get("encoder_window"))
        upgraded["decoder_self_attention"] = _old_window(model.get("decoder_window"))
        return upgraded
    return model


def upgrade_checkpoint(checkpoint: Any, sections: tuple[str, ...]) -> Any:
    """A loaded checkpoint dict -> the same dict, the model config of each section (the task's
    hyper-parameters, the stored run config) upgraded in place."""
    if isinstance(checkpoint, dict):
        for section in sections:
            stored = checkpoint.get(section)
            if isinstance(stored, dict) and isinstance(stored.get("model"), dict):
                stored["model"] = upgrade_model_config(stored["model"])
    return checkpoint
