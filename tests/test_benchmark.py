"""The benchmark (attnmt.benchmark, attnmt-benchmark = scripts/benchmark.py) on tiny models and the tiny corpus, on the CPU.

Speeds here are meaningless; what is checked is that every requested measurement is there, finite
and consistent, and that the tokens counted are exactly the real target tokens of the batches used.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from attnmt.benchmark import Settings, format_table, read_references, run
from attnmt.cli.benchmark import main  # attnmt-benchmark / scripts/benchmark.py
from attnmt.config import compose

from test_train import tiny_overrides

FAMILIES = ("transformer", "bahdanau", "luong")
WARMUP, STEPS, DECODED = 1, 2, 6


def tiny_settings(parallel_dir: Path, cache_dir: Path, output_dir: Path, **changes) -> Settings:
    """Settings whose every family is the tiny model on the tiny corpus (batches of 512 tokens)."""
    per_family = {f: tuple(tiny_overrides(parallel_dir, cache_dir, output_dir, f)) for f in FAMILIES}
    values = dict(families=FAMILIES, devices=("cpu",), steps=STEPS, warmup=WARMUP, max_tokens=512,
                  decode_sentences=DECODED, family_overrides=per_family)
    values.update(changes)
    return Settings(**values)


@pytest.fixture(scope="module")
def bench_dirs(tiny_parallel_dir, tmp_path_factory) -> tuple[Path, Path, Path]:
    return tiny_parallel_dir, tmp_path_factory.mktemp("bench_cache"), tmp_path_factory.mktemp("bench_out")


REFERENCE_FILE = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_reference.json"


@pytest.fixture(scope="module")
def report(bench_dirs) -> dict:
    return run(tiny_settings(*bench_dirs, references=read_references(REFERENCE_FILE)))


def _runs(report: dict, kind: str) -> dict[tuple[str, str], dict]:
    return {(r["family"], r["mode"]): r for r in report["runs"] if r["kind"] == kind}


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_every_family_and_mode_is_measured(report):
    train = _runs(report, "train")
    assert set(train) == {(f, m) for f in FAMILIES for m in ("model", "lightning")}
    for (family, mode), record in train.items():
        for key in ("tokens_per_s", "ms_per_step", "peak_memory_mb", "seconds"):
            assert _positive(record[key]), (family, mode, key, record[key])
        assert record["device"] == "cpu" and record["steps"] == STEPS and record["max_tokens"] == 512
        # the derived figures agree with the raw ones
        assert record["tokens_per_s"] == pytest.approx(record["tokens"] / record["seconds"])
        assert record["ms_per_step"] == pytest.approx(1000 * record["seconds"] / STEPS)
        reference = read_references(REFERENCE_FILE)[f"{'transformer' if family == 'transformer' else 'rnn'}/cpu"]
        assert record["ratio_to_reference"] == pytest.approx(record["tokens_per_s"] / reference["tokens_per_s"])
        assert record["target_ratio"] == reference["target_ratio"]
    decode = _runs(report, "decode")
    assert set(decode) == {(f, s) for f in FAMILIES for s in ("greedy", "beam5")}
    for record in decode.values():
        assert record["sentences"] == DECODED
        assert _positive(record["sentences_per_s"]) and _positive(record["output_tokens_per_s"])
        assert 1 <= record["mean_output_len"]


def test_tokens_are_the_real_target_tokens_of_the_timed_batches(report, bench_dirs):
    """Counted independently: the sampler's epoch-0 batches after the warm-up, sentence lengths + EOS."""
    train = _runs(report, "train")
    for family in FAMILIES:
        cfg = compose(tiny_overrides(*bench_dirs, family))
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        split = datamodule.corpus.train_split
        lengths = datamodule.dataset(split).tgt_lengths
        timed = datamodule.sampler(split, shuffle=True).batches()[WARMUP : WARMUP + STEPS]
        assert len(timed) == STEPS
        expected = sum(int(lengths[batch].sum()) + len(batch) for batch in timed)  # + one EOS per sentence
        assert train[(family, "model")]["tokens"] == expected
        assert train[(family, "lightning")]["tokens"] == expected


