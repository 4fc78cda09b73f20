"""Compare the attention variants of a sweep: one table, plots and TensorBoard images.

    python train.py -m model=bahdanau,luong,transformer seed=1,2 trainer.max_time=00:00:15:00
    python scripts/compare.py outputs/train/multirun_<date>_<time> --evaluate

Writes <multirun>/comparison/{report.md,report.csv,val_bleu_vs_time.png,probe_attention.png,tensorboard/}
and prints the Markdown table. --evaluate decodes (beam search) the test split for runs that were
not evaluated yet; --alignment adds AER columns (best layer/head per variant) and alignment_aer.png,
evaluating with `evaluate.py --alignment` the runs that lack it.
"""

from __future__ import annotations

import argparse
import sys

from attnmt.compare import compare
from attnmt.errors import report_user_error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", help="a folder made by `python train.py -m ...`")
    parser.add_argument("--split", default="test_2016_flickr", help="test split to report")
    parser.add_argument("--evaluate", action="store_true", help="evaluate finished runs that have no test scores")
    parser.add_argument("--alignment", action="store_true",
                        help="AER columns and plot: evaluate finished runs with --alignment where their test entry lacks it")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--output-dir", default=None, help="default: <multirun_dir>/comparison")
    args = parser.parse_args(argv)
    try:
        result = compare(args.multirun_dir, args.split, args.evaluate, args.beam_size, args.output_dir, args.alignment)
    except Exception as error:
        report_user_error(error)
        return 2
    print(result["files"]["markdown"].read_text(encoding="utf-8"))
    for name, path in result["files"].items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
