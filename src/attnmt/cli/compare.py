"""attnmt-compare (python scripts/compare.py): compare the attention variants of a sweep: one table,
plots and TensorBoard images.

    python train.py -m model=bahdanau,luong,transformer seed=1,2 trainer.max_time=00:00:15:00
    attnmt-compare outputs/train/multirun_<date>_<time> --evaluate

Writes <multirun>/comparison/{report.md,report.csv,val_bleu_vs_time.png,probe_attention.png,tensorboard/}
and prints the Markdown table. --evaluate decodes (beam search) the test split for runs that were
not evaluated yet; --alignment adds AER columns (best layer/head per variant) and alignment_aer.png,
evaluating with `attnmt-evaluate --alignment` the runs that lack it.
"""

from __future__ import annotations

import argparse

from attnmt.cli import command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-compare", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir", help="a folder made by `python train.py -m ...`")
    parser.add_argument("--split", default="test_2016_flickr", help="test split to report")
    parser.add_argument("--evaluate", action="store_true", help="evaluate finished runs that have no test scores")
    parser.add_argument("--alignment", action="store_true",
                        help="AER columns and plot: evaluate finished runs with --alignment where their test entry lacks it")
    parser.add_argument("--beam-size", type=int, default=None,
                        help="the decoding to report and to evaluate with (default: attnmt.inference.DecodeSettings')")
    parser.add_argument("--output-dir", default=None, help="default: <multirun_dir>/comparison")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from attnmt.compare import compare

    result = compare(args.multirun_dir, args.split, args.evaluate, args.beam_size, args.output_dir, args.alignment)
    print(result["files"]["markdown"].read_text(encoding="utf-8"))
    for name, path in result["files"].items():
        print(f"{name}: {path}")
    return 0
