"""Evaluate a checkpoint: decode splits, score with sacreBLEU, draw and summarise cross-attention.

    python scripts/evaluate.py RUN_DIR                                # the run's test split(s), beam 5
    python scripts/evaluate.py RUN_DIR --split val test_2016_flickr --beam-size 5 1
    python scripts/evaluate.py CKPT --src my.en --ref my.fr --name mytest
    python scripts/evaluate.py RUN_B --compare-with RUN_A/eval/test_2016_flickr.beam5.hyp

Outputs go to `<run>/eval/` (or next to a bare checkpoint in `eval/`, or to --output-dir):
  <split>.<decoding>.hyp         one detokenised hypothesis per source line, same order
  metrics.json                   merged per "<split>/<decoding>" key (e.g. "test_2016_flickr/beam5")
  attention/<split>/<decoding>/  PNG heatmaps: eval_<split>_<i>_* for the first N sentences, probe_<i>_*
and TensorBoard events under `<run>/tensorboard/eval/<split>/<decoding>/` (a run of its own in
TensorBoard, so greedy and beam, or two splits, never share a tag at one step): images
attention/eval_<split>_<i>/..., attention/probe_<i>/..., scalars eval/{bleu,chrf,ter} and
attention/<variant>/<layer>/<head|mean>/<statistic>, all at the checkpoint's global step.

Attention statistics come from the evaluation's own decoding (beam search keeps every output's
attention, [L, H, T, S] per sentence: a few MB for 1000 sentences), so they describe exactly the
hypotheses that were scored. Decoding time covers subword encoding, search and detokenisation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnmt.data.corpus import read_lines
from attnmt.errors import ConfigError, DataError, UserError
from attnmt.metrics import attention_statistics, corpus_scores, flatten_statistics, paired_significance
from attnmt.translate import DecodeSettings, Translation, load_model, pick_device, resolve_checkpoint, translate_lines

log = logging.getLogger("attnmt.evaluate")
TEXT_METRICS = ("bleu", "chrf", "ter")


@dataclass
class EvalSet:
    """Aligned sources and references to score; `name` labels files, keys and tags."""

    name: str
    sources: list[str]
    references: list[str]
    src_file: Path
    ref_file: Path


# --------------------------------------------------------------------------- inputs
def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder of <run>/checkpoints/<file>.ckpt; None for a checkpoint kept elsewhere."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def run_corpus(run_dir: Path | None):
    """The corpus of the run's data config (<run>/.hydra/config.yaml), built with Hydra."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    import attnmt.config  # noqa: F401  registers the ${attnmt.*} resolvers that paths.* use

    config = run_dir / ".hydra" / "config.yaml" if run_dir is not None else None
    if config is None or not config.is_file():
        where = f"{config} not found" if config else "the checkpoint is not inside a run's checkpoints/ folder"
        raise ConfigError(
            f"no data config for this checkpoint ({where}), so its splits are unknown: "
            "evaluate a file pair with --src FILE --ref FILE"
        )
    try:
        corpus_cfg = OmegaConf.load(config).data.corpus
        return instantiate(corpus_cfg)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise ConfigError(f"{config}: cannot build data.corpus ({err})") from None
    except OmegaConfBaseException as err:
        raise ConfigError(f"{config}: cannot read data.corpus ({str(err).splitlines()[0]})") from None


def _aligned(name: str, src_file: Path, ref_file: Path) -> EvalSet:
    sources, references = read_lines(src_file), read_lines(ref_file)
    if len(sources) != len(references):
        raise DataError(f"{src_file} has {len(sources)} lines but {ref_file} has {len(references)}: they must be aligned")
    return EvalSet(name, sources, references, src_file, ref_file)


def eval_sets(
    run_dir: Path | None,
    splits: list[str] | None = None,
    src: str | Path | None = None,
    ref: str | Path | None = None,
    name: str | None = None,
) -> list[EvalSet]:
    """The sets to evaluate: named splits of the run's corpus and/or one custom file pair.

    Every line is kept (the hypothesis files align with the files line by line); no splits and
    no file pair means the data config's test splits (test_2016_flickr for Multi30k).
    """
    if (src is None) != (ref is None):
        raise ConfigError("--src and --ref go together: give the source file and its reference translations")
    found: list[EvalSet] = []
    if splits or src is None:
        corpus = run_corpus(run_dir)
        wanted = list(splits or corpus.test_splits)
        if not wanted:
            raise ConfigError(f"the run's data config has no test split; name one with --split ({', '.join(corpus.splits)})")
        for split in wanted:
            if split not in corpus.splits:
                raise ConfigError(
                    f"unknown split {split!r}; the run's data config has: {', '.join(corpus.splits)} "
                    "(or evaluate your own files with --src FILE --ref FILE)"
                )
            found.append(_aligned(split, *corpus.files(split)))
    if src is not None:
        label = name or "file_" + Path(src).name.split(".")[0]
        found.append(_aligned(re.sub(r"[^A-Za-z0-9_.-]", "_", label), Path(src), Path(ref)))
    return found


