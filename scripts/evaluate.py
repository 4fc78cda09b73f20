"""Evaluate a checkpoint or run folder: sacreBLEU BLEU/chrF/TER, attention maps and statistics.

    python scripts/evaluate.py RUN_DIR                                # the run's test split(s), beam 5
    python scripts/evaluate.py RUN_DIR --split val test_2016_flickr --beam-size 5 1
    python scripts/evaluate.py CKPT --src my.en --ref my.fr --name mytest
    python scripts/evaluate.py RUN_B --compare-with RUN_A/eval/test_2016_flickr.beam5.hyp

A thin command line over attnmt.evaluate (where the outputs are described); works from any
directory. Mistakes a user can fix print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from attnmt.errors import UserError
from attnmt.evaluate import evaluate, format_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Decode splits with a checkpoint, report sacreBLEU BLEU/chrF/TER, log attention maps and statistics.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/best-*.ckpt, else last.ckpt)")
    parser.add_argument("--split", nargs="+", dest="splits",
                        help="splits of the run's data config (default: its test splits, i.e. test_2016_flickr for Multi30k)")
    parser.add_argument("--src", help="a custom source file (with --ref), one sentence per line, plain or .gz")
    parser.add_argument("--ref", help="reference translations of --src, aligned line by line")
    parser.add_argument("--name", help="label of the --src/--ref pair in file names and metrics (default: file_<src name>)")
    parser.add_argument("--beam-size", type=int, nargs="+", default=[5],
                        help="one or more beam sizes, each decoded and recorded separately; 1 = greedy (default 5)")
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent for beam search (default 0.6)")
    parser.add_argument("--max-len-a", type=float, default=1.5, help="max output length = a * source length + b (default 1.5)")
    parser.add_argument("--max-len-b", type=float, default=10, help="see --max-len-a (default 10)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch, padding included (default 4096)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--output-dir", help="where eval files go (default: <run>/eval, or eval/ next to a bare checkpoint)")
    parser.add_argument("--num-maps", type=int, default=4, help="attention maps of the first N sentences of each split (default 4)")
    parser.add_argument("--merge-subwords", action="store_true", help="maps over words instead of sentencepiece pieces")
    parser.add_argument("--head-grid-layer", type=int, default=-1, help="layer whose heads get a grid (default -1 = last)")
    parser.add_argument("--compare-with", help="hypotheses of another system on the same split: paired significance test")
    parser.add_argument("--significance-test", choices=("bs", "ar"), default="bs",
                        help="bs = paired bootstrap (default), ar = approximate randomisation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = evaluate(
            args.checkpoint, args.splits, args.src, args.ref, args.name, tuple(args.beam_size), args.alpha,
            args.max_len_a, args.max_len_b, args.max_tokens, args.device, args.output_dir, args.num_maps,
            args.merge_subwords, args.head_grid_layer, args.compare_with, args.significance_test,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
