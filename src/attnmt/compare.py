"""Compare the runs of a sweep (`python train.py -m model=bahdanau,luong,transformer ...`).

`compare(multirun_dir)` reads every job folder (config, train_metrics.json, TensorBoard events,
eval/metrics.json and hypothesis files), optionally evaluates the jobs that have no test scores,
and writes `<multirun>/comparison/`:
  report.md, report.csv      one row per variant (mean ± std over seeds), failed runs listed
  val_bleu_vs_time.png       validation BLEU against wall-clock training time, every run
  val_bleu_vs_updates.png    validation BLEU against optimizer updates (learning curves at equal updates)
  probe_attention.png        the first probe sentence's cross-attention, every variant side by side
  alignment_aer.png          AER of every layer and head (teacher-forced attention against the reference
                             alignments), one panel per variant, when the runs were evaluated with --alignment
  tensorboard/               the same plots as images and the table's numbers as scalars
Confidence intervals are 95% paired-bootstrap intervals (sacreBLEU) of each system's test score,
resampled together with the best system's hypotheses.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from attnmt.data.corpus import read_lines
from attnmt.errors import DataError
from attnmt.metrics import PRIMARY_METRIC, attention_statistic_list, paired_significance, text_metric, text_metrics

log = logging.getLogger("attnmt.compare")


@dataclass
class RunRecord:
    """What one job folder of the sweep holds. status: finished | unfinished | failed."""

    path: Path
    variant: str
    seed: int | None
    status: str
    reason: str = ""
    parameters: float | None = None
    train_seconds: float | None = None
    global_step: int | None = None
    tokens_per_s: float | None = None
    best_val_bleu: float | None = None  # of the primary metric (metrics.PRIMARY_METRIC)
    val_curve: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, BLEU)
    val_curve_updates: list[tuple[int, float]] = field(default_factory=list)  # (updates, BLEU)
    test: dict[str, Any] | None = None  # the eval/metrics.json entry used (beam 5 preferred)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> 95% interval
    p_value: float | None = None  # against the best system (primary metric)


def job_folders(multirun_dir: Path) -> list[Path]:
    """Every folder below `multirun_dir` that Hydra made for a job (it holds .hydra/)."""
    jobs = sorted({p.parent.parent for p in Path(multirun_dir).glob("**/.hydra/config.yaml")})
    if not jobs:
        raise DataError(f"{multirun_dir} holds no Hydra job folders (.hydra/config.yaml); give a multirun folder")
    return jobs


def _scalars(run: Path) -> tuple[dict[str, list[tuple[float, int, float]]], float | None]:
    """TensorBoard scalars {tag: [(wall_time, step, value)]} and the first event's time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run / "tensorboard"
    if not folder.is_dir():
        return {}, None
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 1})
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    values = {tag: [(e.wall_time, e.step, e.value) for e in accumulator.Scalars(tag)] for tag in tags}
    try:
        start = accumulator.FirstEventTimestamp()
    except ValueError:
        start = None
    return values, start


def _variant(run: Path, config: Any) -> str:
    """The model config's name, with any model.* overrides of the job: e.g. luong[attention.scaled=false]."""
    overrides = run / ".hydra" / "hydra.yaml"
    if overrides.is_file():
        hydra_cfg = OmegaConf.load(overrides).hydra
        choice = hydra_cfg.runtime.choices.get("model")
        if choice:
            changed = [o.split(".", 1)[1] for o in hydra_cfg.overrides.get("task", []) if str(o).startswith("model.")]
            return str(choice) + (f"[{','.join(changed)}]" if changed else "")
    return str(config.model._target_).rsplit(".", 1)[-1]


def _failure_reason(run: Path) -> str:
    for log_file in sorted(run.glob("*.log")):
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
        if errors:
            return errors[-1].strip()[:200]
    return "no train_metrics.json and no checkpoint: the job crashed before its first checkpoint"


def _default_decoding(beam_size: int | None = None) -> str:
    """The metrics.json label ("beam5", "greedy") of a beam size; None = inference.DecodeSettings' default."""
    from attnmt.inference import DecodeSettings

    return (DecodeSettings() if beam_size is None else DecodeSettings(beam_size=beam_size)).name


