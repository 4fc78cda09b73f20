"""Evaluate a checkpoint: decode splits, score with sacreBLEU, draw and summarise cross-attention.

    attnmt-evaluate RUN_DIR                                # the run's test split(s), beam 5 (or python scripts/evaluate.py)
    attnmt-evaluate RUN_DIR --split val test_2016_flickr --beam-size 5 1
    attnmt-evaluate CKPT --src my.en --ref my.fr --name mytest
    attnmt-evaluate RUN_B --compare-with RUN_A/eval/test_2016_flickr.beam5.hyp

In code: evaluate(checkpoint, EvalOptions(...)) (the command line is attnmt.cli.evaluate).

Outputs go to `<run>/eval/` (or next to a bare checkpoint in `eval/`, or to --output-dir):
  <split>.<decoding>.hyp         one detokenised hypothesis per source line, same order
  metrics.json                   merged per "<split>/<decoding>" key (e.g. "test_2016_flickr/beam5")
  attention/<split>/<decoding>/  PNG heatmaps: eval_<split>_<i>_* for the first N sentences, probe_<i>_*
and TensorBoard events under `<run>/tensorboard/eval/<split>/<decoding>/` (a run of its own in
TensorBoard, so greedy and beam, or two splits, never share a tag at one step): images
attention_maps/eval_<split>_<i>/..., attention_maps/probe_<i>/... (the tags training's probe maps
use), scalars eval/{bleu,chrf,ter} and attention_stats/<variant>/<layer>/<head|mean>/<statistic>,
all at the checkpoint's global step.

With --alignment (attnmt.alignment), cross-attention is also scored as word alignment against
reference alignments of the set made by the statistical aligner (cached under the data cache):
AER / precision / recall per layer and head (and per layer for the mean of the heads), from
teacher-forced attention on the reference translation and from the attention of the model's own
output (aligned to the source by the same aligner), in metrics.json under "alignment" and as
TensorBoard scalars alignment/<variant>/<teacher_forced|output>/<layer>/<head|mean>/<metric>, plus
word-level maps with the reference links outlined (alignment/<set>_<i>/layer_<l>, probes with the
aligner's links of their translation). --gold-alignment scores teacher-forced attention against
human alignments (NAACL 2003 files, e.g. the English-French Hansards test set), stored separately
under "<name>/alignment".

Attention statistics come from the evaluation's own decoding (beam search keeps every output's
attention, [L, H, T, S] per sentence: a few MB for 1000 sentences), so they describe exactly the
hypotheses that were scored. Decoding time covers subword encoding, search and detokenisation.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from attnmt.data.corpus import read_lines
from attnmt.errors import ConfigError, DataError, find_user_error
from attnmt.atomic import atomic_file
from attnmt.metrics import (ATTENTION_STATS_TAG, attention_statistic_list, attention_statistics, corpus_scores,
                            flatten_statistics, paired_significance, text_metrics)
from attnmt.inference import DecodeSettings, Translation, load_model, pick_device, resolve_checkpoint, translate_lines

log = logging.getLogger("attnmt.evaluate")


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
    from attnmt.checkpoint import check_targets

    config = run_dir / ".hydra" / "config.yaml" if run_dir is not None else None
    if config is None or not config.is_file():
        where = f"{config} not found" if config else "the checkpoint is not inside a run's checkpoints/ folder"
        raise ConfigError(
            f"no data config for this checkpoint ({where}), so its splits are unknown: "
            "evaluate a file pair with --src FILE --ref FILE"
        )
    try:
        corpus_cfg = OmegaConf.load(config).data.corpus
        plain = OmegaConf.to_container(corpus_cfg) if OmegaConf.is_config(corpus_cfg) else corpus_cfg
        check_targets(plain, ("attnmt.data.",), config, what="data.corpus")  # a shared run folder names what is built
        return instantiate(corpus_cfg)
    except InstantiationException as err:
        if find_user_error(err) is not None:
            raise  # the command line's reporter prints the user's mistake behind Hydra's wrapper
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

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(clean(data), indent=2, allow_nan=False) + "\n")


def _global_step(checkpoint: Path) -> int:
    """The training step the checkpoint was saved at (tensors memory-mapped, not read)."""
    from attnmt.checkpoint import load_checkpoint_file

    return int(load_checkpoint_file(checkpoint, mmap=True).get("global_step", 0))


# --------------------------------------------------------------------------- attention output
def _fresh_writer(folder: Path):
    """A SummaryWriter for one evaluation's sub-run; an earlier evaluation's events there are
    removed, so re-evaluating replaces the images and scalars instead of stacking copies."""
    from torch.utils.tensorboard import SummaryWriter

    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    return SummaryWriter(log_dir=str(folder))


def log_maps(writer, translations: list[Translation], prefix: str, step: int, png_dir: Path, merge: bool,
             head_grid_layer: int, title: str | None = None) -> list[dict[str, Any]]:
    """Heatmaps of each translation under attention_maps/<prefix>_<i>/... -> one record per sentence.

    title (e.g. "bahdanau · step 2400 · test_2016_flickr beam5") starts each figure's title and the
    translation is its second line, as in training's probe maps: a PNG or image seen on its own
    still says which model, checkpoint and decoding drew it."""
    from attnmt.viz import ATTENTION_MAPS_TAG, log_attention_maps, merge_subwords

    records = []
    for i, translation in enumerate(translations):
        hyp = translation.hypothesis
        if hyp is None:
            continue  # an empty source line has no attention
        src_labels, tgt_labels = translation.src_tokens, translation.tgt_tokens
        written = log_attention_maps(writer, f"{prefix}_{i}", hyp.attention, src_labels, tgt_labels, step, png_dir,
                                     head_grid_layer, merge, title=title, translation=translation.text)
        if merge:  # record the labels the maps show
            _, src_labels, tgt_labels = merge_subwords(hyp.attention[-1, 0], src_labels, tgt_labels)
        records.append({
            "name": f"{prefix}_{i}", "source": translation.source, "translation": translation.text,
            "src_tokens": src_labels, "tgt_tokens": tgt_labels,
            "tags": [w for w in written if w.startswith(f"{ATTENTION_MAPS_TAG}/")],
            "pngs": [w for w in written if not w.startswith(f"{ATTENTION_MAPS_TAG}/")],
        })
    return records


# --------------------------------------------------------------------------- attention as alignment
@dataclass
class _AlignmentSettings:
    """--alignment options and what one evaluate() call computes once per set."""

    threshold: float | None = None
    backend: str = "ibm2"
    heuristic: str = "grow-diag-final-and"
    gold: tuple[Path, Path, Path] | None = None
    gold_name: str = "gold"
    gold_reversed: bool = False
    cache_dir: Path | None = None
    corpus: Any = None
    references: dict[str, Any] = field(default_factory=dict)  # set name -> ReferenceAlignments
    teacher_forced: dict[str, tuple[dict[str, Any], list[Any]]] = field(default_factory=dict)  # -> (results, word maps)


def _alignment_setup(run_dir: Path | None, settings: _AlignmentSettings) -> None:
    """The run's corpus (its training text trains the aligner) and the data cache folder."""
    from omegaconf import OmegaConf

    from attnmt.config import project_root

    settings.cache_dir = Path(project_root()) / "data" / "cache"
    config = run_dir / ".hydra" / "config.yaml" if run_dir is not None else None
    if config is None or not config.is_file():
        return
    try:
        cache = OmegaConf.select(OmegaConf.load(config), "data.cache_dir")
        if cache:
            settings.cache_dir = Path(str(cache))
    except Exception:  # an unresolvable interpolation: keep the project's data/cache
        pass
    settings.corpus = run_corpus(run_dir)


