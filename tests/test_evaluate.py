"""evaluate.py on real tiny runs: sacreBLEU CLI agreement, metrics.json, TensorBoard events, PNGs, errors.

`tiny_runs` and `evaluated_run` train and evaluate once per session and are shared with
test_translate.py and test_tensorboard_server.py (they import them from here).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from matplotlib import image as mpimg
from omegaconf import OmegaConf

from attnmt.config import compose
from attnmt.cli.evaluate import main  # attnmt-evaluate / scripts/evaluate.py, called in this process
from attnmt.errors import CheckpointError, ConfigError
from attnmt.evaluate import compare_systems, evaluate
from attnmt.metrics import attention_statistics
from attnmt.train import train
from attnmt.inference import resolve_checkpoint
from attnmt.viz import attention_figure

from conftest import TINY_SIZES
from test_train import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
TRANSFORMER_HEADS, TRANSFORMER_LAYERS = 2, 2
# Outputs of a 10-step model rarely end by themselves: short length limits keep decoding and figures small.
SHORT = {"max_len_a": 0.5, "max_len_b": 4}
SHORT_ARGS = ["--max-len-a", "0.5", "--max-len-b", "4"]
_CACHE: dict[str, object] = {}  # session-wide: the runs are trained (and evaluated) once


def tiny_runs(tmp_path_factory: pytest.TempPathFactory, parallel_dir: Path) -> dict[str, Path]:
    """Run folders of a tiny transformer (2 decoder layers, 2 heads) and a tiny bahdanau model.

    Trained by attnmt.train.train with TensorBoard on and a test split ("test", 20 pairs);
    `.hydra/config.yaml` is written as Hydra writes it (unresolved, output_dir a ${hydra:...} key).
    """
    if "runs" not in _CACHE:
        root = tmp_path_factory.mktemp("eval_runs")
        runs = {}
        for model, extra in (("transformer", [f"model.decoder_layers={TRANSFORMER_LAYERS}"]), ("bahdanau", [])):
            run = root / model
            overrides = tiny_overrides(parallel_dir, root / "cache", run, model) + extra + [
                f"++data.corpus.test={{test: {parallel_dir}/test}}", f"+variant={model}", "debug=limit",
                "optim.scheduler.warmup_steps=5", "optim.optimizer.lr=5e-3",  # 10 steps: output beyond one repeated piece
                *(["model.init=pytorch"] if model == "transformer" else []),  # xavier: a 10-step model still emits only </s>
                "decode.validation.max_len_a=0.5", 'task.probes=["The cat sat on the mat."]',
            ]
            cfg = compose(overrides)
            train(cfg)
            cfg.paths.output_dir = "${hydra:runtime.output_dir}"
            (run / ".hydra").mkdir()
            OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
            runs[model] = run
        _CACHE["runs"] = runs
    return _CACHE["runs"]  # type: ignore[return-value]


def evaluated_run(tmp_path_factory: pytest.TempPathFactory, parallel_dir: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """The transformer run after `python scripts/evaluate.py RUN --beam-size 5 1 --num-maps 2 [SHORT_ARGS]`,
    run as a user would: a subprocess started in an unrelated folder."""
    if "evaluated" not in _CACHE:
        run = tiny_runs(tmp_path_factory, parallel_dir)["transformer"]
        done = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "evaluate.py"), str(run), "--beam-size", "5", "1", "--num-maps", "2", *SHORT_ARGS],
            cwd=tmp_path_factory.mktemp("elsewhere"), capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        _CACHE["evaluated"] = (run, done)
    return _CACHE["evaluated"]  # type: ignore[return-value]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_parallel_dir) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory, tiny_parallel_dir)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_parallel_dir) -> tuple[Path, subprocess.CompletedProcess]:
    return evaluated_run(tmp_path_factory, tiny_parallel_dir)


def read_metrics(run: Path) -> dict:
    return json.loads((run / "eval" / "metrics.json").read_text())


def sacrebleu_cli(ref: Path, hyp: Path) -> list[float]:
    """BLEU, chrF, TER from sacreBLEU's own command line, 4 decimals."""
    done = subprocess.run([sys.executable, "-m", "sacrebleu", str(ref), "-i", str(hyp), "-m", "bleu", "chrf", "ter",
                           "-b", "-w", "4"], capture_output=True, text=True, timeout=120, check=True)
    return [float(value) for value in json.loads(done.stdout)]