def _read_metrics(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); move it away to start a new one") from None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic write (temp file + rename); NaN (undefined statistics) becomes null."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(clean(data), handle, indent=2, allow_nan=False)
        handle.write("\n")
    os.replace(tmp, path)


def _global_step(checkpoint: Path) -> int:
    """The training step the checkpoint was saved at (tensors memory-mapped, not read)."""
    return int(torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=False).get("global_step", 0))


# --------------------------------------------------------------------------- attention output
def _fresh_writer(folder: Path):
    """A SummaryWriter for one evaluation's sub-run; an earlier evaluation's events there are
    removed, so re-evaluating replaces the images and scalars instead of stacking copies."""
    from torch.utils.tensorboard import SummaryWriter

    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    return SummaryWriter(log_dir=str(folder))


def log_maps(writer, translations: list[Translation], prefix: str, step: int, png_dir: Path, merge: bool,
             head_grid_layer: int) -> list[dict[str, Any]]:
    """Heatmaps of each translation under attention/<prefix>_<i>/... -> one record per sentence."""
    from attnmt.viz import log_attention_maps, merge_subwords

    records = []
    for i, translation in enumerate(translations):
        hyp = translation.hypothesis
        if hyp is None:
            continue  # an empty source line has no attention
        src_labels, tgt_labels = translation.src_tokens, translation.tgt_tokens
        written = log_attention_maps(writer, f"{prefix}_{i}", hyp.attention, src_labels, tgt_labels, step, png_dir,
                                     head_grid_layer, merge)
        if merge:  # record the labels the maps show
            _, src_labels, tgt_labels = merge_subwords(hyp.attention[-1, 0], src_labels, tgt_labels)
        records.append({
            "name": f"{prefix}_{i}", "source": translation.source, "translation": translation.text,
            "src_tokens": src_labels, "tgt_tokens": tgt_labels,
            "tags": [w for w in written if w.startswith("attention/")],
            "pngs": [w for w in written if not w.startswith("attention/")],
        })
    return records


# --------------------------------------------------------------------------- evaluation
def compare_systems(baseline: list[str], system: list[str], references: list[str],
                    metrics: tuple[str, ...] = ("bleu", "chrf"), test: str = "bs") -> dict[str, Any]:
    """sacreBLEU's paired significance test of `system` against `baseline` on the same references
    (paired bootstrap by default, "ar" = approximate randomisation) -> per metric scores, 95% CIs, p-value."""
    return paired_significance(baseline, system, references, metrics=metrics, test=test)