def read_run(run: Path, split: str, decoding: str | None = None) -> RunRecord:
    """One job folder; its test entry is `<split>/<decoding>` (default: the default beam), else greedy,
    else any decoding of the split."""
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    record = RunRecord(run, _variant(run, config), config.get("seed"), status="failed")
    scalars, start = _scalars(run)
    val_tag = f"val/{PRIMARY_METRIC}"
    if start is not None and val_tag in scalars:
        record.val_curve = [(wall - start, value) for wall, _, value in scalars[val_tag]]
        # Lightning logs validation at the step of the last update (N-1 after N updates)
        record.val_curve_updates = sorted({step + 1: value for _, step, value in scalars[val_tag]}.items())
    speeds = [value for _, _, value in scalars.get("train/tokens_per_s", [])]
    if speeds:
        record.tokens_per_s = statistics.fmean(speeds[1:] if len(speeds) > 2 else speeds)  # first is warm-up

    summary_file = run / "train_metrics.json"
    if summary_file.is_file():
        metrics = json.loads(summary_file.read_text())["metrics"]
        record.status = "finished"
        record.parameters = metrics.get("parameters")
        record.train_seconds = metrics.get("train_seconds")
        record.global_step = int(metrics.get("global_step", 0))
        record.best_val_bleu = metrics.get(f"best/val_{PRIMARY_METRIC}", metrics.get(val_tag))
    elif (run / "checkpoints" / "last.ckpt").is_file():
        record.status, record.reason = "unfinished", "stopped before train_metrics.json was written (killed?)"
    else:
        record.reason = _failure_reason(run)

    eval_file = run / "eval" / "metrics.json"
    if eval_file.is_file():
        entries = json.loads(eval_file.read_text())
        for key in (f"{split}/{decoding or _default_decoding()}", f"{split}/greedy"):
            if key in entries:
                record.test = entries[key]
                break
        else:
            matching = [value for key, value in entries.items() if key.startswith(f"{split}/")]
            record.test = matching[0] if matching else None
    return record


def collect(multirun_dir: Path, split: str = "test_2016_flickr", evaluate_missing: bool = False,
            beam_size: int | None = None, alignment: bool = False) -> list[RunRecord]:
    """Read every job; evaluate_missing decodes finished runs without test scores, alignment=True
    (re-)evaluates finished runs whose test entry has no attention-as-alignment scores. beam_size:
    the decoding to report and evaluate with (None: inference.DecodeSettings' default)."""
    decoding = _default_decoding(beam_size)
    records = [read_run(job, split, decoding) for job in job_folders(multirun_dir)]
    if evaluate_missing or alignment:
        from attnmt.evaluate import evaluate

        for record in records:
            missing = record.test is None and evaluate_missing
            if record.status == "finished" and (missing or (alignment and "alignment" not in (record.test or {}))):
                log.info("evaluating %s on %s%s", record.path, split, " with --alignment" if alignment else "")
                beams = {} if beam_size is None else {"beam_sizes": (beam_size,)}
                evaluate(record.path, splits=[split], num_maps=1, alignment=alignment, **beams)
                record.test = read_run(record.path, split, decoding).test
    _add_confidence_intervals(records)
    return records


def _lines(path: str) -> list[str]:
    return read_lines(path)  # references may be the corpus's own gzipped files


def _add_confidence_intervals(records: list[RunRecord]) -> None:
    """Paired bootstrap of every scored run against the best one (metrics.PRIMARY_METRIC, in its
    direction) on the same references, for the headline metrics of metrics.TEXT_METRICS."""
    scored = [r for r in records if r.test is not None]
    if not scored:
        return
    primary = text_metric(PRIMARY_METRIC)
    best_score = primary.best([r.test["scores"][PRIMARY_METRIC]["score"] for r in scored])
    best = next(r for r in scored if r.test["scores"][PRIMARY_METRIC]["score"] == best_score)
    best_hyps, refs = _lines(best.test["hypothesis_file"]), _lines(best.test["reference_file"])
    names = [m.name for m in text_metrics(headline_only=True)]
    for record in scored:
        result = paired_significance(best_hyps, _lines(record.test["hypothesis_file"]), refs, metrics=names)
        record.ci = {name: tuple(values["system_ci"]) for name, values in result.items()}
        record.p_value = None if record is best else float(result[PRIMARY_METRIC]["p_value"])


