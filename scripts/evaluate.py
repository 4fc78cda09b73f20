"""Evaluate a checkpoint or run folder: sacreBLEU BLEU/chrF/TER, attention maps and statistics.

    python scripts/evaluate.py RUN_DIR                                # the run's test split(s), beam 5
    python scripts/evaluate.py RUN_DIR --split val test_2016_flickr --beam-size 5 1
    python scripts/evaluate.py CKPT --src my.en --ref my.fr --name mytest
    python scripts/evaluate.py RUN_B --compare-with RUN_A/eval/test_2016_flickr.beam5.hyp
    python scripts/evaluate.py RUN_DIR --alignment                  # + attention as word alignment (AER per layer/head)
    python scripts/evaluate.py RUN_DIR --gold-alignment test.e test.f test.wa.nullalign --gold-name hansards

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
    align = parser.add_argument_group("attention as word alignment")
    align.add_argument("--alignment", action="store_true",
                       help="score cross-attention (every layer and head) as word alignment: AER/precision/recall against "
                            "statistical reference alignments, teacher-forced on the reference and on the model's output")
    align.add_argument("--alignment-threshold", type=float,
                       help="also score every link with word-level attention >= this weight (besides the argmax links)")
    align.add_argument("--alignment-backend", choices=("ibm2", "eflomal"), default="ibm2",
                       help="the reference aligner: ibm2 = the project's numpy IBM1+2 (default), eflomal = the optional extra")
    align.add_argument("--gold-alignment", nargs=3, metavar=("SRC_TEXT", "TGT_TEXT", "LINKS"),
                       help="human alignments in the HLT-NAACL 2003 format (e.g. Hansards test.e test.f test.wa.nullalign): "
                            "teacher-forced AER reported separately")
    align.add_argument("--gold-name", default="gold", help="label of the gold set in metrics.json and TensorBoard (default gold)")
    align.add_argument("--gold-reversed", action="store_true",
                       help="the links file gives the model's target-side position first")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summary = evaluate(
            args.checkpoint, args.splits, args.src, args.ref, args.name, tuple(args.beam_size), args.alpha,
            args.max_len_a, args.max_len_b, args.max_tokens, args.device, args.output_dir, args.num_maps,
            args.merge_subwords, args.head_grid_layer, args.compare_with, args.significance_test,
            alignment=args.alignment, alignment_threshold=args.alignment_threshold, alignment_backend=args.alignment_backend,
            gold_alignment=args.gold_alignment, gold_name=args.gold_name, gold_reversed=args.gold_reversed,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_report(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