def _reference(ctx: _Context, eval_set: EvalSet):
    """The set's reference alignments (cached): the aligner trained on the run's training text
    plus the set; a bare checkpoint (no run config) trains it on the set alone."""
    from attnmt.alignment.reference import corpus_alignments, reference_alignments

    settings = ctx.alignment
    if eval_set.name not in settings.references:
        log.info("reference alignments of %s (%s aligner, %s)", eval_set.name, settings.backend, settings.heuristic)
        lines = (eval_set.sources, eval_set.references)
        if settings.corpus is not None:
            found = corpus_alignments(settings.corpus, eval_set.name, settings.cache_dir, settings.backend,
                                      settings.heuristic, eval_lines=lines)
        else:
            found = reference_alignments([], [], *lines, "src", "tgt", settings.cache_dir, settings.backend,
                                         heuristic=settings.heuristic)
        settings.references[eval_set.name] = found
    return settings.references[eval_set.name]


def _score_word_maps(word_maps: list[Any], references: list[Any], src_words: list[list[str]], tgt_words: list[list[str]],
                     threshold: float | None) -> dict[str, Any]:
    """Word-level maps (None = skipped sentence) against references -> argmax scores per layer/head,
    the best layer/head, the threshold scores, and a diagonal baseline on the same sentences."""
    from attnmt.alignment.attention import AttentionScorer, best_map, diagonal_links
    from attnmt.alignment.links import alignment_scores

    argmax, above = AttentionScorer(), AttentionScorer(threshold) if threshold is not None else None
    kept = [k for k, m in enumerate(word_maps) if m is not None]
    for k in kept:
        argmax.add(word_maps[k], references[k])
        if above is not None:
            above.add(word_maps[k], references[k])
    scores = argmax.scores()
    result: dict[str, Any] = {
        "sentences": len(kept), "argmax": scores, "best": best_map(scores),
        "diagonal_baseline": alignment_scores([diagonal_links(len(src_words[k]), len(tgt_words[k])) for k in kept],
                                              [references[k] for k in kept]),
    }
    if above is not None:
        result["threshold"] = {"value": threshold, "scores": above.scores(), "best": best_map(above.scores())}
    return result


