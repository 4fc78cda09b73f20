"""Multi30k task 1 raw files: where they come from, how they are checked, where they are kept.

A file is used only after its sha256 matches the table below (data facts from the dataset's
public repository). `fetch_file` looks in this order: a verified copy in the cache, a local copy
(`data.corpus.local_dir` / env ATTNMT_MULTI30K_DIR), a download. New files land in the cache
through a temporary file and an atomic rename, so a crash or a concurrent process never leaves
a half-written file under the final name.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from attnmt.data.corpus import Corpus
from attnmt.data.streaming import file_sha256
from attnmt.atomic import atomic_file
from attnmt.errors import DataError

log = logging.getLogger("attnmt.data")

URL_BASE = "https://github.com/multi30k/dataset/raw/master/data/task1/raw/"
LOCAL_DIR_ENV = "ATTNMT_MULTI30K_DIR"
LOCAL_DIR_KEY = "data.corpus.local_dir"

SPLITS = ("train", "val", "test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
LANGS = ("en", "fr", "de", "cs")

# file name -> (line count, sha256); copied from the dataset's published files.
CHECKSUMS: dict[str, tuple[int, str]] = {
    "train.en.gz": (29000, "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f"),
    "train.fr.gz": (29000, "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c"),
    "train.de.gz": (29000, "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6"),
    "train.cs.gz": (29000, "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077"),
    "val.en.gz": (1014, "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28"),
    "val.fr.gz": (1014, "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9"),
    "val.de.gz": (1014, "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a"),
    "val.cs.gz": (1014, "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc"),
    "test_2016_flickr.en.gz": (1000, "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9"),
    "test_2016_flickr.fr.gz": (1000, "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90"),
    "test_2016_flickr.de.gz": (1000, "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8"),
    "test_2016_flickr.cs.gz": (1000, "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1"),
    "test_2017_flickr.en.gz": (1000, "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074"),
    "test_2017_flickr.fr.gz": (1000, "3ba671ceb2299f3304ffafefea7a833d08632fbaf0ba18546f8a2ec2391af496"),
    "test_2017_flickr.de.gz": (1000, "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee"),
    "test_2017_mscoco.en.gz": (461, "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58"),
    "test_2017_mscoco.fr.gz": (461, "754f3072ba9f124569ba5258b32730fc1d214bbf8e0c6dfb2b74401676220db0"),
    "test_2017_mscoco.de.gz": (461, "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338"),
    "test_2018_flickr.en.gz": (1071, "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d"),
    "test_2018_flickr.fr.gz": (1071, "fb2b83fcceb937a4f7e3e93c1c51c22aba92f1e342391e6b5ba392b16a920501"),
    "test_2018_flickr.de.gz": (1071, "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608"),
    "test_2018_flickr.cs.gz": (1071, "7d0a9db904f94c554a8c58049a9f3a5357c27f46cc3d710d70cb0b4a2585b8c2"),
}


def file_name(split: str, lang: str) -> str:
    """`{split}.{lang}.gz`, after checking that Multi30k publishes this file."""
    if split not in SPLITS:
        raise DataError(f"unknown Multi30k split {split!r}; valid splits: {', '.join(SPLITS)}")
    if lang not in LANGS:
        raise DataError(f"unknown Multi30k language {lang!r}; valid languages: {', '.join(LANGS)}")
    name = f"{split}.{lang}.gz"
    if name not in CHECKSUMS:
        have = [lg for lg in LANGS if f"{split}.{lg}.gz" in CHECKSUMS]
        raise DataError(f"Multi30k has no {lang!r} file for split {split!r}; languages there: {', '.join(have)}")
    return name


def url_for(name: str) -> str:
    return URL_BASE + name  # read at call time so tests can point it elsewhere


def _check(path: Path, name: str, where: str, shown: Path | str | None = None) -> None:
    """DataError unless `path` has the published sha256; the message names `shown` (default: path)."""
    expected = CHECKSUMS[name][1]
    actual = file_sha256(path)
    if actual != expected:
        place = f"{where} {path if shown is None else shown}".strip()
        raise DataError(
            f"checksum mismatch for {name} ({place}): expected sha256 {expected}, got {actual}; "
            "the file is corrupt or not the Multi30k original"
        )


def _install(source: Path, name: str, target: Path, where: str) -> None:
    """Copy `source` to `target` through a verified temporary file (atomic).

    The checksum is taken of `source` itself, so an error names the user's file, not the temporary copy.
    """
    _check(source, name, where)
    with atomic_file(target) as tmp:
        shutil.copyfile(source, tmp)
        if file_sha256(tmp) != CHECKSUMS[name][1]:  # the copy itself went wrong (disk full, ...)
            raise DataError(f"copying {source} to {target.parent} gave a different file; check free space there and retry")


def _download(name: str, target: Path) -> None:
    """Download into a temporary file next to `target`, verify it, then rename (atomic)."""
    url = url_for(name)
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                done += len(block)
                shown = f"{100 * done // total:3d}%" if total else f"{done // 1024} KiB"
                print(f"\rdownloading {name}: {shown}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        _check(tmp, name, f"downloaded from {url}; not kept", shown="")


def fetch_file(split: str, lang: str, cache_dir: str | Path, local_dir: str | Path | None = None) -> tuple[Path, str]:
    """Make `{split}.{lang}.gz` present and verified in `cache_dir`.

    Returns (path, how) with how in {"cached", "copied", "downloaded"}.
    """
    name = file_name(split, lang)
    target = Path(cache_dir).expanduser() / name
    note = ""
    if target.exists():
        try:
            _check(target, name, "cached")
            return target, "cached"
        except DataError as err:
            # never use a corrupt file: drop it and fetch it again below
            log.warning("%s; removing it and fetching it again", err)
            note = f" (the cached copy {target} was corrupt and has been removed)"
            target.unlink()

    local_dir = local_dir if local_dir not in (None, "") else os.environ.get(LOCAL_DIR_ENV) or None
    if local_dir is not None:
        local = Path(local_dir).expanduser() / name
        if local.exists():
            _install(local, name, target, "local copy")
            return target, "copied"
        log.info("%s not in local dir %s; downloading it", name, local_dir)

    try:
        _download(name, target)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"cannot get Multi30k file {name}{note}: download from {url_for(name)} failed ({reason}) and "
            f"{f'it is not in the local dir {local_dir}' if local_dir else 'no local copy is configured'}; "
            f"put the file in a folder and set {LOCAL_DIR_KEY}=<folder> or the "
            f"environment variable {LOCAL_DIR_ENV}=<folder>, or copy it to {target}"
        ) from None
    return target, "downloaded"


class Multi30k(Corpus):
    """Multi30k task 1 for one language pair; splits are fetched on first use."""

    def __init__(
        self,
        src_lang: str = "en",
        tgt_lang: str = "fr",
        cache_dir: str | Path = "data/multi30k",
        local_dir: str | Path | None = None,
        test_splits: list[str] | tuple[str, ...] = ("test_2016_flickr",),
    ) -> None:
        if src_lang == tgt_lang:
            raise DataError(f"data.corpus.src_lang and tgt_lang are both {src_lang!r}; choose two languages")
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.cache_dir = Path(cache_dir).expanduser()
        self.local_dir = local_dir
        self.train_split, self.val_split = "train", "val"
        self.test_splits = list(test_splits)
        for split in self.splits:  # fail at construction on a bad split/language, not mid-training
            file_name(split, src_lang), file_name(split, tgt_lang)

    def files(self, split: str) -> tuple[Path, Path]:
        self._check_split(split)
        return (
            fetch_file(split, self.src_lang, self.cache_dir, self.local_dir)[0],
            fetch_file(split, self.tgt_lang, self.cache_dir, self.local_dir)[0],
        )

    def __repr__(self) -> str:
        return f"Multi30k({self.src_lang}-{self.tgt_lang}, cache_dir={str(self.cache_dir)!r})"
