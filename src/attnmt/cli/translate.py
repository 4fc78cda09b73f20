"""attnmt-translate (python scripts/translate.py): translate lines with a checkpoint; see attnmt.translate."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from attnmt.cli import add_decode_options, command, decode_settings, setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="attnmt-translate",
        description="Translate lines (stdin or --input) with a trained attnmt checkpoint; one output line per input line.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/best-*.ckpt, else last.ckpt)")
    parser.add_argument("--input", "-i", type=Path, help="file to translate, one sentence per line (default: stdin)")
    parser.add_argument("--output", "-o", type=Path, help="where translations go (default: stdout)")
    parser.add_argument("--max-src-tokens", type=int, default=256, help="longer lines are truncated with a warning (default 256 subwords)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--attention", action="store_true",
                        help="after each translation, print its attention matrix (last layer, mean of heads) to stderr")
    parser.add_argument("--merge-subwords", action="store_true", help="with --attention: words instead of subword pieces")
    add_decode_options(parser)
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(logging.WARNING)
    from attnmt.errors import DataError
    from attnmt.inference import load_model, pick_device, resolve_checkpoint
    from attnmt.translate import translate_stream

    settings = decode_settings(args)
    device = pick_device(args.device)
    if args.input is not None and not args.input.is_file():
        raise DataError(f"input file not found: {args.input}")
    model, tokenizer, _ = load_model(resolve_checkpoint(args.checkpoint), device)
    source = open(args.input, encoding="utf-8") if args.input else sys.stdin
    target = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        translate_stream(model, tokenizer, source, target, settings, device, args.max_src_tokens,
                         sys.stderr if args.attention else None, args.merge_subwords)
    except UnicodeDecodeError as err:
        raise DataError(f"{args.input or 'stdin'}: invalid UTF-8 ({err.reason}); convert the input to UTF-8") from None
    finally:
        if args.input:
            source.close()
        if args.output:
            target.close()
    return 0