# ------------------------------------------------------------------------------ tables
def columns() -> list[str]:
    """The table's columns: the headline text metrics (metrics.TEXT_METRICS) with their intervals and
    every attention statistic (metrics.ATTENTION_STATISTICS) come from the declarations."""
    text = [column for m in text_metrics(headline_only=True) for column in (f"test_{m.name}", f"test_{m.name}_ci95")]
    return ["variant", "seeds", "status", "parameters_M", "updates", "train_minutes", "tokens_per_s",
            f"best_val_{PRIMARY_METRIC}", *text, "p_vs_best", *(f"attn_{s.name}" for s in attention_statistic_list()),
            "aer_best", "aer_best_map", "aer_last_layer_mean", "aer_output_best", "aer_diagonal"]


def _mean_std(values: list[float], digits: int = 1) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _attention_means(record: RunRecord) -> dict[str, float]:
    """Head- and layer-averaged statistics of the run's evaluation (see metrics.attention_statistics)."""
    stats = (record.test or {}).get("attention_statistics") or {}
    names = [s.name for s in attention_statistic_list()]
    pooled = {n: [layer["mean"][n] for layer in stats.values() if "mean" in layer and n in layer["mean"]] for n in names}
    return {n: float(np.nanmean(v)) if v else math.nan for n, v in pooled.items()}


def _alignment_summary(record: RunRecord) -> dict[str, Any] | None:
    """AER figures of a run evaluated with --alignment: the best layer/head (teacher forced), the
    last layer's mean of heads, the best map on the model's own output, the diagonal baseline."""
    alignment = (record.test or {}).get("alignment")
    if not alignment:
        return None
    forced, output = alignment["teacher_forced"], alignment["output"]
    layers = list(forced["argmax"])
    best = forced["best"] or {}
    return {
        "best": best.get("aer", math.nan), "best_map": f"{best['layer']}/{best['head']}" if best else "-",
        "last_mean": forced["argmax"][layers[-1]]["mean"]["aer"] if layers else math.nan,
        "output_best": (output.get("best") or {}).get("aer", math.nan),
        "diagonal": forced["diagonal_baseline"]["aer"],
    }


def table_rows(records: list[RunRecord]) -> list[dict[str, str]]:
    """One row per variant (seeds pooled: mean ± std), then one row per failed or unfinished run."""
    rows = []
    finished = [r for r in records if r.status == "finished"]
    for variant in sorted({r.variant for r in finished}):
        group = [r for r in finished if r.variant == variant]
        scored = [r for r in group if r.test is not None]
        attention = [_attention_means(r) for r in scored]

        def interval(metric: str) -> str:
            cis = [r.ci[metric] for r in scored if metric in r.ci]
            return f"[{statistics.fmean(c[0] for c in cis):.1f}, {statistics.fmean(c[1] for c in cis):.1f}]" if cis else "-"

        p_values = [r.p_value for r in scored if r.p_value is not None]
        aligned = [a for a in (_alignment_summary(r) for r in scored) if a is not None]
        best_maps = sorted({a["best_map"] for a in aligned})
        row = {
            "variant": variant, "seeds": str(len(group)), "status": "finished",
            "parameters_M": _mean_std([r.parameters / 1e6 for r in group if r.parameters], 2),
            "updates": _mean_std([r.global_step for r in group if r.global_step], 0),
            "train_minutes": _mean_std([r.train_seconds / 60 for r in group if r.train_seconds]),
            "tokens_per_s": _mean_std([r.tokens_per_s for r in group], 0),
            f"best_val_{PRIMARY_METRIC}": _mean_std([r.best_val_bleu for r in group]),
        }
        # mean ± std over seeds: one digit fewer than a single value (Measure.digits)
        for metric in text_metrics(headline_only=True):
            row[f"test_{metric.name}"] = _mean_std([r.test["scores"][metric.name]["score"] for r in scored
                                                    if metric.name in r.test["scores"]], metric.digits - 1)
            row[f"test_{metric.name}_ci95"] = interval(metric.name)
        for statistic in attention_statistic_list():
            row[f"attn_{statistic.name}"] = _mean_std([a[statistic.name] for a in attention], statistic.digits - 1)
        rows.append({
            **row,
            "p_vs_best": f"{max(p_values):.3f}" if p_values else "best",
            "aer_best": _mean_std([a["best"] for a in aligned], 3),
            "aer_best_map": ", ".join(best_maps) if best_maps else "-",
            "aer_last_layer_mean": _mean_std([a["last_mean"] for a in aligned], 3),
            "aer_output_best": _mean_std([a["output_best"] for a in aligned], 3),
            "aer_diagonal": _mean_std([a["diagonal"] for a in aligned], 3),
        })
    for record in records:
        if record.status != "finished":
            row = {column: "-" for column in columns()}
            row.update(variant=record.variant, seeds=str(record.seed), status=f"{record.status}: {record.reason}")
            rows.append(row)
    return rows


