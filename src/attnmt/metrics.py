"""Translation metrics (sacreBLEU: BLEU, chrF, TER) and statistics of cross-attention maps.

Text metrics are corpus-level on detokenised text with sacreBLEU's defaults (BLEU: 13a
tokenisation, chrF: char order 6, beta 2, TER: case-insensitive), one reference per segment.

Attention statistics read maps [L, H, T, S] that cover real tokens only (no padding): row t is
the distribution over the S source tokens when the t-th output was produced.

Both are declared once, here (TEXT_METRICS, ATTENTION_STATISTICS: name, display name, direction,
digits): validation (task.py), evaluation and its report (evaluate.py), the log line after training
and the comparison tables (compare.py) read these lists, so a new metric is one entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric
from sacrebleu.significance import PairedTest

from attnmt.errors import DataError


@dataclass(frozen=True)
class Measure:
    """One declared number: its key (metrics.json, TensorBoard tags, report columns), the name a
    table shows, which way is better (None: neither, a description) and how many digits to print."""

    name: str
    display: str
    higher_is_better: bool | None
    digits: int = 2

    @property
    def direction(self) -> str:
        return {True: "higher is better", False: "lower is better", None: "descriptive"}[self.higher_is_better]

    def format(self, value: float | None) -> str:
        """The value as tables print it; "-" when undefined (None or NaN)."""
        return "-" if value is None or math.isnan(value) else f"{value:.{self.digits}f}"

    def best(self, values: Sequence[float]) -> float:
        """The best of `values` in this measure's direction (higher unless lower is better)."""
        return min(values) if self.higher_is_better is False else max(values)


@dataclass(frozen=True)
class TextMetric(Measure):
    """A corpus-level sacreBLEU metric. headline: logged at every validation (val/<name>), in the
    log line after training and in compare's table with a confidence interval (resampled by the
    paired bootstrap, so slow metrics such as TER stay out)."""

    scorer: type[Metric] | None = None
    headline: bool = False


@dataclass(frozen=True)
class AttentionStatistic(Measure):
    """A summary of cross-attention maps p [L, H, T, S] (real tokens only). Exactly one of:
    per_row(p, argmax) -> [L, H] sum over the T target rows of the map (averaged over all rows of
    all maps), or per_map(p, argmax) -> [L, H] one value per map, NaN where undefined (averaged over
    the maps where it is defined)."""

    per_row: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    per_map: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    explanation: str = ""


# The one declaration of text metrics: evaluation, validation, the reports and compare all read it.
TEXT_METRICS: tuple[TextMetric, ...] = (
    TextMetric("bleu", "BLEU", True, scorer=BLEU, headline=True),
    TextMetric("chrf", "chrF", True, scorer=CHRF, headline=True),
    TextMetric("ter", "TER", False, scorer=TER),
)
PRIMARY_METRIC = "bleu"  # the score that ranks systems and picks the best checkpoint (val/bleu)
# TensorBoard's top-level tag of the attention statistics (scalars), apart from the maps (viz.ATTENTION_MAPS_TAG):
# TensorBoard groups by the first tag segment, so statistics and images never share a section.
ATTENTION_STATS_TAG = "attention_stats"


def text_metrics(headline_only: bool = False) -> tuple[TextMetric, ...]:
    """The declared text metrics (read at call time, so a test may patch TEXT_METRICS)."""
    return tuple(m for m in TEXT_METRICS if m.headline or not headline_only)


def text_metric(name: str) -> TextMetric:
    for metric in TEXT_METRICS:
        if metric.name == name:
            return metric
    raise ValueError(f"unknown metric {name!r}; choose from {sorted(m.name for m in TEXT_METRICS)}")


def _metric(name: str) -> Metric:
    scorer = text_metric(name).scorer
    if scorer is None:
        raise ValueError(f"metric {name!r} declares no sacreBLEU scorer")
    return scorer()


def _check_aligned(hyps: Sequence[str], refs: Sequence[str], what: str = "hypotheses") -> None:
    if len(hyps) != len(refs):
        raise DataError(
            f"{len(hyps)} {what} but {len(refs)} references: they must be aligned line by line "
            "(same split, same order)"
        )