def test_parameter_counts_match_the_models(report):
    train = _runs(report, "train")
    for family in FAMILIES:
        assert train[(family, "model")]["parameters"] == train[(family, "lightning")]["parameters"] > 0
    assert train[("bahdanau", "model")]["parameters"] != train[("luong", "model")]["parameters"]


def test_table_lists_every_measurement(report):
    table = format_table(report)
    lines = table.splitlines()
    for family in FAMILIES:
        for mode in ("model", "lightning", "greedy", "beam5"):
            assert any(line.split()[:3] == [family, "cpu", mode] for line in lines), (family, mode)


@pytest.mark.slow
def test_repeats_report_the_median_run_of_interleaved_measurements(bench_dirs):
    report = run(tiny_settings(*bench_dirs, families=("luong",), repeats=3, decode_sentences=0))
    train = _runs(report, "train")
    assert set(train) == {("luong", "model"), ("luong", "lightning")}
    for record in train.values():
        runs = record["tokens_per_s_runs"]
        assert record["repeats"] == len(runs) == 3
        assert record["tokens_per_s"] == sorted(runs)[1]  # the median run, with its own consistent figures
        assert record["tokens_per_s"] == pytest.approx(record["tokens"] / record["seconds"])
    row = next(line for line in format_table(report).splitlines() if line.split()[:3] == ["luong", "cpu", "model"])
    runs = train[("luong", "model")]["tokens_per_s_runs"]
    assert f"({min(runs):,.0f}-{max(runs):,.0f})" in row


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
def test_cuda_is_skipped_cleanly_without_a_gpu(bench_dirs):
    report = run(tiny_settings(*bench_dirs, devices=("cuda",)))
    assert [r["kind"] for r in report["runs"]] == ["skipped"] * len(FAMILIES)
    assert "skipped: transformer on cuda (no CUDA device)" in format_table(report)


def test_script_prints_the_table_and_writes_json(bench_dirs, tmp_path, capsys):
    output = tmp_path / "bench.json"
    args = ["--device", "cpu", "--families", "bahdanau", "--modes", "model", "--steps", "1", "--warmup", "1",
            "--decode-sentences", "0", "--threads", "1", "--output", str(output), "--",
            *tiny_overrides(*bench_dirs, "bahdanau")]
    assert main(args) == 0
    saved = json.loads(output.read_text())
    assert [(r["family"], r["kind"], r["mode"]) for r in saved["runs"]] == [("bahdanau", "train", "model")]
    assert saved["settings"]["threads"] == 1 and saved["machine"]["cpu_count"] >= 1
    assert "bahdanau" in capsys.readouterr().out


def test_ratios_only_with_reference_figures() -> None:
    from attnmt.benchmark import add_reference_ratios

    record = {"kind": "train", "reference": "rnn", "device": "cpu", "tokens_per_s": 2200.0}
    assert "ratio_to_reference" not in add_reference_ratios(dict(record), {})
    rated = add_reference_ratios(dict(record), {"rnn/cpu": {"tokens_per_s": 1100.0}})
    assert rated["ratio_to_reference"] == 2.0 and "target_ratio" not in rated
    assert "2.00x" in format_table({"runs": [{**rated, "family": "luong", "mode": "model", "ms_per_step": 1.0,
                                             "peak_memory_mb": 1.0, "parameters": 1e6}]})


def test_a_bad_reference_file_is_one_error_line(tmp_path, capsys) -> None:
    bad = tmp_path / "ref.json"
    bad.write_text('{"rnn/cpu": 1100}')
    assert main(["--reference", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --reference") and len(err.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--families", "nope"], "unknown model config 'nope'"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--device", "cpu", "--", "model.no_such_key=3"], "model.no_such_key"),
])
def test_script_mistakes_exit_2_with_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_family_on_cuda_with_bf16(bench_dirs):
    report = run(tiny_settings(*bench_dirs, families=("transformer",), devices=("cuda",), precision="bf16-mixed",
                               decode_sentences=2))
    train = _runs(report, "train")
    assert set(train) == {("transformer", "model"), ("transformer", "lightning")}
    for record in train.values():
        assert record["device"] == "cuda"
        assert _positive(record["tokens_per_s"]) and _positive(record["peak_memory_mb"])
