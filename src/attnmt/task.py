"""The LightningModule: loss, optimisation, validation BLEU and attention probes.

It only talks to the model through the Seq2Seq protocol (models/seq2seq.py), so every
attention family trains, validates and logs maps the same way.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from attnmt import checkpoint as ckpt_io
from attnmt.data.batch import Batch
from attnmt.data.batching import pad_sources
from attnmt.data.vocab import EOS_PIECE, PAD_ID
from attnmt.inference import DecodeSettings
from attnmt.metrics import PRIMARY_METRIC, corpus_scores, text_metrics
from attnmt.search import decode_batch

log = logging.getLogger("attnmt.task")


class TranslationTask(L.LightningModule):
    """Trains any Seq2Seq model with label-smoothed cross-entropy.

    model:        the model's config (a dict with `_target_`), built here so checkpoints rebuild it
    optim:        {"optimizer": partial config, "scheduler": partial config} (configs/optim/)
    decode:       validation decoding, fields of inference.DecodeSettings (config `decode.validation`;
                  missing fields keep its defaults, beam_size 1 = greedy); `val_decode` is the same for
                  runs configured before the `decode` node (task.val_decode, greedy)
    probes:       source sentences whose cross-attention maps are logged at every validation
    vocab:        {"fingerprint", ...} of the tokenizer the model was built for (checked on load)
    attention_maps: {"scale": "fixed" | "max"} how probe maps colour their weights (viz.attention_figure)
    text_samples: validation sentences logged as text (source, hypothesis, reference) per validation

    To TensorBoard (rank 0): images `attention_maps/probe_<i>/...`, text `translations/probes` and
    `translations/val_samples`, and the HParams tab (hyper-parameters; TensorBoard shows every
    scalar's latest value beside them: val/bleu, best/val_bleu, train/tokens_per_s, ...).
    """

    def __init__(
        self,
        model: dict,
        src_vocab_size: int,
        tgt_vocab_size: int,
        shared_vocab: bool,
        optim: dict,
        label_smoothing: float = 0.1,
        decode: dict | None = None,
        val_decode: dict | None = None,
        probes: list[str] | None = None,
        max_nonfinite_steps: int = 20,
        vocab: dict | None = None,
        variant: str = "model",
        attention_maps: dict | None = None,
        text_samples: int = 3,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = instantiate(model, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, shared_vocab=shared_vocab)
        self.label_smoothing = label_smoothing
        if decode is None:  # a run configured before `decode` (resumed from its stored config): greedy
            decode = {"beam_size": 1, **(val_decode or {})}
        self.decode = DecodeSettings.from_config(decode, key="decode.validation")
        self.probes = list(probes or [])
        self.max_nonfinite_steps = max_nonfinite_steps
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self._val_outputs: list[tuple[int, str]] = []
        self._val_loss = torch.zeros(2)  # [sum of token losses, number of tokens]
        self.map_scale = str((attention_maps or {}).get("scale", "fixed"))
        self.text_samples = text_samples
        self.best_val_bleu: float | None = None
        self.run_config: dict | None = None  # train() sets it: stored in checkpoints so ckpt_path= alone resumes

    # ----------------------------------------------------------------------------- training
    def loss(self, batch: Batch, smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (mean loss per real target token, number of real target tokens). Padding never counts."""
        logits, _ = self.model(batch.src, batch.src_mask, batch.tgt_in)  # [B, T, V]
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID, label_smoothing=smoothing
        )
        return loss, batch.tgt_mask.sum()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        loss, _ = self.loss(batch, self.label_smoothing)
        if self.max_nonfinite_steps > 0 and not torch.isfinite(loss):
            return self._skip_nonfinite(loss)
        self.nonfinite_in_a_row = 0
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def _skip_nonfinite(self, loss: torch.Tensor) -> None:
        """Returning None makes Lightning skip backward and the optimizer step: weights stay as they were."""
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        self.log("train/nonfinite_steps", float(self.nonfinite_total), on_step=True, on_epoch=False)
        log.warning("non-finite loss (%s) at step %d: update skipped (%d in a row)", loss.item(), self.global_step, self.nonfinite_in_a_row)
        if self.nonfinite_in_a_row >= self.max_nonfinite_steps:
            self.trainer.should_stop = True
            log.error(
                "stopping: %d non-finite losses in a row (task.max_nonfinite_steps). Lower the learning rate "
                "(optim.optimizer.lr) or check the data; the last checkpoint holds the last finite weights.",
                self.nonfinite_in_a_row,
            )
        return None

    def configure_optimizers(self) -> dict:
        optim = self.hparams.optim
        optimizer_factory = instantiate(optim["optimizer"])
        kwargs = {}
        if self.device.type == "cuda" and "fused" not in optim["optimizer"]:
            kwargs["fused"] = True  # one kernel for the whole update
        optimizer = optimizer_factory(self.parameters(), **kwargs)
        scheduler = instantiate(optim["scheduler"])(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"}}

    # ---------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []
        self._val_loss = torch.zeros(2, device=self.device)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, tokens = self.loss(batch, smoothing=0.0)
        self._val_loss += torch.stack([loss * tokens, tokens.to(loss.dtype)])
        hyps = [nbest[0] for nbest in decode_batch(self.model, batch.src, batch.src_mask, **self.decode.search_kwargs(),
                                                   need_attention=False)]
        texts = self.tokenizer.decode_tgt([h.tokens for h in hyps])
        self._val_outputs.extend(zip(batch.index.tolist(), texts))

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")
        val_loss = (totals[0] / totals[1].clamp(min=1)).item()
        outputs = self._gather(self._val_outputs)
        dm = self.trainer.datamodule
        references = dm.references(dm.corpus.val_split)
        hypotheses = [""] * len(references)
        for index, text in outputs:
            hypotheses[index] = text
        metrics = text_metrics(headline_only=True)  # metrics.TEXT_METRICS: val/bleu, val/chrf, ...
        scores = corpus_scores(hypotheses, references, metrics=[m.name for m in metrics])
        primary = scores[PRIMARY_METRIC]["score"]
        if not self.trainer.sanity_checking:
            self.best_val_bleu = primary if self.best_val_bleu is None else max(self.best_val_bleu, primary)
        # every rank logs the same corpus-level numbers, so checkpointing and early stopping agree
        self.log_dict(
            {
                "val/loss": val_loss,
                "val/ppl": math.exp(min(val_loss, 50.0)),
                **{f"val/{m.name}": scores[m.name]["score"] for m in metrics if m.name != PRIMARY_METRIC},
                "val/decoded": float(len(outputs)),
                f"best/val_{PRIMARY_METRIC}": self.best_val_bleu if self.best_val_bleu is not None else primary,
            },
            prog_bar=False,
            sync_dist=False,
        )
        self.log(f"val/{PRIMARY_METRIC}", primary, prog_bar=True, sync_dist=False)  # the progress bar shows the last score
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._log_text_samples(dm, hypotheses, references)
            self._log_probes()

    def _gather(self, items: list) -> list:
        """All ranks' validation outputs on every rank (val BLEU is corpus-level, never averaged)."""
        if self.trainer.world_size == 1 or not torch.distributed.is_initialized():
            return list(items)
        gathered: list[list] = [None] * self.trainer.world_size  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, items)
        return [item for part in gathered for item in part]

    def _log_text_samples(self, dm, hypotheses: list[str], references: list[str]) -> None:
        """The first `text_samples` validation sentences as a Markdown table under translations/val_samples."""
        writer = self._tensorboard()
        if writer is None or self.text_samples <= 0:
            return
        count = min(self.text_samples, len(references))
        sources = dm.sources(dm.corpus.val_split)[:count]
        rows = [(src, hyp, ref) for src, hyp, ref in zip(sources, hypotheses[:count], references[:count])]
        writer.add_text("translations/val_samples", _markdown_table(("source", "hypothesis", "reference"), rows),
                        global_step=self.global_step)

    def _log_probes(self) -> None:
        from attnmt.viz import log_attention_maps

        writer = self._tensorboard()
        if writer is None or not self.probes:
            return
        tokenizer = self.tokenizer
        batch_src, src_mask = pad_sources(tokenizer.encode_src(self.probes), self.device)
        hyps = [nbest[0] for nbest in decode_batch(self.model, batch_src, src_mask, **self.decode.search_kwargs())]
        texts = tokenizer.decode_tgt([h.tokens for h in hyps])
        for i, (sentence, hyp, text) in enumerate(zip(self.probes, hyps, texts)):
            src_tokens = tokenizer.src_pieces(sentence) + [EOS_PIECE]  # the model sees EOS too
            tgt_tokens = tokenizer.tgt_pieces_from_ids(hyp.output_ids)
            # hyp.attention: [L, H, T, S] over real tokens: T = len(output_ids), S = len(src_tokens)
            log_attention_maps(writer, f"probe_{i}", hyp.attention, src_tokens, tgt_tokens, step=self.global_step,
                               title=f"{self.hparams.variant} · step {self.global_step}",
                               translation=text, scale=self.map_scale)
        rows = [(src, text) for src, text in zip(self.probes, texts)]
        writer.add_text("translations/probes", _markdown_table(("source", "hypothesis"), rows), global_step=self.global_step)

    def on_train_start(self) -> None:
        """The HParams tab: this run's hyper-parameters against the metrics it keeps logging."""
        writer = self._tensorboard()
        if writer is None or not self.trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        params = hparam_values(self.run_config or {"variant": self.hparams.variant, "model": self.hparams.model,
                                                   "optim": self.hparams.optim})
        # Only the session's start (its hyper-parameters): with no experiment summary TensorBoard builds
        # the table from every run's sessions, so a sweep of RNNs and Transformers gets the union of
        # their hyper-parameters, and every scalar (val/bleu, best/val_bleu, eval/bleu of the eval
        # sub-runs, ...) becomes a metric column holding its latest value.
        _, start, _ = hparams(params, {tag: 0.0 for tag in hparam_metrics()})
        writer._get_file_writer().add_summary(start, global_step=self.global_step)

    def _tensorboard(self):
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                return experiment
        return None

    # ---------------------------------------------------------------------------- plumbing
    @property
    def tokenizer(self):
        return self.trainer.datamodule.tokenizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            ckpt_io.store_tokenizer(checkpoint, datamodule.tokenizer)
        if self.run_config is not None:
            checkpoint[ckpt_io.CONFIG_KEY] = self.run_config
        checkpoint["attnmt_nonfinite"] = {"total": self.nonfinite_total}
        checkpoint["attnmt_best_val_bleu"] = self.best_val_bleu
        checkpoint["attnmt_rng"] = _rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.nonfinite_total = checkpoint.get("attnmt_nonfinite", {}).get("total", 0)
        self.best_val_bleu = checkpoint.get("attnmt_best_val_bleu")
        if "attnmt_rng" in checkpoint and self._trainer is not None:
            _set_rng_states(checkpoint["attnmt_rng"])  # dropout continues as if never interrupted
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            ckpt_io.check_tokenizer(checkpoint, datamodule.tokenizer, source="the checkpoint being resumed")


