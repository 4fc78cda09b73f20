"""translate.py on the tiny runs: stdin round trip, empty and over-long lines, attention tables, order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnmt.inference import DecodeSettings, decode_ids, load_model, resolve_checkpoint, translate_lines
from attnmt.cli.translate import main

from test_evaluate import SHORT, SHORT_ARGS, evaluated_run, tiny_runs

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_parallel_dir) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory, tiny_parallel_dir)


@pytest.fixture(scope="module")
def loaded(runs):
    """(model, tokenizer) of each run, loaded once."""
    return {name: load_model(resolve_checkpoint(run), CPU)[:2] for name, run in runs.items()}


@pytest.mark.slow
def test_stdin_round_trip_matches_evaluate(tmp_path_factory, tiny_parallel_dir, tmp_path) -> None:
    run, _ = evaluated_run(tmp_path_factory, tiny_parallel_dir)
    sources = (tiny_parallel_dir / "test.en").read_text(encoding="utf-8").split("\n")[:-1]
    lines = sources[:3] + [""] + sources[3:]
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "translate.py"), str(run), "--beam-size", "5", *SHORT_ARGS],
                          input="\n".join(lines) + "\n", cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout.split("\n")
    assert output[-1] == "" and len(output) - 1 == len(lines)  # N lines in, N lines out
    output = output[:-1]
    assert output[3] == ""  # the empty line stays empty
    evaluated = (run / "eval" / "test.beam5.hyp").read_text(encoding="utf-8").split("\n")[:-1]
    assert output[:3] + output[4:] == evaluated  # same sentences, same settings, same outputs
    assert any(evaluated)  # not a trivial comparison of empty outputs


def test_long_line_is_truncated_with_a_warning(runs, loaded, tmp_path, capsys) -> None:
    model, tokenizer = loaded["bahdanau"]
    long_line = "A man in a blue shirt is standing on a ladder cleaning the windows of a tall building."
    source, target = tmp_path / "in.en", tmp_path / "out.fr"
    source.write_text(f"A dog runs.\n{long_line}\n\n", encoding="utf-8")
    assert main([str(runs["bahdanau"]), "--input", str(source), "--output", str(target), "--max-src-tokens", "12", *SHORT_ARGS]) == 0
    pieces = len(tokenizer.encode_src([long_line])[0])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == [f"warning: line 2: {pieces} subwords, truncated to the first 12 (--max-src-tokens)"]
    output = target.read_text(encoding="utf-8").split("\n")
    assert len(output) == 4 and output[2] == "" and output[3] == ""
    # what was translated is exactly the first 12 subwords
    truncated = decode_ids(model, [tokenizer.encode_src([long_line])[0][:12]], DecodeSettings(**SHORT), CPU)[0]
    assert tokenizer.decode_tgt([truncated.tokens])[0] == output[1]


def parse_tables(text: str) -> list[tuple[list[str], list[str], torch.Tensor]]:
    """Attention tables printed by --attention -> (source tokens, target tokens, weights [T, S])."""
    tables = []
    for block in text.split("# line ")[1:]:
        rows = block.strip("\n").split("\n")
        if "no attention" in rows[0]:
            tables.append(([], [], torch.empty(0, 0)))
            continue
        header = rows[1].split()
        cells = [row.split() for row in rows[2:]]
        tables.append((header, [c[0] for c in cells], torch.tensor([[float(v) for v in c[1:]] for c in cells])))
    return tables


def test_attention_tables_rows_sum_to_one(runs, loaded, tmp_path, capsys) -> None:
    model, tokenizer = loaded["transformer"]
    sentences = ["Two dogs play in the snow.", "", "A woman sits on a bench."]
    source = tmp_path / "in.en"
    source.write_text("\n".join(sentences) + "\n", encoding="utf-8")
    assert main([str(runs["transformer"]), "--input", str(source), "--beam-size", "1", "--attention", *SHORT_ARGS]) == 0
    captured = capsys.readouterr()
    tables = parse_tables(captured.err)
    assert len(tables) == 3 and tables[1][2].numel() == 0  # the empty line has no matrix
    expected = translate_lines(model, tokenizer, sentences, DecodeSettings(beam_size=1, **SHORT), CPU, need_attention=True)
    for (src_tokens, tgt_tokens, weights), translation in zip(tables, expected):
        if translation.hypothesis is None:
            continue
        assert src_tokens == translation.src_tokens and tgt_tokens == translation.tgt_tokens
        assert weights.shape == (len(tgt_tokens), len(src_tokens))
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(tgt_tokens)), atol=0.0005 * len(src_tokens), rtol=0)
        mean_last_layer = translation.hypothesis.attention[-1].mean(0)  # [T, S]
        torch.testing.assert_close(weights, mean_last_layer, atol=0.0005, rtol=0)
    assert captured.out.split("\n")[:-1] == [t.text for t in expected]  # stdout: translations only


def test_batches_keep_the_input_order(loaded, tiny_parallel_dir) -> None:
    """Small batches (length-sorted, so reordered) give each line the translation it gets alone."""
    model, tokenizer = loaded["bahdanau"]
    sentences = (tiny_parallel_dir / "val.en").read_text(encoding="utf-8").split("\n")[:12]
    settings = DecodeSettings(beam_size=1, max_tokens=60, **SHORT)
    batched = translate_lines(model, tokenizer, sentences, settings, CPU)
    for sentence, translation in zip(sentences, batched):
        alone = translate_lines(model, tokenizer, [sentence], settings, CPU)[0]
        assert translation.source == sentence and translation.hypothesis.tokens == alone.hypothesis.tokens


def test_bad_arguments_exit_2(runs, tmp_path, capsys) -> None:
    assert main([str(runs["bahdanau"]), "--beam-size", "0"]) == 2
    assert "--beam-size 0" in capsys.readouterr().err
    assert main([str(runs["bahdanau"]), "--input", str(tmp_path / "absent.en")]) == 2
    assert "absent.en" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 2
    assert f"no checkpoint in {tmp_path}" in capsys.readouterr().err