def write_tables(rows: list[dict[str, str]], folder: Path, split: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "report.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns())
        writer.writeheader()
        writer.writerows(rows)
    md_path = folder / "report.md"
    headline = "/".join(m.display for m in text_metrics(headline_only=True))
    primary = text_metric(PRIMARY_METRIC).display
    lines = [f"Test split: {split}. {headline}: sacreBLEU, 95% CI from paired bootstrap against the best system; "
             f"p_vs_best: paired bootstrap p-value of the {primary} difference to the best system. "
             "aer_*: alignment error rate of cross-attention (argmax source word per target word) against the "
             "statistical reference alignments (evaluate --alignment): aer_best = the best layer/head (named in "
             "aer_best_map) of teacher-forced attention on the references, aer_last_layer_mean = the last layer's mean "
             "of heads, aer_output_best = the best map on the model's own output, aer_diagonal = a diagonal baseline.",
             "",
             "| " + " | ".join(columns()) + " |", "|" + "---|" * len(columns())]
    lines += ["| " + " | ".join(row[c] for c in columns()) + " |" for row in rows]
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md_path, csv_path


# ------------------------------------------------------------------------------ plots
def _curve_figure(curves: list[tuple[str, list[tuple[float, float]]]], xlabel: str):
    """Validation BLEU curves [(label, [(x, BLEU)])] in one plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for label, points in curves:
        if points:
            xs, bleu = zip(*points)
            ax.plot(xs, bleu, marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"validation {text_metric(PRIMARY_METRIC).display} (decode.validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def _label(record: RunRecord) -> str:
    return f"{record.variant} (seed {record.seed})"


def bleu_over_time_figure(records: list[RunRecord]):
    curves = [(_label(r), [(seconds / 60, bleu) for seconds, bleu in r.val_curve]) for r in records]
    return _curve_figure(curves, "training wall-clock time (minutes, validation included)")


def bleu_over_updates_figure(records: list[RunRecord]):
    """Validation BLEU against optimizer updates: the learning curves at equal updates."""
    return _curve_figure([(_label(r), r.val_curve_updates) for r in records], "optimizer updates")


def probe_figure(records: list[RunRecord]):
    """The first probe sentence decoded (greedy) by every variant's best checkpoint: last layer, heads averaged."""
    from attnmt.data.vocab import EOS_PIECE
    from attnmt.inference import DecodeSettings, load_model, pick_device, resolve_checkpoint, translate_lines
    from attnmt.viz import side_by_side_figure

    panels, seen = [], set()
    device = pick_device("cpu")
    for record in records:
        if record.status != "finished" or record.variant in seen:
            continue
        model, tokenizer, hparams = load_model(resolve_checkpoint(record.path), device)
        probe = (hparams.get("probes") or ["The cat sat on the mat."])[0]
        [translation] = translate_lines(model, tokenizer, [probe], DecodeSettings(beam_size=1), device, need_attention=True)
        weights = translation.hypothesis.attention[-1].float().mean(dim=0)  # [T, S]
        src = tokenizer.src_pieces(probe) + [EOS_PIECE]
        tgt = tokenizer.tgt_pieces_from_ids(translation.hypothesis.output_ids)
        panels.append((f"{record.variant}: {translation.text}", weights, src, tgt))
        seen.add(record.variant)
    return side_by_side_figure(panels, title="cross-attention on the probe sentence") if panels else None


def alignment_figure(records: list[RunRecord]):
    """AER of every layer and head (and each layer's mean of heads) of teacher-forced attention,
    one panel per variant (mean over its seeds); None when no run has alignment scores."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    grids: dict[str, list[np.ndarray]] = {}
    labels: dict[str, tuple[list[str], list[str]]] = {}
    for record in records:
        alignment = (record.test or {}).get("alignment") if record.status == "finished" else None
        if not alignment or not alignment["teacher_forced"]["argmax"]:
            continue
        scores = alignment["teacher_forced"]["argmax"]
        layers = list(scores)
        heads = list(scores[layers[0]])  # head_0 ... head_{H-1}, mean
        grids.setdefault(record.variant, []).append(
            np.array([[scores[layer][head]["aer"] for head in heads] for layer in layers], dtype=float))
        labels[record.variant] = (layers, heads)
    if not grids:
        return None
    variants = sorted(grids)
    widths = [len(labels[v][1]) + 1.5 for v in variants]
    figure = Figure(figsize=(sum(widths) * 0.9 + 1.5, max(len(labels[v][0]) for v in variants) * 0.7 + 2.2), dpi=100,
                    layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(variants), squeeze=False, width_ratios=widths)[0]
    image = None
    for ax, variant in zip(axes, variants):
        values = np.nanmean(np.stack(grids[variant]), axis=0)
        layers, heads = labels[variant]
        image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis_r", aspect="auto")
        for (row, column), value in np.ndenumerate(values):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")
        ax.set_xticks(range(len(heads)), labels=[h.replace("head_", "h") for h in heads], fontsize=7)
        ax.set_yticks(range(len(layers)), labels=[layer.replace("layer_", "L") for layer in layers], fontsize=7)
        ax.set_title(f"{variant} (n={len(grids[variant])})", fontsize=8)
    figure.suptitle("AER of teacher-forced cross-attention per layer and head (lower = better alignment)", fontsize=9)
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="AER")
    return figure


def compare(multirun_dir: str | Path, split: str = "test_2016_flickr", evaluate_missing: bool = False,
            beam_size: int | None = None, output_dir: str | Path | None = None, alignment: bool = False) -> dict[str, Any]:
    """Collect, (evaluate,) tabulate and plot a sweep; returns {"records", "rows", "files"}."""
    from torch.utils.tensorboard import SummaryWriter

    from attnmt.viz import figure_to_array, figure_to_png

    multirun_dir = Path(multirun_dir)
    out = Path(output_dir) if output_dir else multirun_dir / "comparison"
    records = collect(multirun_dir, split, evaluate_missing, beam_size, alignment)
    rows = table_rows(records)
    md_path, csv_path = write_tables(rows, out, split)
    files = {"markdown": md_path, "csv": csv_path}
    writer = SummaryWriter(str(out / "tensorboard"))
    try:
        figures = {"val_bleu_vs_time": bleu_over_time_figure(records), "val_bleu_vs_updates": bleu_over_updates_figure(records),
                   "probe_attention": probe_figure(records),
                   "alignment_aer": alignment_figure(records)}
        for name, figure in figures.items():
            if figure is None:
                continue
            files[name] = figure_to_png(figure, out / f"{name}.png")
            writer.add_image(f"comparison/{name}", figure_to_array(figure), 0, dataformats="HWC")
        for record in records:
            if record.test is not None:
                tag = f"{record.variant}_seed{record.seed}"
                for metric in text_metrics(headline_only=True):
                    if metric.name in record.test["scores"]:
                        writer.add_scalar(f"comparison/test_{metric.name}/{tag}", record.test["scores"][metric.name]["score"], 0)
                aligned = _alignment_summary(record)
                if aligned is not None and not math.isnan(aligned["best"]):
                    writer.add_scalar(f"comparison/aer_best/{tag}", aligned["best"], 0)
    finally:
        writer.close()
    return {"records": records, "rows": rows, "files": files}