def _teacher_forced_alignment(ctx: _Context, eval_set: EvalSet) -> tuple[dict[str, Any], list[Any]]:
    """Attention of the model reading the references, scored against the reference alignments."""
    from attnmt.alignment.attention import teacher_forced_attention, word_attention

    settings = ctx.alignment
    if eval_set.name not in settings.teacher_forced:
        reference = _reference(ctx, eval_set)
        started = time.perf_counter()
        maps = teacher_forced_attention(ctx.model, ctx.tokenizer, eval_set.sources, eval_set.references, ctx.device)
        word_maps = [None if item is None else word_attention(item[0], item[1], item[2], reference.src_words[k], reference.tgt_words[k])
                     for k, item in enumerate(maps)]
        result = _score_word_maps(word_maps, reference.references, reference.src_words, reference.tgt_words, settings.threshold)
        result["seconds"] = time.perf_counter() - started
        settings.teacher_forced[eval_set.name] = (result, word_maps)
    return settings.teacher_forced[eval_set.name]


def _output_word_maps(ctx: _Context, eval_set: EvalSet, translations: list[Translation]):
    """The translations aligned to their sources by the set's aligner -> (words, links, word-level maps)."""
    from attnmt.alignment.attention import word_attention

    reference = _reference(ctx, eval_set)
    src_words, tgt_words, links = reference.align([t.source for t in translations], [t.text for t in translations])
    word_maps = [word_attention(t.hypothesis.attention, t.src_tokens, t.tgt_tokens, src_words[k], tgt_words[k])
                 if t.hypothesis is not None and tgt_words[k] else None for k, t in enumerate(translations)]
    return src_words, tgt_words, links, word_maps