def corpus_scores(
    hyps: Sequence[str], refs: Sequence[str], metrics: Sequence[str] | None = None
) -> dict[str, dict[str, float | str]]:
    """Corpus-level scores of detokenised hyps against one reference each.

    metrics: names of TEXT_METRICS (default: all of them)
    -> {"bleu": {"score": 27.3, "signature": "nrefs:1|case:mixed|..."}, "chrf": {...}, ...}
    """
    _check_aligned(hyps, refs)
    results: dict[str, dict[str, float | str]] = {}
    for name in metrics if metrics is not None else [m.name for m in text_metrics()]:
        metric = _metric(name)
        score = metric.corpus_score(list(hyps), [list(refs)])
        results[name] = {"score": float(score.score), "signature": str(metric.get_signature())}
    return results


def paired_significance(
    baseline_hyps: Sequence[str],
    system_hyps: Sequence[str],
    refs: Sequence[str],
    metrics: Sequence[str] | None = None,
    test: str = "bs",
    n_samples: int = 0,
) -> dict[str, dict[str, float | str | tuple[float, float]]]:
    """Is `system` significantly different from `baseline` on the same references?

    test: "bs" paired bootstrap resampling (default 1000 resamples) or "ar" approximate
    randomisation (default 10000 trials); n_samples=0 keeps sacreBLEU's default. The random seed
    is sacreBLEU's (environment variable SACREBLEU_SEED, 12345 when unset), so runs repeat.
    metrics: names of TEXT_METRICS (default: the headline ones).

    -> per metric: baseline / system score, the bootstrap mean and 95% confidence interval
    (low, high) of each, p_value of the difference (two-sided; small = unlikely by chance),
    and sacreBLEU's signature.
    """
    if test not in ("bs", "ar"):
        raise ValueError(f"test must be 'bs' (paired bootstrap) or 'ar' (approximate randomisation), got {test!r}")
    _check_aligned(baseline_hyps, refs, "baseline hypotheses")
    _check_aligned(system_hyps, refs, "system hypotheses")
    names = metrics if metrics is not None else [m.name for m in text_metrics(headline_only=True)]
    named = {name: _metric(name) for name in names}
    paired = PairedTest(
        [("baseline", list(baseline_hyps)), ("system", list(system_hyps))],
        named,
        references=[list(refs)],
        test_type=test,
        n_samples=n_samples,
        # "bs" gets its intervals from its own resamples; "ar" needs extra ones (0 = 1000 of them)
        n_ar_confidence=0 if test == "ar" else -1,
    )
    signatures, table = paired()
    # The table is keyed by sacreBLEU's display names ("BLEU", "chrF2", "TER") in metric order.
    sacre_names = [key for key in table if key != "System"]
    results: dict[str, dict[str, float | str | tuple[float, float]]] = {}
    for name, sacre_name in zip(named, sacre_names):
        baseline, system = table[sacre_name]
        results[name] = {
            "baseline": float(baseline.score),
            "baseline_mean": float(baseline.mean),
            "baseline_ci": (float(baseline.mean - baseline.ci), float(baseline.mean + baseline.ci)),
            "system": float(system.score),
            "system_mean": float(system.mean),
            "system_ci": (float(system.mean - system.ci), float(system.mean + system.ci)),
            "p_value": float(system.p_value),
            "signature": str(signatures[sacre_name]),
        }
    return results


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """[..., T] -> [..., T] float64 1-based ranks, ties sharing their average rank."""
    below = (values[..., None, :] < values[..., :, None]).sum(-1)
    equal = (values[..., None, :] == values[..., :, None]).sum(-1)
    return below.double() + (equal.double() + 1) / 2


def _rank_correlation(argmax: torch.Tensor) -> torch.Tensor:
    """argmax [L, H, T] -> [L, H] Spearman correlation of target position vs argmax source
    position; NaN where undefined (T < 2 or the argmax never moves)."""
    ranks = _average_ranks(argmax)
    positions = torch.arange(1, argmax.size(-1) + 1, dtype=torch.float64).expand_as(ranks)
    ranks = ranks - ranks.mean(-1, keepdim=True)
    positions = positions - positions.mean(-1, keepdim=True)
    spread = ranks.norm(dim=-1) * positions.norm(dim=-1)
    correlation = (ranks * positions).sum(-1) / spread
    return torch.where(spread > 0, correlation, torch.nan)


def _entropy_rows(p: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-300).log()).sum(-1).sum(-1)


