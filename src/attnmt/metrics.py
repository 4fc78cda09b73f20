"""Translation metrics (sacreBLEU: BLEU, chrF, TER) and statistics of cross-attention maps.

Text metrics are corpus-level on detokenised text with sacreBLEU's defaults (BLEU: 13a
tokenisation, chrF: char order 6, beta 2, TER: case-insensitive), one reference per segment.

Attention statistics read maps [L, H, T, S] that cover real tokens only (no padding): row t is
the distribution over the S source tokens when the t-th output was produced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric
from sacrebleu.significance import PairedTest

from attnmt.errors import DataError

METRICS: dict[str, type[Metric]] = {"bleu": BLEU, "chrf": CHRF, "ter": TER}
STATISTICS = ("entropy", "max_weight", "diagonal_distance", "monotonicity")
# TensorBoard's top-level tag of these statistics (scalars), apart from the maps (viz.ATTENTION_MAPS_TAG):
# TensorBoard groups by the first tag segment, so statistics and images never share a section.
ATTENTION_STATS_TAG = "attention_stats"


def _metric(name: str) -> Metric:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRICS)}")
    return METRICS[name]()


def _check_aligned(hyps: Sequence[str], refs: Sequence[str], what: str = "hypotheses") -> None:
    if len(hyps) != len(refs):
        raise DataError(
            f"{len(hyps)} {what} but {len(refs)} references: they must be aligned line by line "
            "(same split, same order)"
        )


def corpus_scores(
    hyps: Sequence[str], refs: Sequence[str], metrics: Sequence[str] = ("bleu", "chrf", "ter")
) -> dict[str, dict[str, float | str]]:
    """Corpus-level scores of detokenised hyps against one reference each.

    -> {"bleu": {"score": 27.3, "signature": "nrefs:1|case:mixed|..."}, "chrf": {...}, ...}
    """
    _check_aligned(hyps, refs)
    results: dict[str, dict[str, float | str]] = {}
    for name in metrics:
        metric = _metric(name)
        score = metric.corpus_score(list(hyps), [list(refs)])
        results[name] = {"score": float(score.score), "signature": str(metric.get_signature())}
    return results


def paired_significance(
    baseline_hyps: Sequence[str],
    system_hyps: Sequence[str],
    refs: Sequence[str],
    metrics: Sequence[str] = ("bleu", "chrf"),
    test: str = "bs",
    n_samples: int = 0,
) -> dict[str, dict[str, float | str | tuple[float, float]]]:
    """Is `system` significantly different from `baseline` on the same references?

    test: "bs" paired bootstrap resampling (default 1000 resamples) or "ar" approximate
    randomisation (default 10000 trials); n_samples=0 keeps sacreBLEU's default. The random seed
    is sacreBLEU's (environment variable SACREBLEU_SEED, 12345 when unset), so runs repeat.

    -> per metric: baseline / system score, the bootstrap mean and 95% confidence interval
    (low, high) of each, p_value of the difference (two-sided; small = unlikely by chance),
    and sacreBLEU's signature.
    """
    if test not in ("bs", "ar"):
        raise ValueError(f"test must be 'bs' (paired bootstrap) or 'ar' (approximate randomisation), got {test!r}")
    _check_aligned(baseline_hyps, refs, "baseline hypotheses")
    _check_aligned(system_hyps, refs, "system hypotheses")
    named = {name: _metric(name) for name in metrics}
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


def attention_statistics(maps: Sequence[torch.Tensor]) -> dict[str, dict[str, dict[str, float]]]:
    """Summaries of cross-attention maps, each [L, H, T, S] over real tokens only (all maps share
    L and H). Per layer and head:

    entropy            mean over all target rows (of all maps) of -sum_s p log p, in nats:
                       0 = all weight on one source token, log S = uniform
    max_weight         mean over all target rows of the largest weight in the row
    diagonal_distance  mean over all target rows of |(argmax_s + 0.5)/S - (t + 0.5)/T|: how far
                       the most-attended source position is from the diagonal, in [0, 1)
    monotonicity       mean over maps of the Spearman rank correlation between the target
                       position t and its argmax source position (1 = the attention moves left to
                       right through the source, -1 = right to left); maps where it is undefined
                       (one target row, or the argmax never moves) are left out; NaN if all are

    -> {"layer_0": {"head_0": {statistic: value}, ..., "mean": {statistic: mean over heads}}, ...}
    """
    if not maps:
        raise ValueError("attention_statistics needs at least one attention map")
    layers, heads = maps[0].shape[:2]
    row_sums = {name: torch.zeros(layers, heads, dtype=torch.float64) for name in STATISTICS[:3]}
    rows = 0
    correlation_sum = torch.zeros(layers, heads, dtype=torch.float64)
    correlation_count = torch.zeros(layers, heads, dtype=torch.float64)
    for weights in maps:
        if tuple(weights.shape[:2]) != (layers, heads):
            raise ValueError(f"attention maps disagree on [L, H]: {tuple(weights.shape[:2])} vs {(layers, heads)}")
        p = weights.detach().to("cpu", torch.float64)  # [L, H, T, S]
        target_len, source_len = p.shape[-2:]
        row_sums["entropy"] += -(p * p.clamp_min(1e-300).log()).sum(-1).sum(-1)
        row_sums["max_weight"] += p.amax(-1).sum(-1)
        argmax = p.argmax(-1)  # [L, H, T]
        source_pos = (argmax.double() + 0.5) / source_len
        target_pos = (torch.arange(target_len, dtype=torch.float64) + 0.5) / target_len
        row_sums["diagonal_distance"] += (source_pos - target_pos).abs().sum(-1)
        rows += target_len
        correlation = _rank_correlation(argmax)  # [L, H]
        defined = ~correlation.isnan()
        correlation_sum += torch.where(defined, correlation, 0.0)
        correlation_count += defined.double()

    per_head = {name: total / rows for name, total in row_sums.items()}
    per_head["monotonicity"] = torch.where(correlation_count > 0, correlation_sum / correlation_count, torch.nan)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for layer in range(layers):
        by_head = {
            f"head_{head}": {name: float(per_head[name][layer, head]) for name in STATISTICS} for head in range(heads)
        }
        by_head["mean"] = {name: _nanmean([by_head[f"head_{h}"][name] for h in range(heads)]) for name in STATISTICS}
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