def hparam_metrics() -> tuple[str, ...]:
    """The scalars the HParams tab pairs with the hyper-parameters: the validation metrics
    (metrics.TEXT_METRICS' headline ones), val/loss, the best score and training speed."""
    return (*(f"val/{m.name}" for m in text_metrics(headline_only=True)), "val/loss", f"best/val_{PRIMARY_METRIC}",
            "train/tokens_per_s")
HPARAM_SECTIONS = ("model", "optim", "task.label_smoothing", "data.tokenizer", "data.max_tokens", "data.max_len",
                   "trainer.max_time", "trainer.max_steps", "trainer.max_epochs", "trainer.precision",
                   "trainer.accumulate_grad_batches", "trainer.devices")


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters shown in TensorBoard's HParams tab: variant, seed and the settings that
    define what was trained, flattened to "model.d_model"-style keys with int/float/str/bool values."""
    values: dict[str, Any] = {"variant": config.get("variant", "model")}
    if "seed" in config:
        values["seed"] = config["seed"]

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "_partial_":
                    visit(f"{prefix}.{key}", value)
        elif isinstance(node, bool | int | float | str):
            values[prefix] = node.rsplit(".", 1)[-1] if prefix.endswith("_target_") else node
        elif node is not None:
            values[prefix] = str(node)

    for section in HPARAM_SECTIONS:
        node: Any = config
        for part in section.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            visit(section, node)
    return values


def _markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """A Markdown table (TensorBoard's Text tab renders it); pipes in sentences are escaped."""
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ") or " "

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _rng_states() -> dict[str, Any]:
    # numpy's key array as a tensor: the checkpoint then loads with weights_only=True and no numpy allow-list
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy_state = states["numpy"]
    if isinstance(numpy_state, dict):  # else the (name, uint32 array, ...) tuple of checkpoints before safe loading
        key = numpy_state["state"]["key"].numpy().astype(np.uint32)
        numpy_state = {**numpy_state, "state": {**numpy_state["state"], "key": key}}
    np.random.set_state(numpy_state)
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