@pytest.mark.slow
def test_scores_equal_the_sacrebleu_command_line(evaluated, tiny_parallel_dir) -> None:
    run, done = evaluated
    metrics = read_metrics(run)
    assert {"test/beam5", "test/greedy"} <= set(metrics)  # both decoding settings recorded
    for key in ("test/beam5", "test/greedy"):
        entry = metrics[key]
        hyp_file = Path(entry["hypothesis_file"])
        assert hyp_file == run / "eval" / f"test.{key.split('/')[1]}.hyp"
        assert len(hyp_file.read_text().split("\n")) == TINY_SIZES["test"] + 1  # one line per source line
        ours = [round(entry["scores"][m]["score"], 4) for m in ("bleu", "chrf", "ter")]
        assert ours == sacrebleu_cli(tiny_parallel_dir / "test.fr", hyp_file)
        assert ours[1] > 0  # something was translated: chrF of empty outputs is 0
        assert f"{entry['scores']['bleu']['score']:.2f}" in done.stdout  # the printed table
    assert "greedy" in done.stdout and "beam5" in done.stdout


def test_metrics_json_has_scores_signatures_settings_and_statistics(evaluated) -> None:
    from sacrebleu.metrics import BLEU, CHRF, TER

    run, _ = evaluated
    metrics = read_metrics(run)
    beam, greedy = metrics["test/beam5"], metrics["test/greedy"]
    assert beam["decoding"]["beam_size"] == 5 and beam["decoding"]["alpha"] == 0.6
    assert greedy["decoding"]["beam_size"] == 1
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
        metric.corpus_score(["a"], [["a"]])  # a signature records the number of references it saw
        assert beam["scores"][name]["signature"] == str(metric.get_signature())
    assert beam["sentences"] == TINY_SIZES["test"] and beam["decode_seconds"] > 0
    assert beam["global_step"] == torch.load(resolve_checkpoint(run), weights_only=True)["global_step"] > 0
    stats = beam["attention_statistics"]
    assert sorted(stats) == [f"layer_{i}" for i in range(TRANSFORMER_LAYERS)]
    assert sorted(stats["layer_0"]) == ["head_0", "head_1", "mean"]
    for values in stats["layer_1"].values():
        assert 0 <= values["entropy"] <= math.log(64)  # sources are shorter than 64 tokens
        assert 0 < values["max_weight"] <= 1 and 0 <= values["diagonal_distance"] < 1
        assert values["monotonicity"] is None or -1 <= values["monotonicity"] <= 1