def _alignment_entry(ctx: _Context, eval_set: EvalSet, translations: list[Translation]) -> dict[str, Any]:
    from attnmt.alignment.links import Reference

    reference = _reference(ctx, eval_set)
    teacher_forced, _ = _teacher_forced_alignment(ctx, eval_set)
    src_words, tgt_words, links, word_maps = _output_word_maps(ctx, eval_set, translations)
    output = _score_word_maps(word_maps, [Reference.of(x) for x in links], src_words, tgt_words, ctx.alignment.threshold)
    meta = reference.meta
    return {
        "reference": {"folder": str(reference.folder), "backend": meta["backend"], "heuristic": meta["heuristic"],
                      "train_pairs": meta["train_pairs"], "links_per_sentence": meta["links_per_sentence"],
                      "forward_vs_backward": meta["forward_vs_backward"], "build_seconds": meta["seconds"],
                      "cache_hit": reference.cache_hit},
        "teacher_forced": teacher_forced,
        "output": {**output, "reference": "the statistical aligner's links of (source, output)"},
    }


def alignment_scalars(alignment: dict[str, Any], prefix: str) -> dict[str, float]:
    """{"<prefix>/<teacher_forced|output>/<layer>/<head|mean>/<aer|precision|recall>": value} (argmax
    links; "<prefix>_threshold/..." for the threshold links), NaN left out."""
    scalars = {}
    for kind in ("teacher_forced", "output"):
        if kind not in alignment:
            continue
        sources = [(prefix, alignment[kind]["argmax"])]
        if "threshold" in alignment[kind]:
            sources.append((prefix + "_threshold", alignment[kind]["threshold"]["scores"]))
        for root, scores in sources:
            for layer, by_head in scores.items():
                for head, values in by_head.items():
                    for metric in ("aer", "precision", "recall"):
                        if not math.isnan(values[metric]):
                            scalars[f"{root}/{kind}/{layer}/{head}/{metric}"] = values[metric]
    return scalars


def _alignment_images(writer, prefix: str, word_map: Any, src_words: list[str], tgt_words: list[str], links: Any,
                      step: int, png_dir: Path) -> list[str]:
    """Word-level maps (mean of heads, every layer) with `links` outlined -> tags and PNG paths."""
    from attnmt.viz import attention_figure, figure_to_array, figure_to_png

    written = []
    for layer in range(word_map.shape[0]):
        title = f"{prefix} layer_{layer}" + (" (mean of heads)" if word_map.shape[1] > 1 else "") + ": outlined = reference"
        figure = attention_figure(word_map[layer].mean(axis=0), [*src_words, "</s>"], tgt_words, title, alignment=links)
        tag = f"alignment/{prefix}/layer_{layer}"
        writer.add_image(tag, figure_to_array(figure), global_step=step, dataformats="HWC")
        written += [tag, str(figure_to_png(figure, png_dir / f"alignment_{prefix}_layer_{layer}.png"))]
    return written


def _log_alignment(ctx: _Context, writer, eval_set: EvalSet, entry: dict[str, Any], probes: list[Translation] | None,
                   png_dir: Path) -> None:
    for tag, value in alignment_scalars(entry["alignment"], f"alignment/{ctx.variant}").items():
        writer.add_scalar(tag, value, ctx.step)
    reference = _reference(ctx, eval_set)
    _, word_maps = _teacher_forced_alignment(ctx, eval_set)
    written = []
    for k in range(min(ctx.num_maps, len(word_maps))):
        if word_maps[k] is not None:
            written += _alignment_images(writer, f"{eval_set.name}_{k}", word_maps[k], reference.src_words[k],
                                         reference.tgt_words[k], reference.links[k], ctx.step, png_dir)
    if probes:
        src_words, tgt_words, links, probe_maps = _output_word_maps(ctx, eval_set, probes)
        for k, word_map in enumerate(probe_maps):
            if word_map is not None:
                written += _alignment_images(writer, f"probe_{k}", word_map, src_words[k], tgt_words[k], links[k], ctx.step, png_dir)
    entry["alignment"]["maps"] = written


