"""attnmt-evaluate (python scripts/evaluate.py): score a checkpoint or run folder with sacreBLEU
BLEU/chrF/TER, draw and summarise its attention; the outputs are described in attnmt.evaluate.

    attnmt-evaluate RUN_DIR                                # the run's test split(s), beam 5
    attnmt-evaluate RUN_DIR --split val test_2016_flickr --beam-size 5 1
    attnmt-evaluate CKPT --src my.en --ref my.fr --name mytest
    attnmt-evaluate RUN_B --compare-with RUN_A/eval/test_2016_flickr.beam5.hyp
    attnmt-evaluate RUN_DIR --alignment                    # + attention as word alignment (AER per layer/head)
    attnmt-evaluate RUN_DIR --gold-alignment test.e test.f test.wa.nullalign --gold-name hansards
"""

from __future__ import annotations

import argparse

from attnmt.cli import add_decode_options, command, decode_settings, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attnmt-evaluate",
        description="Decode splits with a checkpoint, report sacreBLEU BLEU/chrF/TER, log attention maps and statistics.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/best-*.ckpt, else last.ckpt)")
    parser.add_argument("--split", nargs="+", dest="splits",
                        help="splits of the run's data config (default: its test splits, i.e. test_2016_flickr for Multi30k)")
    parser.add_argument("--src", help="a custom source file (with --ref), one sentence per line, plain or .gz")
    parser.add_argument("--ref", help="reference translations of --src, aligned line by line")
    parser.add_argument("--name", help="label of the --src/--ref pair in file names and metrics (default: file_<src name>)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--output-dir", help="where eval files go (default: <run>/eval, or eval/ next to a bare checkpoint)")
    parser.add_argument("--num-maps", type=int, default=4, help="attention maps of the first N sentences of each split (default 4)")
    parser.add_argument("--merge-subwords", action="store_true", help="maps over words instead of sentencepiece pieces")
    parser.add_argument("--head-grid-layer", type=int, default=-1, help="layer whose heads get a grid (default -1 = last)")
    parser.add_argument("--compare-with", help="hypotheses of another system on the same split: paired significance test")
    parser.add_argument("--significance-test", choices=("bs", "ar"), default="bs",
                        help="bs = paired bootstrap (default), ar = approximate randomisation")
    add_decode_options(parser, several_beams=True)
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


def options(args: argparse.Namespace):
    """The command line's arguments -> attnmt.evaluate.EvalOptions."""
    from attnmt.evaluate import EvalOptions

    return EvalOptions(
        splits=args.splits, src=args.src, ref=args.ref, name=args.name, decode=decode_settings(args),
        beam_sizes=tuple(args.beam_size), device=args.device, output_dir=args.output_dir, num_maps=args.num_maps,
        merge_subwords=args.merge_subwords, head_grid_layer=args.head_grid_layer, compare_with=args.compare_with,
        significance_test=args.significance_test, alignment=args.alignment, alignment_threshold=args.alignment_threshold,
        alignment_backend=args.alignment_backend, gold_alignment=args.gold_alignment, gold_name=args.gold_name,
        gold_reversed=args.gold_reversed,
    )


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    from attnmt.evaluate import evaluate, format_report

    summary = evaluate(args.checkpoint, options(args))
    print(format_report(summary))
    return 0
