"""Fetch and verify Multi30k task 1 files into the data cache.

    python scripts/download_data.py --langs en fr de --splits train val test_2016_flickr
    python scripts/download_data.py --local-dir /mnt/corpora/multi30k   # copy instead of downloading

Prints one row per file (status: cached / copied / downloaded). Mistakes a user can fix print one
line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnmt.data.multi30k import CHECKSUMS, LANGS, LOCAL_DIR_ENV, SPLITS, fetch_file
from attnmt.errors import UserError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", nargs="+", default=["en", "fr", "de"], help=f"any of {' '.join(LANGS)}")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test_2016_flickr"], help=f"any of {' '.join(SPLITS)}")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/multi30k"), help="where verified files are kept")
    parser.add_argument("--local-dir", type=Path, default=None, help=f"folder with a local copy (default: ${LOCAL_DIR_ENV})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    try:
        for split in args.splits:
            for lang in args.langs:
                if split in SPLITS and lang in LANGS and f"{split}.{lang}.gz" not in CHECKSUMS:
                    rows.append((f"{split}.{lang}.gz", "-", "not published", ""))
                    continue
                path, how = fetch_file(split, lang, args.cache_dir, args.local_dir)
                rows.append((path.name, str(CHECKSUMS[path.name][0]), how, str(path)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    widths = [max(len(row[i]) for row in [("file", "lines", "status", "path"), *rows]) for i in range(4)]
    for row in [("file", "lines", "status", "path"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