def test_event_files_hold_attention_images_and_statistic_scalars(evaluated) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = evaluated
    entry = read_metrics(run)["test/beam5"]
    assert Path(entry["tensorboard_dir"]) == run / "tensorboard" / "eval" / "test" / "beam5"
    accumulator = EventAccumulator(entry["tensorboard_dir"], size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    images, scalars = set(accumulator.Tags()["images"]), set(accumulator.Tags()["scalars"])
    # the tags training uses: maps under attention_maps/, statistics under attention_stats/ (issue 15)
    expected = {f"attention_maps/{prefix}/layer_{layer}" for prefix in ("eval_test_0", "eval_test_1", "probe_0")
                for layer in range(TRANSFORMER_LAYERS)}
    expected |= {f"attention_maps/{prefix}/heads_layer_1" for prefix in ("eval_test_0", "probe_0")}
    assert expected <= images, sorted(images)
    assert not any(tag.startswith("attention_maps/eval_test_2") for tag in images)  # --num-maps 2
    assert [event.step for event in accumulator.Images("attention_maps/probe_0/layer_1")] == [entry["global_step"]]
    entropy = accumulator.Scalars("attention_stats/transformer/layer_1/mean/entropy")
    assert entropy[0].value == pytest.approx(entry["attention_statistics"]["layer_1"]["mean"]["entropy"], rel=1e-6)
    assert "attention_stats/transformer/layer_0/head_1/max_weight" in scalars
    # one top-level tag per kind, so TensorBoard's sections never mix maps and statistics
    assert {tag.split("/")[0] for tag in images} == {"attention_maps"}
    assert {tag.split("/")[0] for tag in scalars} == {"eval", "attention_stats"}
    assert entry["attention_maps"][0]["tags"][0] == "attention_maps/eval_test_0/layer_0"
    assert accumulator.Scalars("eval/bleu")[0].value == pytest.approx(entry["scores"]["bleu"]["score"], abs=1e-4)


def test_pngs_decode_with_the_figure_sizes(evaluated) -> None:
    run, _ = evaluated
    records = read_metrics(run)["test/greedy"]["attention_maps"]
    assert [r["name"] for r in records] == ["eval_test_0", "eval_test_1", "probe_0"]
    assert records[2]["source"] == "The cat sat on the mat."  # the probe set of the run's config
    for record in records:
        src, tgt = record["src_tokens"], record["tgt_tokens"]
        assert src[-1] == "</s>" and len(record["pngs"]) == TRANSFORMER_LAYERS + 1
        for png in record["pngs"]:
            assert Path(png).parent == run / "eval" / "attention" / "test" / "greedy"
            heads = TRANSFORMER_HEADS if "heads_layer" in png else 1
            figure = attention_figure(torch.zeros(heads, len(tgt), len(src)).squeeze(0), src, tgt)
            width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
            png_height, png_width = mpimg.imread(png).shape[:2]
            # the same cell size; the saved figure's title (variant, step, translation) adds a few lines
            assert png_width == width and height <= png_height <= height + 4 * 0.22 * figure.dpi


def test_custom_pair_statistics_and_rows(runs, tiny_parallel_dir, tmp_path, monkeypatch) -> None:
    """In-process on the RNN run: a --src/--ref pair, merged subwords, statistics from the decoded maps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import attnmt.viz as viz

    titles: list[str] = []  # the real figures are drawn; their titles are recorded on the way
    original = viz.attention_figure
    monkeypatch.setattr(viz, "attention_figure", lambda *a, **k: titles.append(a[3]) or original(*a, **k))
    summary = evaluate(runs["bahdanau"], src=tiny_parallel_dir / "val.en", ref=tiny_parallel_dir / "val.fr",
                       beam_sizes=(3,), output_dir=tmp_path, num_maps=1, merge_subwords=True, **SHORT)
    entry = summary["results"]["file_val/beam3"]
    assert Path(entry["hypothesis_file"]) == tmp_path / "file_val.beam3.hyp"
    assert entry["sentences"] == TINY_SIZES["val"]
    translations = summary["translations"]["file_val/beam3"]
    maps = [t.hypothesis.attention for t in translations]
    for weights, t in zip(maps, translations):
        assert weights.shape == (1, 1, len(t.tgt_tokens), len(t.src_tokens))  # one RNN map: L = H = 1
        torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
    assert entry["attention_statistics"] == json.loads(json.dumps(attention_statistics(maps)).replace("NaN", "null"))
    assert json.loads((tmp_path / "metrics.json").read_text())["file_val/beam3"]["scores"] == entry["scores"]
    accumulator = EventAccumulator(entry["tensorboard_dir"], size_guidance={"images": 0})
    accumulator.Reload()
    # one map per RNN sentence, no head grid
    assert set(accumulator.Tags()["images"]) == {"attention_maps/eval_file_val_0/layer_0", "attention_maps/probe_0/layer_0"}
    assert "attention_stats/bahdanau/layer_0/head_0/entropy" in accumulator.Tags()["scalars"]
    probe = entry["attention_maps"][1]
    assert probe["name"] == "probe_0" and "cat" in probe["src_tokens"]  # merged into words: "▁c" "at" -> "cat"
    # like training's probe maps: variant, checkpoint step and decoding, then the translation
    head = f"bahdanau · step {entry['global_step']} · file_val beam3"
    assert titles == [f"{head} · eval_file_val_0 · layer 0 (single map)\n→ {translations[0].text}",
                      f"{head} · probe_0 · layer 0 (single map)\n→ {probe['translation']}"]


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_outputs_follow_the_umask(runs, tiny_parallel_dir, tmp_path, umask, folder_mode, file_mode) -> None:
    """metrics.json is written through mkstemp (0600 whatever the umask): it must end up like every other
    output, readable by the group when the umask says so."""
    previous = os.umask(umask)
    try:
        evaluate(runs["bahdanau"], src=tiny_parallel_dir / "val.en", ref=tiny_parallel_dir / "val.fr",
                 beam_sizes=(1,), output_dir=tmp_path / "out", num_maps=1, **SHORT)
    finally:
        os.umask(previous)
    paths = [tmp_path / "out", *(tmp_path / "out").rglob("*")]
    assert tmp_path / "out" / "metrics.json" in paths and any(p.suffix == ".png" for p in paths)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == (folder_mode if path.is_dir() else file_mode), path


@pytest.mark.slow
def test_metrics_merge_compare_and_rerun_replaces_events(evaluated, tmp_path, capsys) -> None:
    run = tmp_path / "run"  # a copy: the shared run keeps the CLI's outputs for the other tests
    shutil.copytree(evaluated[0], run)
    beam_hyps = run / "eval" / "test.beam5.hyp"
    output = tmp_path / "out"
    evaluate(run, splits=["test"], beam_sizes=(5,), output_dir=output, num_maps=0, **SHORT)
    summary = evaluate(run, splits=["test"], beam_sizes=(1,), output_dir=output, num_maps=0, compare_with=beam_hyps, **SHORT)
    assert set(json.loads((output / "metrics.json").read_text())) == {"test/beam5", "test/greedy"}
    comparison = summary["results"]["test/greedy"]["comparison"]
    assert set(comparison["metrics"]) == {"bleu", "chrf"}
    for result in comparison["metrics"].values():
        assert 0 <= result["p_value"] <= 1
        assert result["system_ci"][0] <= result["system_mean"] <= result["system_ci"][1]
    # the same run again replaces its TensorBoard events instead of adding a second copy
    assert len(list((run / "tensorboard" / "eval" / "test" / "beam5").glob("events.out.tfevents.*"))) == 1
    # the references as a "system" beat the tiny model's output: 100 BLEU, significant
    hyps = beam_hyps.read_text().split("\n")[:-1]
    refs = Path(summary["results"]["test/greedy"]["reference_file"]).read_text().split("\n")[:-1]
    perfect = compare_systems(hyps, refs, refs)["bleu"]
    assert perfect["system"] == pytest.approx(100) and perfect["baseline"] < 100 and perfect["p_value"] < 0.01
    assert main([str(run), "--beam-size", "1", "--num-maps", "0", "--output-dir", str(output), *SHORT_ARGS,
                 "--compare-with", str(beam_hyps)]) == 0
    assert "p = " in capsys.readouterr().out


@pytest.mark.slow
def test_unknown_split_exits_2_with_one_line(runs, tmp_path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), str(runs["bahdanau"]), "--split", "nope"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: unknown split 'nope'; the run's data config has: train, val, test "
        "(or evaluate your own files with --src FILE --ref FILE)"
    )
    assert "Traceback" not in done.stderr


def test_bad_inputs_exit_2_naming_the_problem(runs, tmp_path, capsys) -> None:
    corrupt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"PK\x03\x04 not really a zip archive")
    (tmp_path / "one.en").write_text("A dog runs.\n")
    (tmp_path / "one.fr").write_text("Un chien court.\n")
    pair = ["--src", str(tmp_path / "one.en"), "--ref", str(tmp_path / "one.fr")]
    assert main([str(corrupt.parents[1]), *pair]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: checkpoint") and str(corrupt) in error and "\n" not in error

    assert main([str(tmp_path / "missing_run")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(runs["bahdanau"]), "--src", str(tmp_path / "absent.en"), "--ref", str(tmp_path / "absent.fr")]) == 2
    assert "absent.en" in capsys.readouterr().err


def _report_summary(scores: dict[str, float]) -> dict:
    entry = {"split": "test", "decoding": {"beam_size": 1, "alpha": None}, "sentences": 20,
             "scores": {name: {"score": value, "signature": f"{name}-signature"} for name, value in scores.items()},
             "decode_seconds": 3.5, "sentences_per_second": 5.7,
             "attention_statistics": {"layer_0": {"mean": {"entropy": 1.25, "max_weight": 0.5,
                                                           "diagonal_distance": 0.125, "monotonicity": 0.75}}}}
    return {"checkpoint": "run/checkpoints/best.ckpt", "global_step": 10, "variant": "transformer",
            "results": {"test/greedy": entry}, "eval_dir": "run/eval", "tensorboard_root": "run/tensorboard"}


def _cells(line: str) -> list[re.Match]:
    return list(re.finditer(r"\S+", line))


def test_a_declared_metric_gets_its_own_report_column(monkeypatch) -> None:
    """A new text metric is one entry in metrics.TEXT_METRICS: the report's header gains its column,
    every value sits under its own header (a fourth metric once showed its score as "seconds"), and
    its signature line is printed."""
    from attnmt import metrics
    from attnmt.evaluate import format_report

    monkeypatch.setattr(metrics, "TEXT_METRICS", (*metrics.TEXT_METRICS, metrics.TextMetric("meteor", "METEOR", True, digits=1)))
    report = format_report(_report_summary({"bleu": 31.25, "chrf": 55.5, "ter": 61.75, "meteor": 42.0})).splitlines()
    header, row = _cells(report[1]), _cells(report[2])
    assert [cell.group() for cell in header] == ["set", "decoding", "sents", "BLEU", "chrF", "TER", "METEOR", "seconds", "sent/s"]
    assert len(row) == len(header)
    values = {h.group(): r.group() for h, r in zip(header, row)}
    assert values == {"set": "test", "decoding": "greedy", "sents": "20", "BLEU": "31.25", "chrF": "55.50",
                      "TER": "61.75", "METEOR": "42.0", "seconds": "3.5", "sent/s": "5.7"}
    for i, (h, r) in enumerate(zip(header, row)):  # names left-aligned, numbers right-aligned under their header
        assert (h.start() == r.start()) if i < 2 else (h.end() == r.end()), (h.group(), r.group())
    assert any(line.startswith("METEOR") and "meteor-signature" in line for line in report)
    assert "entropy 1.250, max weight 0.500, diagonal distance 0.125, monotonicity 0.750" in report[-2]


def test_checkpoint_resolution(runs, tmp_path) -> None:
    run = runs["transformer"]
    assert resolve_checkpoint(run).name.startswith("best-")
    assert resolve_checkpoint(run / "checkpoints" / "last.ckpt").name == "last.ckpt"
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        resolve_checkpoint(tmp_path)
    bare = tmp_path / "bare.ckpt"
    bare.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(ConfigError, match="not inside a run's checkpoints/ folder"):
        evaluate(bare)  # no run config: only --src/--ref can say what to decode


@pytest.mark.slow
def test_alignment_scores_every_layer_and_head_and_gold_files(runs, tmp_path, capsys) -> None:
    """--alignment on the tiny transformer (2 layers x 2 heads): cached reference alignments, AER per
    layer/head teacher-forced and on the output, metrics.json, TensorBoard, outlined maps; then a
    gold file made of one head's own links must give that head an AER of exactly 0."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from attnmt.alignment.attention import attention_links, teacher_forced_attention, word_attention
    from attnmt.inference import load_model, pick_device

    run = tmp_path / "run"
    shutil.copytree(runs["transformer"], run)
    output = tmp_path / "out"
    args = [str(run), "--beam-size", "5", "--num-maps", "1", "--output-dir", str(output), *SHORT_ARGS, "--alignment",
            "--alignment-threshold", "0.3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "alignment test/beam5 teacher-forced AER: best layer_" in printed and "diagonal baseline" in printed
    entry = json.loads((output / "metrics.json").read_text())["test/beam5"]["alignment"]
    reference = entry["reference"]
    assert reference["backend"] == "ibm2" and reference["heuristic"] == "grow-diag-final-and" and not reference["cache_hit"]
    folder = Path(reference["folder"])
    config = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert folder.parent == Path(config.data.cache_dir)  # derived data lives in the run's data cache, keyed by inputs
    assert len((folder / "links.txt").read_text().splitlines()) == TINY_SIZES["test"]
    assert reference["train_pairs"] == TINY_SIZES["train"]
    hyps = (output / "test.beam5.hyp").read_text().splitlines()
    kinds = ("teacher_forced", "output") if any(hyps) else ("teacher_forced",)  # a 10-step model may output nothing
    assert entry["output"]["sentences"] == sum(1 for h in hyps if h)
    for kind in kinds:
        result = entry[kind]
        assert sorted(result["argmax"]) == [f"layer_{i}" for i in range(TRANSFORMER_LAYERS)]
        for by_head in result["argmax"].values():
            assert sorted(by_head) == ["head_0", "head_1", "mean"]
            for values in by_head.values():
                assert 0 <= values["aer"] <= 1 and 0 <= values["recall"] <= 1
        assert result["best"]["aer"] == min(v["aer"] for h in result["argmax"].values() for v in h.values())
        assert 0 <= result["diagonal_baseline"]["aer"] <= 1
        assert result["threshold"]["value"] == 0.3 and "layer_1" in result["threshold"]["scores"]
    assert entry["teacher_forced"]["sentences"] == TINY_SIZES["test"]

    # teacher forcing in padded batches gives each sentence the attention it gets alone
    model, tokenizer, _ = load_model(resolve_checkpoint(run), pick_device("cpu"))
    corpus_cfg = config.data.corpus
    sources = Path(f"{corpus_cfg.test.test}.en").read_text().splitlines()
    targets = Path(f"{corpus_cfg.test.test}.fr").read_text().splitlines()
    batched = teacher_forced_attention(model, tokenizer, sources, targets, torch.device("cpu"))
    alone = teacher_forced_attention(model, tokenizer, sources[3:4], targets[3:4], torch.device("cpu"))[0]
    torch.testing.assert_close(batched[3][0], alone[0], atol=1e-5, rtol=0)
    assert batched[3][0].shape[:2] == (TRANSFORMER_LAYERS, TRANSFORMER_HEADS)

    accumulator = EventAccumulator(str(run / "tensorboard" / "eval" / "test" / "beam5"), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    tag = "alignment/transformer/teacher_forced/layer_1/head_0/aer"
    assert accumulator.Scalars(tag)[0].value == pytest.approx(entry["teacher_forced"]["argmax"]["layer_1"]["head_0"]["aer"])
    assert "alignment/transformer_threshold/teacher_forced/layer_0/mean/recall" in accumulator.Tags()["scalars"]
    assert {"alignment/test_0/layer_0", "alignment/test_0/layer_1"} <= set(accumulator.Tags()["images"])
    assert any(p.endswith("alignment_test_0_layer_1.png") and Path(p).is_file() for p in entry["maps"])

    # the same evaluation again reuses the cached reference alignments
    assert main(args) == 0
    capsys.readouterr()
    assert json.loads((output / "metrics.json").read_text())["test/beam5"]["alignment"]["reference"]["cache_hit"]

    # gold files (NAACL 2003 format) holding layer_1/head_0's own argmax links: that head scores AER 0
    from attnmt.alignment.words import tokenize

    src_words = [tokenize(s, "en") for s in sources[:5]]
    tgt_words = [tokenize(t, "fr") for t in targets[:5]]
    maps = teacher_forced_attention(model, tokenizer, [" ".join(w) for w in src_words], [" ".join(w) for w in tgt_words],
                                    torch.device("cpu"))
    lines = []
    for k, (weights, src_pieces, tgt_pieces) in enumerate(maps):
        links = attention_links(word_attention(weights, src_pieces, tgt_pieces, src_words[k], tgt_words[k])[1, 0])
        lines += [f"{k + 1:04d} {s + 1} {t + 1} S" for s, t in sorted(links)]
    for name, words in (("test.e", src_words), ("test.f", tgt_words)):
        (tmp_path / name).write_text("".join(f"<s snum={k + 1:04d}> {' '.join(w)} </s>\n" for k, w in enumerate(words)))
    (tmp_path / "test.wa").write_text("\n".join(lines) + "\n")
    summary = evaluate(run, splits=["test"], beam_sizes=(1,), output_dir=output, num_maps=0, **SHORT,
                       gold_alignment=(tmp_path / "test.e", tmp_path / "test.f", tmp_path / "test.wa"), gold_name="hansards")
    gold = summary["results"]["hansards/alignment"]
    assert gold["sentences"] == 5 and gold["sure_links"] == len(lines)
    scores = gold["alignment"]["teacher_forced"]["argmax"]
    assert scores["layer_1"]["head_0"]["aer"] == 0.0
    assert gold["alignment"]["teacher_forced"]["best"]["aer"] == 0.0
    assert "hansards/alignment" in json.loads((output / "metrics.json").read_text())


@pytest.mark.parametrize("model", ["bahdanau", "transformer"])
@pytest.mark.slow
def test_output_alignment_of_a_system_that_outputs_the_references(runs, tmp_path, monkeypatch, model) -> None:
    """The output path with a 'decoder' that returns the reference translations (with the attention
    the model gives them under teacher forcing): aligning (source, output) with the stored aligner
    tables must reproduce the reference links, so output AER = teacher-forced AER for every map.
    The RNN run has one map (layer_0 / head_0 = mean)."""
    import attnmt.evaluate as evaluate_module
    from attnmt.alignment.attention import teacher_forced_attention
    from attnmt.search import Hypothesis
    from attnmt.inference import Translation

    config = OmegaConf.load(runs[model] / ".hydra" / "config.yaml")
    sources = Path(f"{config.data.corpus.test.test}.en").read_text().splitlines()
    targets = Path(f"{config.data.corpus.test.test}.fr").read_text().splitlines()
    real_translate = evaluate_module.translate_lines

    def references_as_output(model_, tokenizer, lines, *args, **kwargs):
        if list(lines) != sources:
            return real_translate(model_, tokenizer, lines, *args, **kwargs)  # the probes
        forced = teacher_forced_attention(model_, tokenizer, sources, targets, torch.device("cpu"))
        found = []
        for k, (weights, src_pieces, tgt_pieces) in enumerate(forced):
            hypothesis = Hypothesis(tokens=tokenizer.encode_tgt([targets[k]])[0], score=0.0, logprob=0.0, attention=weights)
            found.append(Translation(k + 1, sources[k], targets[k], hypothesis, src_pieces, tgt_pieces))
        return found

    monkeypatch.setattr(evaluate_module, "translate_lines", references_as_output)
    summary = evaluate(runs[model], splits=["test"], beam_sizes=(1,), output_dir=tmp_path, num_maps=0, **SHORT, alignment=True)
    entry = summary["results"]["test/greedy"]["alignment"]
    assert entry["output"]["sentences"] == entry["teacher_forced"]["sentences"] == TINY_SIZES["test"]
    assert entry["output"]["argmax"] == entry["teacher_forced"]["argmax"]
    assert entry["output"]["diagonal_baseline"] == entry["teacher_forced"]["diagonal_baseline"]
    if model == "bahdanau":
        scores = entry["teacher_forced"]["argmax"]
        assert list(scores) == ["layer_0"] and list(scores["layer_0"]) == ["head_0", "mean"]
        assert scores["layer_0"]["head_0"] == scores["layer_0"]["mean"]


def test_decode_config_reaches_validation_and_evaluate_test(runs, tmp_path, monkeypatch) -> None:
    """configs/train.yaml's `decode` node: decode.validation is what the task validated with (stored
    in its hyper-parameters), decode.test what evaluate_test decodes with (plus greedy); the defaults
    come from inference.DecodeSettings through the ${attnmt.decode_default:...} resolver."""
    import attnmt.evaluate
    from attnmt.inference import DecodeSettings, load_for_inference
    from attnmt.train import evaluate_after_training

    cfg = compose([f"paths.output_dir={tmp_path}", "decode.test.beam_size=3", "decode.test.alpha=1.0"])
    assert DecodeSettings.from_config(cfg.decode.validation) == DecodeSettings(beam_size=1)
    assert DecodeSettings.from_config(cfg.decode.test) == DecodeSettings(beam_size=3, alpha=1.0)
    _, _, hparams = load_for_inference(resolve_checkpoint(runs["bahdanau"]))
    assert hparams["decode"]["beam_size"] == 1 and hparams["decode"]["max_len_a"] == 0.5  # the runs' override

    seen = []
    monkeypatch.setattr(attnmt.evaluate, "evaluate", lambda run, options: seen.append(options) or {"results": {}})
    evaluate_after_training(tmp_path, ["test"], 0, OmegaConf.to_container(cfg.decode.test, resolve=True))
    assert seen[0].settings() == [DecodeSettings(beam_size=3, alpha=1.0), DecodeSettings(beam_size=1, alpha=1.0)]
    with pytest.raises(ConfigError, match="decode.test.beam: unknown decoding setting"):
        DecodeSettings.from_config({"beam": 4}, key="decode.test")