def _max_weight_rows(p: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    return p.amax(-1).sum(-1)


def _diagonal_distance_rows(p: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    target_len, source_len = p.shape[-2:]
    source_pos = (argmax.double() + 0.5) / source_len
    target_pos = (torch.arange(target_len, dtype=torch.float64) + 0.5) / target_len
    return (source_pos - target_pos).abs().sum(-1)


def _monotonicity_map(p: torch.Tensor, argmax: torch.Tensor) -> torch.Tensor:
    return _rank_correlation(argmax)


# The one declaration of attention statistics (evaluation, its report, TensorBoard and compare read it).
ATTENTION_STATISTICS: tuple[AttentionStatistic, ...] = (
    AttentionStatistic("entropy", "entropy", None, 3, per_row=_entropy_rows,
                       explanation="-sum_s p log p per target row, in nats: 0 = all weight on one source token, "
                                   "log S = uniform"),
    AttentionStatistic("max_weight", "max weight", None, 3, per_row=_max_weight_rows,
                       explanation="the largest weight of each target row"),
    AttentionStatistic("diagonal_distance", "diagonal distance", None, 3, per_row=_diagonal_distance_rows,
                       explanation="|(argmax_s + 0.5)/S - (t + 0.5)/T| per target row: how far the most-attended "
                                   "source position is from the diagonal, in [0, 1)"),
    AttentionStatistic("monotonicity", "monotonicity", None, 3, per_map=_monotonicity_map,
                       explanation="Spearman rank correlation between the target position t and its argmax source "
                                   "position, per map (1 = left to right through the source, -1 = right to left); "
                                   "maps where it is undefined (one target row, or the argmax never moves) are left out"),
)


def attention_statistic_list() -> tuple[AttentionStatistic, ...]:
    """The declared attention statistics (read at call time, so a test may patch ATTENTION_STATISTICS)."""
    return ATTENTION_STATISTICS


def attention_statistics(maps: Sequence[torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """Summaries of cross-attention maps, each [L, H, T, S] over real tokens only (all maps share
    L and H): every statistic of ATTENTION_STATISTICS per layer and head. A per-row statistic is
    the mean over all target rows of all maps; a per-map one the mean over the maps where it is
    defined (NaN if it is defined for none).

    -> {"layer_0": {"head_0": {statistic: value}, ..., "mean": {statistic: mean over heads}}, ...}
    """
    if not maps:
        raise ValueError("attention_statistics needs at least one attention map")
    declared = attention_statistic_list()
    layers, heads = maps[0].shape[:2]
    sums = {s.name: torch.zeros(layers, heads, dtype=torch.float64) for s in declared}
    counts = {s.name: torch.zeros(layers, heads, dtype=torch.float64) for s in declared if s.per_map is not None}
    rows = 0
    for weights in maps:
        if tuple(weights.shape[:2]) != (layers, heads):
            raise ValueError(f"attention maps disagree on [L, H]: {tuple(weights.shape[:2])} vs {(layers, heads)}")
        p = weights.detach().to("cpu", torch.float64)  # [L, H, T, S]
        argmax = p.argmax(-1)  # [L, H, T]
        rows += p.shape[-2]
        for statistic in declared:
            if statistic.per_row is not None:
                sums[statistic.name] += statistic.per_row(p, argmax)
            else:
                value = statistic.per_map(p, argmax)  # [L, H], NaN where undefined
                defined = ~value.isnan()
                sums[statistic.name] += torch.where(defined, value, 0.0)
                counts[statistic.name] += defined.double()

    per_head = {
        name: total / rows if name not in counts else torch.where(counts[name] > 0, total / counts[name], torch.nan)
        for name, total in sums.items()
    }
    results: dict[str, dict[str, dict[str, float]]] = {}
    for layer in range(layers):
        by_head = {f"head_{head}": {name: float(per_head[name][layer, head]) for name in per_head} for head in range(heads)}
        by_head["mean"] = {name: _nanmean([by_head[f"head_{h}"][name] for h in range(heads)]) for name in per_head}
        results[f"layer_{layer}"] = by_head
    return results


def _nanmean(values: list[float]) -> float:
    defined = [value for value in values if not math.isnan(value)]
    return sum(defined) / len(defined) if defined else math.nan


def flatten_statistics(statistics: dict[str, dict[str, dict[str, float]]], prefix: str = ATTENTION_STATS_TAG) -> dict[str, float]:
    """attention_statistics(...) -> {"<prefix>/layer_0/head_1/entropy": value, ...} for loggers."""
    return {
        f"{prefix}/{layer}/{head}/{name}": value
        for layer, by_head in statistics.items()
        for head, values in by_head.items()
        for name, value in values.items()
    }
