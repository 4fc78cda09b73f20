"""Multi30k files: checksums, cache reuse, local copies, downloads (from a local HTTP server), errors."""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from attnmt.data import multi30k
from attnmt.data.corpus import read_lines
from attnmt.data.streaming import PairStats, iter_pair_chunks
from attnmt.data.multi30k import CHECKSUMS, LOCAL_DIR_ENV, Multi30k, fetch_file
from attnmt.errors import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_local_dir_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOCAL_DIR_ENV, raising=False)  # each test says where files may come from


@pytest.fixture
def http_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder served over HTTP on localhost; URL_BASE points at it."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setattr(multi30k, "URL_BASE", f"http://127.0.0.1:{server.server_address[1]}/")
    yield served
    server.shutdown()
    server.server_close()


def test_table_matches_local_files(multi30k_dir: Path) -> None:
    for path in sorted(multi30k_dir.glob("*.gz")):
        lines, sha = CHECKSUMS[path.name]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, path.name
        assert len(read_lines(path)) == lines, path.name


@pytest.mark.parametrize(
    ("split", "lang", "expected"),
    [("dev", "en", "valid splits: train, val"), ("train", "xx", "valid languages: en, fr, de, cs"),
     ("test_2017_mscoco", "cs", "languages there: en, fr, de")],
)
def test_unknown_split_or_language(tmp_path: Path, split: str, lang: str, expected: str) -> None:
    with pytest.raises(DataError, match=expected):
        fetch_file(split, lang, tmp_path)


def test_copies_from_local_dir_then_reuses_cache(multi30k_dir: Path, tmp_path: Path) -> None:
    path, how = fetch_file("val", "fr", tmp_path / "cache", local_dir=multi30k_dir)
    assert how == "copied" and path == tmp_path / "cache" / "val.fr.gz"
    assert path.read_bytes() == (multi30k_dir / "val.fr.gz").read_bytes()
    assert fetch_file("val", "fr", tmp_path / "cache")[1] == "cached"  # no local dir needed now
    assert list((tmp_path / "cache").iterdir()) == [path]  # no temporary files left behind


def test_env_var_names_local_copy(multi30k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCAL_DIR_ENV, str(multi30k_dir))
    assert fetch_file("val", "en", tmp_path)[1] == "copied"


def test_corrupt_cached_file_is_fetched_again(multi30k_dir: Path, tmp_path: Path) -> None:
    cached = tmp_path / "val.en.gz"
    cached.write_bytes(gzip.compress(b"A tampered sentence.\n"))
    path, how = fetch_file("val", "en", tmp_path, local_dir=multi30k_dir)
    assert how == "copied"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CHECKSUMS["val.en.gz"][1]


def test_corrupt_local_copy_is_refused(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    bad = gzip.compress(b"not the real file\n")
    (local / "val.de.gz").write_bytes(bad)
    with pytest.raises(DataError) as info:
        fetch_file("val", "de", tmp_path / "cache", local_dir=local)
    message = str(info.value)
    assert "checksum mismatch for val.de.gz" in message
    assert CHECKSUMS["val.de.gz"][1] in message and hashlib.sha256(bad).hexdigest() in message
    assert not (tmp_path / "cache" / "val.de.gz").exists()
    assert not list(tmp_path.joinpath("cache").rglob("*"))  # no temporary left either (or no folder at all)


def test_corrupt_cached_file_offline_is_reported_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multi30k, "URL_BASE", "http://127.0.0.1:9/")  # discard port: connection refused
    (tmp_path / "val.en.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="was corrupt and has been removed"):
        fetch_file("val", "en", tmp_path)
    assert not (tmp_path / "val.en.gz").exists()


def test_offline_and_nothing_cached_gives_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multi30k, "URL_BASE", "http://127.0.0.1:9/")
    with pytest.raises(DataError) as info:
        fetch_file("train", "fr", tmp_path / "cache")
    message = str(info.value)
    for needed in ("train.fr.gz", "http://127.0.0.1:9/train.fr.gz", "data.corpus.local_dir", LOCAL_DIR_ENV):
        assert needed in message
    assert not any((tmp_path / "cache").iterdir())  # no partial download left


def test_download_verifies_and_installs(multi30k_dir: Path, http_dir: Path, tmp_path: Path, capsys) -> None:
    (http_dir / "val.fr.gz").write_bytes((multi30k_dir / "val.fr.gz").read_bytes())
    path, how = fetch_file("val", "fr", tmp_path / "cache")
    assert how == "downloaded"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CHECKSUMS["val.fr.gz"][1]
    assert "downloading val.fr.gz" in capsys.readouterr().err  # progress goes to stderr


def test_corrupt_download_is_not_installed(http_dir: Path, tmp_path: Path) -> None:
    (http_dir / "val.fr.gz").write_bytes(gzip.compress(b"corrupted in transit\n"))
    with pytest.raises(DataError, match="checksum mismatch for val.fr.gz"):
        fetch_file("val", "fr", tmp_path / "cache")
    assert not list(tmp_path.joinpath("cache").rglob("*"))  # no temporary left either (or no folder at all)


def test_corpus_reads_verified_pairs(multi30k_dir: Path, tmp_path: Path) -> None:
    corpus = Multi30k("en", "de", cache_dir=tmp_path, local_dir=multi30k_dir, test_splits=["test_2016_flickr"])
    assert corpus.splits == ["train", "val", "test_2016_flickr"]
    stats = PairStats()
    kept = sum(len(chunk.src) for chunk in iter_pair_chunks(*corpus.files("val"), stats=stats))
    assert kept == CHECKSUMS["val.en.gz"][0] and stats.dropped_empty == 0
    with pytest.raises(DataError, match="unknown split 'test_2018_flickr'"):
        corpus.files("test_2018_flickr")


def test_corpus_rejects_unpublished_test_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no 'cs' file for split 'test_2017_mscoco'"):
        Multi30k("en", "cs", cache_dir=tmp_path, test_splits=["test_2017_mscoco"])


def _load_script():
    spec = importlib.util.spec_from_file_location("download_data", REPO / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_script_table_and_errors(multi30k_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    script = _load_script()
    args = ["--langs", "en", "fr", "--splits", "val", "--cache-dir", str(tmp_path), "--local-dir", str(multi30k_dir)]
    assert script.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["file", "lines", "status", "path"]
    assert [line.split()[:3] for line in out[1:]] == [["val.en.gz", "1014", "copied"], ["val.fr.gz", "1014", "copied"]]

    monkeypatch.setattr(multi30k, "URL_BASE", "http://127.0.0.1:9/")
    assert script.main(["--langs", "de", "--splits", "val", "--cache-dir", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot get Multi30k file val.de.gz") and err.count("\n") == 1