def evaluate(
    checkpoint: str | Path,
    splits: list[str] | None = None,
    src: str | Path | None = None,
    ref: str | Path | None = None,
    name: str | None = None,
    beam_sizes: tuple[int, ...] = (5,),
    alpha: float = 0.6,
    max_len_a: float = 1.5,
    max_len_b: float = 10,
    max_tokens: int = 4096,
    device: str = "auto",
    output_dir: str | Path | None = None,
    num_maps: int = 4,
    merge_subwords: bool = False,
    head_grid_layer: int = -1,
    compare_with: str | Path | None = None,
    significance_test: str = "bs",
) -> dict[str, Any]:
    """Decode every (set, beam size), score, write hyps/metrics/maps/events; see the module doc.

    -> {"checkpoint", "run_dir", "eval_dir", "tensorboard_root", "global_step", "variant",
        "results": {"<set>/<decoding>": JSON-ready entry (also in metrics.json)},
        "translations": {"<set>/<decoding>": [Translation] in source order (hypotheses with attention)}}
    """
    settings = [DecodeSettings(k, alpha, max_len_a, max_len_b, max_tokens) for k in dict.fromkeys(beam_sizes)]
    if num_maps < 0:
        raise ConfigError(f"--num-maps {num_maps}: must be 0 or more")
    checkpoint = resolve_checkpoint(checkpoint)
    run_dir = run_dir_of(checkpoint)
    sets = eval_sets(run_dir, splits, src, ref, name)
    if compare_with is not None and len(sets) * len(settings) != 1:
        raise ConfigError("--compare-with needs exactly one split and one beam size (the system to compare)")
    baseline = read_lines(compare_with) if compare_with is not None else None
    eval_dir = Path(output_dir) if output_dir else (run_dir / "eval" if run_dir else checkpoint.parent / "eval")
    metrics_path = eval_dir / "metrics.json"
    stored = _read_metrics(metrics_path)  # fail on a broken file before decoding for minutes
    tensorboard_root = (run_dir / "tensorboard" if run_dir and (run_dir / "tensorboard").is_dir() else eval_dir / "tensorboard")

    torch_device = pick_device(device)
    model, tokenizer, hparams = load_model(checkpoint, torch_device)
    step, variant = _global_step(checkpoint), str(hparams.get("variant", "model"))
    probes = list(hparams.get("probes") or [])
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint), "run_dir": str(run_dir) if run_dir else None, "eval_dir": str(eval_dir),
        "tensorboard_root": str(tensorboard_root), "global_step": step, "variant": variant,
        "results": {}, "translations": {},
    }
    for eval_set in sets:
        for setting in settings:
            key = f"{eval_set.name}/{setting.name}"
            log.info("decoding %s (%d sentences), %s, on %s", eval_set.name, len(eval_set.sources), setting.name, torch_device)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            translations = translate_lines(model, tokenizer, eval_set.sources, setting, torch_device,
                                           max_src_tokens=None, need_attention=True)
            if torch_device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - started
            hyps = [t.text for t in translations]
            hyp_file = eval_dir / f"{eval_set.name}.{setting.name}.hyp"
            hyp_file.parent.mkdir(parents=True, exist_ok=True)
            hyp_file.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")

            maps = [t.hypothesis.attention for t in translations if t.hypothesis is not None]
            statistics = attention_statistics(maps) if maps else {}
            entry: dict[str, Any] = {
                "split": eval_set.name, "source_file": str(eval_set.src_file), "reference_file": str(eval_set.ref_file),
                "hypothesis_file": str(hyp_file), "checkpoint": str(checkpoint), "global_step": step, "variant": variant,
                "decoding": {"beam_size": setting.beam_size, "alpha": setting.alpha if setting.beam_size > 1 else None,
                             "max_len_a": setting.max_len_a, "max_len_b": setting.max_len_b,
                             "max_tokens": setting.max_tokens, "device": str(torch_device)},
                "sentences": len(hyps),
                "scores": corpus_scores(hyps, eval_set.references, TEXT_METRICS),
                "decode_seconds": seconds,
                "sentences_per_second": len(hyps) / seconds if seconds > 0 else math.inf,
                "attention_statistics": statistics,
            }
            if baseline is not None:
                entry["comparison"] = {"baseline_file": str(compare_with), "test": significance_test,
                                       "metrics": compare_systems(baseline, hyps, eval_set.references, test=significance_test)}

            sub_run = tensorboard_root / "eval" / eval_set.name / setting.name
            png_dir = eval_dir / "attention" / eval_set.name / setting.name
            writer = _fresh_writer(sub_run)
            try:
                records = log_maps(writer, translations[:num_maps], f"eval_{eval_set.name}", step, png_dir,
                                   merge_subwords, head_grid_layer)
                if probes:
                    probe_translations = translate_lines(model, tokenizer, probes, setting, torch_device,
                                                         max_src_tokens=None, need_attention=True)
                    records += log_maps(writer, probe_translations, "probe", step, png_dir, merge_subwords, head_grid_layer)
                for metric in TEXT_METRICS:
                    writer.add_scalar(f"eval/{metric}", entry["scores"][metric]["score"], step)
                for tag, value in flatten_statistics(statistics, prefix=f"attention/{variant}").items():
                    if not math.isnan(value):  # undefined statistics have nothing to plot
                        writer.add_scalar(tag, value, step)
            finally:
                writer.close()
            entry.update(tensorboard_dir=str(sub_run), attention_maps=records)
            stored[key] = entry
            _write_json(metrics_path, stored)  # after every evaluation: a later failure keeps the earlier ones
            summary["results"][key] = entry
            summary["translations"][key] = translations
    return summary