def _gold_alignment(ctx: _Context) -> tuple[str, dict[str, Any]]:
    """Teacher-forced attention on human-aligned sentences (NAACL 2003 files) -> (key, entry)."""
    from attnmt.alignment.attention import teacher_forced_attention, word_attention
    from attnmt.alignment.links import Reference, read_naacl

    settings = ctx.alignment
    src_file, tgt_file, links_file = settings.gold
    gold = read_naacl(src_file, tgt_file, links_file, settings.gold_name)
    references = gold.references
    if settings.gold_reversed:  # the links list the model's target side first
        references = [Reference(frozenset((s, t) for t, s in r.sure), frozenset((s, t) for t, s in r.possible)) for r in references]
    started = time.perf_counter()
    maps = teacher_forced_attention(ctx.model, ctx.tokenizer, [" ".join(w) for w in gold.src_words],
                                    [" ".join(w) for w in gold.tgt_words], ctx.device)
    word_maps = [None if item is None else word_attention(item[0], item[1], item[2], gold.src_words[k], gold.tgt_words[k])
                 for k, item in enumerate(maps)]
    result = _score_word_maps(word_maps, references, gold.src_words, gold.tgt_words, settings.threshold)
    result["seconds"] = time.perf_counter() - started
    entry = {"split": settings.gold_name, "checkpoint": str(ctx.checkpoint), "global_step": ctx.step, "variant": ctx.variant,
             "files": [str(src_file), str(tgt_file), str(links_file)], "sentences": len(gold.ids),
             "sure_links": sum(len(r.sure) for r in references), "possible_links": sum(len(r.possible) for r in references),
             "alignment": {"teacher_forced": result}}
    sub_run = ctx.tensorboard_root / "eval" / settings.gold_name / "teacher_forced"
    writer = _fresh_writer(sub_run)
    try:
        for tag, value in alignment_scalars(entry["alignment"], f"alignment/{ctx.variant}").items():
            writer.add_scalar(tag, value, ctx.step)
    finally:
        writer.close()
    entry["tensorboard_dir"] = str(sub_run)
    return f"{settings.gold_name}/alignment", entry


# --------------------------------------------------------------------------- evaluation
def compare_systems(baseline: list[str], system: list[str], references: list[str],
                    metrics: tuple[str, ...] | None = None, test: str = "bs") -> dict[str, Any]:
    """sacreBLEU's paired significance test of `system` against `baseline` on the same references
    (paired bootstrap by default, "ar" = approximate randomisation) -> per metric scores, 95% CIs, p-value.
    metrics: names of metrics.TEXT_METRICS (default: the headline ones)."""
    return paired_significance(baseline, system, references, metrics=metrics, test=test)


@dataclass
class _Context:
    """What every (set, decoding) evaluation of one checkpoint shares."""

    model: Any
    tokenizer: Any
    device: torch.device
    checkpoint: Path
    step: int
    variant: str
    probes: list[str]
    eval_dir: Path
    tensorboard_root: Path
    num_maps: int
    merge_subwords: bool
    head_grid_layer: int
    alignment: "_AlignmentSettings | None" = None


