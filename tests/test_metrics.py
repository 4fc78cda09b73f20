"""sacreBLEU wrappers against the sacrebleu command line, and attention statistics on hand-made maps."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt.errors import DataError
from attnmt.metrics import attention_statistics, corpus_scores, flatten_statistics, paired_significance

WORDS = "a man woman dog child street red blue ball runs sits plays near under the with two young old green".split()


def corpus(lines: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + " ." for _ in range(lines)]


def corrupt(sentences: list[str], rate: float, seed: int) -> list[str]:
    """Replace each word with a random one with probability `rate`."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) if rng.random() < rate else w for w in s.split()) for s in sentences]


def test_corpus_scores_match_the_sacrebleu_command_line(tmp_path: Path) -> None:
    refs = corpus(40, seed=0)
    hyps = corrupt(refs, 0.3, seed=1)
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
               "-m", "bleu", "chrf", "ter", "-w", "6", "--format", "json"]
    cli = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)

    ours = corpus_scores(hyps, refs)
    assert list(ours) == ["bleu", "chrf", "ter"]
    for name, expected in zip(ours, cli):
        assert ours[name]["score"] == pytest.approx(expected["score"], abs=1e-5), name
        assert ours[name]["signature"] == expected["signature"]
    assert 0 < ours["bleu"]["score"] < 100

    perfect = corpus_scores(refs, refs, metrics=("bleu", "ter"))
    assert perfect["bleu"]["score"] == pytest.approx(100.0)
    assert perfect["ter"]["score"] == pytest.approx(0.0)


def test_corpus_scores_reject_misaligned_files() -> None:
    with pytest.raises(DataError, match="3 hypotheses but 2 references"):
        corpus_scores(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="unknown metric"):
        corpus_scores(["a"], ["a"], metrics=("meteor",))


@pytest.mark.parametrize("test", ["bs", "ar"])
def test_paired_significance_separates_real_from_chance_differences(test: str) -> None:
    refs = corpus(60, seed=2)
    baseline = corrupt(refs, 0.5, seed=3)
    better = corrupt(refs, 0.1, seed=4)
    same_quality = corrupt(refs, 0.5, seed=5)  # other outputs, same expected quality

    clear = paired_significance(baseline, better, refs, metrics=("bleu", "chrf"), test=test, n_samples=300)
    chance = paired_significance(baseline, same_quality, refs, metrics=("bleu",), test=test, n_samples=300)

    direct = corpus_scores(better, refs, metrics=("bleu",))["bleu"]["score"]
    assert clear["bleu"]["system"] == pytest.approx(direct)
    assert clear["bleu"]["system"] > clear["bleu"]["baseline"]
    for name in ("bleu", "chrf"):
        assert clear[name]["p_value"] < 0.01
        for side in ("baseline", "system"):
            low, high = clear[name][f"{side}_ci"]
            assert low <= clear[name][f"{side}_mean"] <= high
            assert low < clear[name][side] < high  # the actual score lies in its own 95% interval
    assert clear["bleu"]["baseline_ci"][1] < clear["bleu"]["system_ci"][0]  # far apart systems
    assert chance["bleu"]["p_value"] > 0.05
    assert f"{test}:300" in clear["bleu"]["signature"]


def one_hot_rows(positions: list[int], source_len: int) -> torch.Tensor:
    """[T, S] map where row t puts all weight on source position positions[t]."""
    return torch.nn.functional.one_hot(torch.tensor(positions), source_len).float()


def test_statistics_of_identity_uniform_and_reversed_maps() -> None:
    identity = one_hot_rows(list(range(6)), 6)
    uniform = torch.full((5, 4), 0.25)
    reversed_ = one_hot_rows([5, 4, 3, 2, 1, 0], 6)
    maps = [identity[None, None], uniform[None, None], reversed_[None, None]]  # each [1, 1, T, S]
    stats = [attention_statistics([m])["layer_0"]["head_0"] for m in maps]

    assert stats[0] == pytest.approx({"entropy": 0.0, "max_weight": 1.0, "diagonal_distance": 0.0, "monotonicity": 1.0})
    assert stats[1]["entropy"] == pytest.approx(math.log(4))
    assert stats[1]["max_weight"] == pytest.approx(0.25)
    assert math.isnan(stats[1]["monotonicity"])  # argmax never moves: undefined
    assert stats[2]["monotonicity"] == pytest.approx(-1.0)
    # anti-diagonal of 6: distances |5-2t|/6 for t=0..5 -> (5+3+1+1+3+5)/36
    assert stats[2]["diagonal_distance"] == pytest.approx(18 / 36)


