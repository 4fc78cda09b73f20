"""Reading parallel text: gzip detection, alignment, UTF-8 and blank-line handling, ParallelText."""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import pytest

from attnmt.data.corpus import ParallelText, read_lines
from attnmt.data.streaming import PairStats, iter_pair_chunks
from attnmt.errors import DataError


def write(path: Path, text: str | bytes, gz: bool = False) -> Path:
    data = text.encode("utf-8") if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def read_pairs(src: Path, tgt: Path) -> tuple[list[str], list[str], list[int], PairStats]:
    """The usable pairs of two files as lists, read the way preparation reads them."""
    stats = PairStats()
    chunks = list(iter_pair_chunks(src, tgt, stats=stats))
    return ([s for c in chunks for s in c.src], [t for c in chunks for t in c.tgt],
            [n for c in chunks for n in c.line_numbers], stats)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    text = "Un chat dort.\nDeux chiens courent.\n"
    plain = write(tmp_path / "a.txt", text)
    misnamed = write(tmp_path / "b.txt", text, gz=True)  # gzip data without a .gz suffix
    assert read_lines(plain) == read_lines(misnamed) == ["Un chat dort.", "Deux chiens courent."]


def test_only_newline_separates_lines(tmp_path: Path) -> None:
    # U+2028 and U+0085 are line breaks for str.splitlines but not for a one-sentence-per-line file
    path = write(tmp_path / "x.en", "one\u2028still one\r\ntwo\x85 and more\nthree")
    assert read_lines(path) == ["one\u2028still one", "two\x85 and more", "three"]


def test_line_count_mismatch_names_both_files(tmp_path: Path) -> None:
    src = write(tmp_path / "train.en", "a\nb\nc\n")
    tgt = write(tmp_path / "train.fr", "a\nb\n")
    with pytest.raises(DataError) as info:
        read_pairs(src, tgt)
    message = str(info.value)
    assert f"{src} has 3 lines" in message and f"{tgt} has 2" in message


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.fr", b"ok\nstill ok\ncaf\xe9 latin-1\nok\n", gz=True)
    with pytest.raises(DataError, match=rf"{bad}, line 3: invalid UTF-8"):
        read_lines(bad)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "empty.en", content)
    with pytest.raises(DataError, match=f"{path} is empty"):
        read_lines(path)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_lines(tmp_path / "nope.en")


def test_blank_side_pairs_dropped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = write(tmp_path / "s.en", "A cat.\n\nA dog.\n  \nA bird.\nA fish.\n")
    tgt = write(tmp_path / "s.fr", "Un chat.\nVide.\nUn chien.\nRien.\n \t\nUn poisson.\n")
    with caplog.at_level(logging.INFO, logger="attnmt.data"):
        sources, targets, line_numbers, stats = read_pairs(src, tgt)
    assert sources == ["A cat.", "A dog.", "A fish."]
    assert targets == ["Un chat.", "Un chien.", "Un poisson."]
    assert line_numbers == [1, 3, 6]
    assert (stats.total_lines, stats.dropped_empty) == (6, 3)
    assert any("dropped 3 of 6 pairs" in record.getMessage() for record in caplog.records)


def test_all_blank_is_an_error(tmp_path: Path) -> None:
    src = write(tmp_path / "s.en", "a\n\n")
    tgt = write(tmp_path / "s.fr", "\nb\n")
    with pytest.raises(DataError, match="no usable sentence pairs"):
        read_pairs(src, tgt)


def test_parallel_text_splits_and_files(tmp_path: Path) -> None:
    for prefix in ("train", "valid", "news"):
        write(tmp_path / f"{prefix}.de", "Hallo.\n")
    for prefix in ("train", "valid"):
        write(tmp_path / f"{prefix}.en", "Hello.\n")
    write(tmp_path / "news.en.gz", "Hello.\n", gz=True)  # .gz is found when the plain file is absent
    corpus = ParallelText("de", "en", train=str(tmp_path / "train"), val=str(tmp_path / "valid"),
                          test={"news": str(tmp_path / "news")})
    assert corpus.splits == ["train", "val", "news"]
    assert (corpus.train_split, corpus.val_split, corpus.test_splits) == ("train", "val", ["news"])
    assert corpus.files("val") == (tmp_path / "valid.de", tmp_path / "valid.en")
    assert corpus.files("news")[1] == tmp_path / "news.en.gz"
    assert read_lines(corpus.files("news")[1]) == ["Hello."]


def test_parallel_text_missing_file_names_config_key(tmp_path: Path) -> None:
    write(tmp_path / "train.en", "x\n")
    write(tmp_path / "train.fr", "x\n")
    corpus = ParallelText("en", "fr", train=str(tmp_path / "train"), val=str(tmp_path / "dev"),
                          test={"blind": str(tmp_path / "blind")})
    with pytest.raises(DataError, match=rf"missing val file {tmp_path / 'dev.en'} \(from data.corpus.val="):
        corpus.files("val")
    with pytest.raises(DataError, match="data.corpus.test.blind"):
        corpus.files("blind")
    with pytest.raises(DataError, match="unknown split 'test'"):
        corpus.files("test")


def test_parallel_text_rejects_same_languages() -> None:
    with pytest.raises(DataError, match="both 'en'"):
        ParallelText("en", "en", train="a", val="b")
