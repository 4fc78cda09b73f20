"""attnmt-download (python scripts/download_data.py): fetch and verify Multi30k task 1 files into the data cache.

    attnmt-download --langs en fr de --splits train val test_2016_flickr
    attnmt-download --local-dir /mnt/corpora/multi30k   # copy instead of downloading

Prints one row per file (status: cached / copied / downloaded / FAILED), then one `error:` line on
stderr per file that failed (missing, corrupt: the message names the file), and exits with code 2
if any did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnmt.cli import command
from attnmt.data.multi30k import CHECKSUMS, LANGS, LOCAL_DIR_ENV, SPLITS, fetch_file
from attnmt.errors import UserError, error_line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-download", description=__doc__.splitlines()[0])
    parser.add_argument("--langs", nargs="+", default=["en", "fr", "de"], help=f"any of {' '.join(LANGS)}")
    parser.add_argument("--splits", nargs="+", default=["train", "val", "test_2016_flickr"], help=f"any of {' '.join(SPLITS)}")
    parser.add_argument("--cache-dir", type=Path, default=Path("data/multi30k"), help="where verified files are kept")
    parser.add_argument("--local-dir", type=Path, default=None, help=f"folder with a local copy (default: ${LOCAL_DIR_ENV})")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    """Fetch every requested file, report each one (also after a failure), exit 2 if any failed."""
    args = parse_args(argv)
    rows, errors = [], []
    for split in args.splits:
        for lang in args.langs:
            if split in SPLITS and lang in LANGS and f"{split}.{lang}.gz" not in CHECKSUMS:
                rows.append((f"{split}.{lang}.gz", "-", "not published", ""))
                continue
            try:
                path, how = fetch_file(split, lang, args.cache_dir, args.local_dir)
            except UserError as err:  # reported per file below, so one failure does not hide the others
                rows.append((f"{split}.{lang}.gz", "-", "FAILED", ""))
                errors.append(err)
                continue
            rows.append((path.name, str(CHECKSUMS[path.name][0]), how, str(path)))
    header = ("file", "lines", "status", "path")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    for error in errors:
        print(error_line(error), file=sys.stderr)
    if len(errors) > 1:
        print(f"error: {len(errors)} of {len(rows)} files failed (listed above)", file=sys.stderr)
    return 2 if errors else 0
