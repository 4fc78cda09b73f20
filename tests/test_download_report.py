"""scripts/download_data.py reports every file, also after a failure, and names the user's own file
when its checksum is wrong (not a temporary copy)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from attnmt.data import multi30k



def _script():
    import attnmt.cli.download

    return attnmt.cli.download  # attnmt-download / scripts/download_data.py


def test_every_failure_is_reported_and_names_the_users_file(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(multi30k, "URL_BASE", "http://127.0.0.1:9/")  # no network: nothing listens there
    local = tmp_path / "mine"
    local.mkdir()
    corrupt = local / "val.en.gz"
    corrupt.write_bytes(gzip.compress(b"not the original\n"))
    code = _script().main(["--langs", "en", "fr", "--splits", "val", "test_2016_flickr", "--cache-dir",
                           str(tmp_path / "cache"), "--local-dir", str(local)])
    assert code == 2
    captured = capsys.readouterr()
    table = [line.split()[:3] for line in captured.out.splitlines()[1:]]
    assert [row[0] for row in table] == ["val.en.gz", "val.fr.gz", "test_2016_flickr.en.gz", "test_2016_flickr.fr.gz"]
    assert all(row[2] == "FAILED" for row in table)
    errors = captured.err.strip().splitlines()
    assert len(errors) == 5 and all(line.startswith("error: ") for line in errors)
    assert f"local copy {corrupt})" in errors[0] and ".part" not in captured.err
    assert all("cannot get Multi30k file" in line for line in errors[1:4])
    assert errors[4] == "error: 4 of 4 files failed (listed above)"
    assert not list((tmp_path / "cache").glob("*.gz"))  # nothing unverified was installed


def test_copied_files_follow_the_umask(multi30k_dir: Path, tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path, _ = multi30k.fetch_file("val", "en", tmp_path / "cache", multi30k_dir)
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # mkstemp alone would give 0600