def _decode_and_score(ctx: _Context, eval_set: EvalSet, setting: DecodeSettings) -> tuple[dict[str, Any], list[Translation]]:
    """Decode a set (timed), write its .hyp file, score it and summarise its attention -> (entry, translations)."""
    log.info("decoding %s (%d sentences), %s, on %s", eval_set.name, len(eval_set.sources), setting.name, ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    translations = translate_lines(ctx.model, ctx.tokenizer, eval_set.sources, setting, ctx.device,
                                   max_src_tokens=None, need_attention=True)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    hyps = [t.text for t in translations]
    hyp_file = ctx.eval_dir / f"{eval_set.name}.{setting.name}.hyp"
    hyp_file.parent.mkdir(parents=True, exist_ok=True)
    hyp_file.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    maps = [t.hypothesis.attention for t in translations if t.hypothesis is not None]  # each [L, H, T, S]
    entry = {
        "split": eval_set.name, "source_file": str(eval_set.src_file), "reference_file": str(eval_set.ref_file),
        "hypothesis_file": str(hyp_file), "checkpoint": str(ctx.checkpoint), "global_step": ctx.step,
        "variant": ctx.variant,
        "decoding": {"beam_size": setting.beam_size, "alpha": setting.alpha if setting.beam_size > 1 else None,
                     "max_len_a": setting.max_len_a, "max_len_b": setting.max_len_b,
                     "max_tokens": setting.max_tokens, "device": str(ctx.device)},
        "sentences": len(hyps),
        "scores": {m.name: {**corpus_scores(hyps, eval_set.references, [m.name])[m.name],
                            "higher_is_better": m.higher_is_better} for m in text_metrics()},
        "decode_seconds": seconds,
        "sentences_per_second": len(hyps) / max(seconds, 1e-9),
        "attention_statistics": attention_statistics(maps) if maps else {},
    }
    return entry, translations


def _log_evaluation(ctx: _Context, eval_set: EvalSet, setting: DecodeSettings, entry: dict[str, Any],
                    translations: list[Translation]) -> None:
    """Maps (first N sentences + probes) as PNGs and TensorBoard images, scores and statistics as
    scalars, all in this evaluation's own folders (replacing an earlier evaluation's files)."""
    sub_run = ctx.tensorboard_root / "eval" / eval_set.name / setting.name
    png_dir = ctx.eval_dir / "attention" / eval_set.name / setting.name
    for old in png_dir.glob("*.png"):
        old.unlink()
    writer = _fresh_writer(sub_run)
    try:
        maps = (ctx.merge_subwords, ctx.head_grid_layer, f"{ctx.variant} · step {ctx.step} · {eval_set.name} {setting.name}")
        records = log_maps(writer, translations[: ctx.num_maps], f"eval_{eval_set.name}", ctx.step, png_dir, *maps)
        probes = None
        if ctx.probes:
            probes = translate_lines(ctx.model, ctx.tokenizer, ctx.probes, setting, ctx.device,
                                     max_src_tokens=None, need_attention=True)
            records += log_maps(writer, probes, "probe", ctx.step, png_dir, *maps)
        if "alignment" in entry:
            _log_alignment(ctx, writer, eval_set, entry, probes, png_dir)
        for metric in text_metrics():
            writer.add_scalar(f"eval/{metric.name}", entry["scores"][metric.name]["score"], ctx.step)
        for tag, value in flatten_statistics(entry["attention_statistics"], prefix=f"{ATTENTION_STATS_TAG}/{ctx.variant}").items():
            if not math.isnan(value):  # undefined statistics have nothing to plot
                writer.add_scalar(tag, value, ctx.step)
    finally:
        writer.close()
    entry.update(tensorboard_dir=str(sub_run), attention_maps=records)


@dataclass(frozen=True)
class EvalOptions:
    """What evaluate() decodes, scores and writes: the command line's options (attnmt-evaluate --help).

    decode: the decoding settings (inference.DecodeSettings: its defaults are the project's); with
    beam_sizes several beam sizes are decoded and recorded separately, each with decode's other
    fields (None = decode.beam_size alone).
    alignment=True adds "alignment" to every entry (attention as word alignment, see the module
    doc); gold_alignment=(source text, target text, links) scores teacher-forced attention against
    human alignments in the NAACL 2003 format (works without alignment=True; gold_reversed when the
    links give the model's target position first), stored under "<gold_name>/alignment".
    """

    splits: tuple[str, ...] | list[str] | None = None  # splits of the run's data config (None: its test splits)
    src: str | Path | None = None  # a custom source file, with ref
    ref: str | Path | None = None
    name: str | None = None  # label of the src/ref pair (default file_<src name>)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    beam_sizes: tuple[int, ...] | None = None
    device: str = "auto"
    output_dir: str | Path | None = None  # default <run>/eval, or eval/ next to a bare checkpoint
    num_maps: int = 4  # attention maps of the first N sentences of each set
    merge_subwords: bool = False
    head_grid_layer: int = -1
    compare_with: str | Path | None = None  # another system's hypotheses: paired significance test
    significance_test: str = "bs"
    alignment: bool = False
    alignment_threshold: float | None = None
    alignment_backend: str = "ibm2"
    gold_alignment: tuple[str | Path, str | Path, str | Path] | None = None
    gold_name: str = "gold"
    gold_reversed: bool = False

    def settings(self) -> list[DecodeSettings]:
        """One DecodeSettings per beam size to decode, in order, without repeats."""
        return [replace(self.decode, beam_size=k) for k in dict.fromkeys(self.beam_sizes or (self.decode.beam_size,))]


_DECODE_FIELDS = {f.name for f in fields(DecodeSettings)}


def evaluate(checkpoint: str | Path, options: EvalOptions | None = None, **changes: Any) -> dict[str, Any]:
    """Decode every (set, beam size), score, write hyps/metrics/maps/events; see the module doc.

    options: EvalOptions; keyword arguments change its fields, and a DecodeSettings field (alpha,
    max_len_a, max_len_b, max_tokens) changes options.decode, e.g.
    evaluate(run, splits=["val"], beam_sizes=(5, 1), max_len_b=20).

    -> {"checkpoint", "run_dir", "eval_dir", "tensorboard_root", "global_step", "variant",
        "results": {"<set>/<decoding>": JSON-ready entry (also in metrics.json)},
        "translations": {"<set>/<decoding>": [Translation] in source order (hypotheses with attention)}}
    """
    options = options or EvalOptions()
    decode_changes = {key: changes.pop(key) for key in list(changes) if key in _DECODE_FIELDS}
    options = replace(options, **changes)
    if decode_changes:
        options = replace(options, decode=replace(options.decode, **decode_changes))
    settings = options.settings()
    if options.num_maps < 0:
        raise ConfigError(f"--num-maps {options.num_maps}: must be 0 or more")
    checkpoint = resolve_checkpoint(checkpoint)
    run_dir = run_dir_of(checkpoint)
    sets = eval_sets(run_dir, list(options.splits) if options.splits else None, options.src, options.ref, options.name)
    baseline = None
    compare_with = options.compare_with
    if compare_with is not None:  # checked before decoding for minutes
        if len(sets) * len(settings) != 1:
            raise ConfigError("--compare-with needs exactly one split and one beam size (the system to compare)")
        baseline = read_lines(compare_with)
        if len(baseline) != len(sets[0].references):
            raise DataError(f"{compare_with} has {len(baseline)} lines but {sets[0].name} has {len(sets[0].references)}")
    output_dir = options.output_dir
    eval_dir = Path(output_dir) if output_dir else (run_dir / "eval" if run_dir else checkpoint.parent / "eval")
    metrics_path = eval_dir / "metrics.json"
    stored = _read_metrics(metrics_path)
    has_tensorboard = run_dir is not None and (run_dir / "tensorboard").is_dir()

    align_settings = None
    alignment, gold_alignment = options.alignment, options.gold_alignment
    if alignment or gold_alignment is not None:
        threshold = options.alignment_threshold
        if threshold is not None and not 0 < threshold <= 1:
            raise ConfigError(f"--alignment-threshold {threshold}: must be in (0, 1]")
        if options.alignment_backend not in ("ibm2", "eflomal"):
            raise ConfigError(f"--alignment-backend {options.alignment_backend!r}: choose ibm2 or eflomal")
        gold = None
        if gold_alignment is not None:
            gold = tuple(Path(p) for p in gold_alignment)
            for path in gold:
                if not path.is_file():
                    raise DataError(f"gold alignment file {path} does not exist")
        align_settings = _AlignmentSettings(threshold, options.alignment_backend, gold=gold, gold_name=options.gold_name,
                                            gold_reversed=options.gold_reversed)
        if alignment:
            _alignment_setup(run_dir, align_settings)

    torch_device = pick_device(options.device)
    model, tokenizer, hparams = load_model(checkpoint, torch_device)
    ctx = _Context(model, tokenizer, torch_device, checkpoint, _global_step(checkpoint), str(hparams.get("variant", "model")),
                   list(hparams.get("probes") or []), eval_dir,
                   run_dir / "tensorboard" if has_tensorboard else eval_dir / "tensorboard",
                   options.num_maps, options.merge_subwords, options.head_grid_layer, align_settings)
    summary: dict[str, Any] = {
        "checkpoint": str(checkpoint), "run_dir": str(run_dir) if run_dir else None, "eval_dir": str(eval_dir),
        "tensorboard_root": str(ctx.tensorboard_root), "global_step": ctx.step, "variant": ctx.variant,
        "results": {}, "translations": {},
    }
    for eval_set in sets:
        for setting in settings:
            entry, translations = _decode_and_score(ctx, eval_set, setting)
            if baseline is not None:
                hyps = [t.text for t in translations]
                test = options.significance_test
                entry["comparison"] = {"baseline_file": str(compare_with), "test": test,
                                       "metrics": compare_systems(baseline, hyps, eval_set.references, test=test)}
            if alignment:
                entry["alignment"] = _alignment_entry(ctx, eval_set, translations)
            _log_evaluation(ctx, eval_set, setting, entry, translations)
            key = f"{eval_set.name}/{setting.name}"
            stored[key] = summary["results"][key] = entry
            summary["translations"][key] = translations
            _write_json(metrics_path, stored)  # after every evaluation: a later failure keeps the earlier ones
    if gold_alignment is not None:
        key, entry = _gold_alignment(ctx)
        stored[key] = summary["results"][key] = entry
        _write_json(metrics_path, stored)
    return summary


# --------------------------------------------------------------------------- report
def format_report(summary: dict[str, Any]) -> str:
    """The short table printed by the CLI: scores and speed, signatures, attention summary, files.
    Its columns follow metrics.TEXT_METRICS and metrics.ATTENTION_STATISTICS."""
    metrics = text_metrics()
    head = ("set", "decoding", "sents", *(m.display for m in metrics), "seconds", "sent/s")
    rows = [head]
    scored = [entry for entry in summary["results"].values() if "scores" in entry]  # gold alignments have no scores
    for entry in scored:
        scores = entry["scores"]
        rows.append((entry["split"], _decoding_label(entry["decoding"]), str(entry["sentences"]),
                     *(m.format(scores[m.name]["score"]) if m.name in scores else "-" for m in metrics),
                     f"{entry['decode_seconds']:.1f}", f"{entry['sentences_per_second']:.1f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"checkpoint {summary['checkpoint']} (step {summary['global_step']}, {summary['variant']})"]
    lines += ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    if scored:
        width = max(len(m.display) for m in metrics)
        lines += [f"{m.display:{width}s} signature {scored[0]['scores'][m.name]['signature']}"
                  for m in metrics if m.name in scored[0]["scores"]]
    statistics = attention_statistic_list()
    for key, entry in summary["results"].items():
        for layer, by_head in entry.get("attention_statistics", {}).items():
            stats = by_head["mean"]
            lines.append(f"attention {key} {layer} (mean of heads): " + ", ".join(
                f"{s.display} {s.format(stats[s.name])}" for s in statistics if s.name in stats))
        if "comparison" in entry:
            lines.append(format_comparison(entry["comparison"]))
        if "alignment" in entry:
            lines += format_alignment(key, entry["alignment"])
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


def format_alignment(key: str, alignment: dict[str, Any]) -> list[str]:
    """AER lines: the best layer/head and every layer's mean of heads, per kind of attention."""
    lines = []
    if "reference" in alignment:
        ref = alignment["reference"]
        lines.append(f"alignment {key}: reference = {ref['backend']} aligner ({ref['heuristic']}, "
                     f"{ref['links_per_sentence']:.1f} links/sentence) {ref['folder']}")
    for kind in ("teacher_forced", "output"):
        if kind not in alignment:
            continue
        result = alignment[kind]
        best = result["best"]
        text = (f"alignment {key} {kind.replace('_', '-')} AER: best {best['layer']}/{best['head']} {best['aer']:.3f} "
                f"(P {best['precision']:.3f}, R {best['recall']:.3f})" if best else f"alignment {key} {kind}: no links")
        layers = ", ".join(f"{layer} {by_head['mean']['aer']:.3f}" for layer, by_head in result["argmax"].items())
        lines.append(f"{text}; mean of heads: {layers}; diagonal baseline {result['diagonal_baseline']['aer']:.3f}")
    return lines
