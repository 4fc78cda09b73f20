"""Translate text with any checkpoint: length-sorted batches, beam or greedy search, input order kept.

    python scripts/translate.py RUN_OR_CKPT < input.en > output.fr
    python scripts/translate.py CKPT --input input.en --output output.fr --beam-size 1
    python scripts/translate.py CKPT --attention < input.en 2> attention.txt

One output line per input line, in input order; an empty input line gives an empty output line.
A line longer than --max-src-tokens subwords is cut there (a warning on stderr names the line).
--attention writes, after each translation, its cross-attention matrix (last layer, mean of the
heads) to stderr as a table: one column per source token, one row per output token. It goes to
stderr so that stdout stays one translation per line, ready for a pipe or sacreBLEU.

Loading and decoding come from attnmt.inference, shared with evaluate, compare and benchmark: the
same sentences with the same settings give the same outputs in all of them.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

import torch

from attnmt.errors import DataError, UserError
from attnmt.inference import DecodeSettings, Translation, load_model, pick_device, resolve_checkpoint, translate_lines


def attention_table(translation: Translation, merge: bool = False, digits: int = 3) -> str:
    """The last layer's head-averaged cross-attention [T, S] as a plain-text table.

    Columns: source tokens; rows: output tokens; each row sums to 1 (up to rounding).
    merge=True shows words instead of sentencepiece pieces (viz.merge_subwords).
    """
    hyp = translation.hypothesis
    if hyp is None or hyp.attention is None:
        return f"# line {translation.line_number}: (empty line, no attention)\n"
    weights = hyp.attention[-1].mean(dim=0).numpy()  # [T, S]
    src_tokens, tgt_tokens = translation.src_tokens, translation.tgt_tokens
    if merge:
        from attnmt.viz import merge_subwords

        weights, src_tokens, tgt_tokens = merge_subwords(weights, src_tokens, tgt_tokens)
    layers, heads = hyp.attention.shape[:2]
    cell = max([digits + 2, *(len(token) for token in src_tokens)])
    label = max(len(token) for token in tgt_tokens)
    lines = [
        f"# line {translation.line_number}: last layer (layer_{layers - 1}), mean of {heads} head(s); "
        "rows: output tokens, columns: source tokens",
        " " * label + " " + " ".join(token.rjust(cell) for token in src_tokens),
    ]
    for token, row in zip(tgt_tokens, weights):
        lines.append(token.ljust(label) + " " + " ".join(f"{value:.{digits}f}".rjust(cell) for value in row))
    return "\n".join(lines) + "\n"


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Groups of `size` lines, so long inputs stream through with bounded memory."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\n").rstrip("\r"))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def translate_stream(
    model,
    tokenizer,
    lines: Iterable[str],
    out: TextIO,
    settings: DecodeSettings,
    device: torch.device,
    max_src_tokens: int | None = 256,
    attention: TextIO | None = None,
    merge: bool = False,
    warn: Callable[[str], None] = lambda message: print(f"warning: {message}", file=sys.stderr),
    chunk_lines: int = 2000,
) -> int:
    """Translate `lines` into `out` (one line each); returns the number of lines written."""
    written = 0
    for chunk in _chunks(lines, chunk_lines):
        found = translate_lines(model, tokenizer, chunk, settings, device, max_src_tokens, attention is not None, written + 1)
        for translation in found:
            if translation.truncated_from is not None:
                warn(f"line {translation.line_number}: {translation.truncated_from} subwords, "
                     f"truncated to the first {max_src_tokens} (--max-src-tokens)")
            out.write(translation.text + "\n")
            if attention is not None:
                attention.write(attention_table(translation, merge))
        out.flush()
        written += len(chunk)
    return written


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Translate lines (stdin or --input) with a trained attnmt checkpoint; one output line per input line.",
    )
    parser.add_argument("checkpoint", help="a .ckpt file or a run folder (uses checkpoints/best-*.ckpt, else last.ckpt)")
    parser.add_argument("--input", "-i", type=Path, help="file to translate, one sentence per line (default: stdin)")
    parser.add_argument("--output", "-o", type=Path, help="where translations go (default: stdout)")
    parser.add_argument("--beam-size", type=int, default=5, help="beams; 1 = greedy search (default 5)")
    parser.add_argument("--alpha", type=float, default=0.6, help="length penalty exponent for beam search (default 0.6)")
    parser.add_argument("--max-len-a", type=float, default=1.5, help="max output length = a * source length + b (default 1.5)")
    parser.add_argument("--max-len-b", type=float, default=10, help="see --max-len-a (default 10)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="source tokens per batch, padding included (default 4096)")
    parser.add_argument("--max-src-tokens", type=int, default=256, help="longer lines are truncated with a warning (default 256 subwords)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--attention", action="store_true",
                        help="after each translation, print its attention matrix (last layer, mean of heads) to stderr")
    parser.add_argument("--merge-subwords", action="store_true", help="with --attention: words instead of subword pieces")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        settings = DecodeSettings(args.beam_size, args.alpha, args.max_len_a, args.max_len_b, args.max_tokens)
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
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