# --------------------------------------------------------------------------- report
def format_report(summary: dict[str, Any]) -> str:
    """The short table printed by the CLI: scores and speed, signatures, attention summary, files."""
    head = ("set", "decoding", "sents", "BLEU", "chrF", "TER", "seconds", "sent/s")
    rows = [head]
    for entry in summary["results"].values():
        scores = entry["scores"]
        rows.append((entry["split"], _decoding_label(entry["decoding"]), str(entry["sentences"]),
                     *(f"{scores[m]['score']:.2f}" for m in TEXT_METRICS),
                     f"{entry['decode_seconds']:.1f}", f"{entry['sentences_per_second']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"checkpoint {summary['checkpoint']} (step {summary['global_step']}, {summary['variant']})"]
    lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    first = next(iter(summary["results"].values()))
    lines += [f"{m:5s} signature {first['scores'][m]['signature']}" for m in TEXT_METRICS]
    for key, entry in summary["results"].items():
        for layer, by_head in entry["attention_statistics"].items():
            stats = by_head["mean"]
            lines.append(f"attention {key} {layer} (mean of heads): " + ", ".join(
                f"{name} {value:.3f}" for name, value in stats.items()))
        if "comparison" in entry:
            lines.append(format_comparison(entry["comparison"]))
    lines.append(f"written: {summary['eval_dir']}/ (metrics.json, *.hyp, attention/), "
                 f"TensorBoard: {summary['tensorboard_root']}/eval/")
    return "\n".join(lines)


def _decoding_label(decoding: dict[str, Any]) -> str:
    return "greedy" if decoding["beam_size"] == 1 else f"beam{decoding['beam_size']} a={decoding['alpha']}"


def format_comparison(comparison: dict[str, Any]) -> str:
    """Paired test results as lines: baseline vs system with 95% CIs and the p-value per metric."""
    test = "paired bootstrap" if comparison["test"] == "bs" else "approximate randomisation"
    lines = [f"{test}: baseline {comparison['baseline_file']} vs this system"]
    for metric, r in comparison["metrics"].items():
        lines.append(
            f"  {metric:5s} baseline {r['baseline']:.2f} (95% CI {r['baseline_ci'][0]:.2f}-{r['baseline_ci'][1]:.2f})  "
            f"system {r['system']:.2f} (95% CI {r['system_ci'][0]:.2f}-{r['system_ci'][1]:.2f})  p = {r['p_value']:.4f}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None):
    import argparse

    parser = argparse.ArgumentParser(
        description="Decode splits with a checkpoint, report sacreBLEU BLEU/chrF/TER, log attention maps and statistics.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/best-*.ckpt, else last.ckpt)")
    parser.add_argument("--split", nargs="+", dest="splits",
                        help="splits of the run's data config (default: its test splits, i.e. test_2016_flickr for Multi30k)")
    parser.add_argument("--src", help="a custom source file (with --ref), one sentence per line, plain or .gz")
    parser.add_argument("--ref", help="reference translations of --src, aligned line by line")
    parser.add_argument("--name", help="label of the --src/--ref pair in file names and metrics (default: file_<src name>)")
    parser.add_argument("--beam-size", type=int, nargs="+", default=[5],
                        help="one or more beam sizes, each decoded and recorded separately; 1 = greedy (default 5)")
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent for beam search (default 0.6)")
    parser.add_argument("--max-len-a", type=float, default=1.5, help="max output length = a * source length + b (default 1.5)")
    parser.add_argument("--max-len-b", type=float, default=10, help="see --max-len-a (default 10)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch, padding included (default 4096)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--output-dir", help="where eval files go (default: <run>/eval, or eval/ next to a bare checkpoint)")
    parser.add_argument("--num-maps", type=int, default=4, help="attention maps of the first N sentences of each split (default 4)")
    parser.add_argument("--merge-subwords", action="store_true", help="maps over words instead of sentencepiece pieces")
    parser.add_argument("--head-grid-layer", type=int, default=-1, help="layer whose heads get a grid (default -1 = last)")
    parser.add_argument("--compare-with", help="hypotheses of another system on the same split: paired significance test")
    parser.add_argument("--significance-test", choices=("bs", "ar"), default="bs",
                        help="bs = paired bootstrap (default), ar = approximate randomisation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = evaluate(
            args.checkpoint, args.splits, args.src, args.ref, args.name, tuple(args.beam_size), args.alpha,
            args.max_len_a, args.max_len_b, args.max_tokens, args.device, args.output_dir, args.num_maps,
            args.merge_subwords, args.head_grid_layer, args.compare_with, args.significance_test,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(summary))
    return 0