def test_statistics_pool_rows_over_maps_and_average_heads() -> None:
    half = torch.tensor([[0.5, 0.5], [0.0, 1.0]])  # row entropies log 2 and 0
    identity = torch.eye(2)
    uniform = torch.full((3, 4), 0.25)
    layer_heads = torch.stack([torch.stack([half, identity]), torch.stack([identity, identity])])  # [L=2, H=2, 2, 2]
    wide = torch.stack([torch.stack([uniform, uniform])] * 2)  # [2, 2, 3, 4]
    stats = attention_statistics([layer_heads, wide])

    # layer 0 head 0: rows log2, 0 (first map) + 3 x log 4 (second map), pooled over 5 rows
    assert stats["layer_0"]["head_0"]["entropy"] == pytest.approx((math.log(2) + 3 * math.log(4)) / 5)
    assert stats["layer_0"]["head_1"]["entropy"] == pytest.approx(3 * math.log(4) / 5)
    assert stats["layer_0"]["mean"]["entropy"] == pytest.approx((math.log(2) + 6 * math.log(4)) / 10)
    assert stats["layer_0"]["head_0"]["max_weight"] == pytest.approx((0.5 + 1 + 3 * 0.25) / 5)
    # monotonicity: only the first map is defined (uniform argmax never moves); half's argmax is 0, 1
    assert stats["layer_1"]["mean"]["monotonicity"] == pytest.approx(1.0)

    flat = flatten_statistics(stats, prefix="attention_stats/luong")
    assert flat["attention_stats/luong/layer_1/head_0/max_weight"] == stats["layer_1"]["head_0"]["max_weight"]
    assert set(flatten_statistics(stats)) == {"attention_stats/" + tag.split("/", 2)[2] for tag in flat}
    assert len(flat) == 2 * 3 * 4  # layers x (2 heads + mean) x statistics


def test_statistics_reject_mismatched_maps() -> None:
    with pytest.raises(ValueError, match="disagree"):
        attention_statistics([torch.full((1, 2, 3, 3), 1 / 3), torch.full((1, 1, 3, 3), 1 / 3)])


def test_a_declared_statistic_is_computed_per_head_and_pooled(monkeypatch) -> None:
    """A new attention statistic is one entry in metrics.ATTENTION_STATISTICS (its name, display name,
    direction and a per-row or per-map function): attention_statistics computes it beside the others."""
    from attnmt import metrics

    first = metrics.AttentionStatistic("first_weight", "first weight", None, 3, per_row=lambda p, argmax: p[..., 0].sum(-1))
    monkeypatch.setattr(metrics, "ATTENTION_STATISTICS", (*metrics.ATTENTION_STATISTICS, first))
    short = torch.tensor([[[[1.0, 0.0], [0.5, 0.5]]]])  # [L=1, H=1, T=2, S=2]: first weights 1 and 0.5
    long = torch.tensor([[[[0.0, 1.0], [0.25, 0.75], [1.0, 0.0]]]])  # 0, 0.25, 1
    stats = attention_statistics([short, long])["layer_0"]
    assert stats["head_0"]["first_weight"] == pytest.approx(2.75 / 5)  # mean over all five target rows
    assert stats["mean"]["first_weight"] == pytest.approx(2.75 / 5)
    assert set(stats["head_0"]) == {s.name for s in metrics.ATTENTION_STATISTICS}


def test_declarations_are_consistent() -> None:
    from attnmt.metrics import ATTENTION_STATISTICS, PRIMARY_METRIC, TEXT_METRICS, text_metric

    for declared in (TEXT_METRICS, ATTENTION_STATISTICS):
        names = [m.name for m in declared]
        assert len(set(names)) == len(names) and all(m.display for m in declared)
    assert all(m.scorer is not None for m in TEXT_METRICS)
    assert all((s.per_row is None) != (s.per_map is None) for s in ATTENTION_STATISTICS)
    assert text_metric(PRIMARY_METRIC).higher_is_better and text_metric(PRIMARY_METRIC).headline
    assert text_metric("ter").best([40.0, 30.0]) == 30.0 and text_metric("bleu").best([20.0, 30.0]) == 30.0
