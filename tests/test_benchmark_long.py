"""The long-input benchmark (attnmt.benchmark_long, scripts/benchmark_long.py) at small lengths."""

from __future__ import annotations

import json
import math

import pytest

from attnmt.benchmark_long import format_table, run


@pytest.mark.slow
def test_every_length_and_window_is_measured() -> None:
    report = run([16, 64], [4], batch=1, device_name="cpu", repeats=1)
    runs = {(r["length"], r["window"]): r for r in report["runs"]}
    assert set(runs) == {(16, None), (16, 4), (64, None), (64, 4)}
    for r in runs.values():
        assert r["seconds"] > 0 and math.isfinite(r["tokens_per_s"])
        assert r["saved_for_backward_mb"] > 0
    for window in (None, 4):  # activations kept for backward grow with the input
        assert runs[(64, window)]["saved_for_backward_mb"] > runs[(16, window)]["saved_for_backward_mb"]
    table = format_table(report).splitlines()
    assert table[0].split()[:2] == ["length", "full"] and "w=4" in table[0]
    assert [line.split()[0] for line in table[1:]] == ["16", "64"]


def load_script():
    import attnmt.cli.benchmark_long

    return attnmt.cli.benchmark_long  # attnmt-benchmark-long / scripts/benchmark_long.py


@pytest.mark.slow
def test_script_writes_json(tmp_path, capsys) -> None:
    out = tmp_path / "long.json"
    assert load_script().main(["--lengths", "8,24", "--windows", "2", "--repeats", "1", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["window"] for r in report["runs"]] == [None, 2, None, 2]
    assert "speed-up" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--lengths", "0,8"], ["--windows", "x"]])
def test_script_rejects_bad_numbers(argv, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_script().main(argv)
    assert stopped.value.code == 2 and "positive integers" in capsys.readouterr().err
