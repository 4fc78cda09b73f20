"""Translate text with any checkpoint: length-sorted batches, beam or greedy search, input order kept.

    attnmt-translate RUN_OR_CKPT < input.en > output.fr        (or python scripts/translate.py ...)
    attnmt-translate CKPT --input input.en --output output.fr --beam-size 1
    attnmt-translate CKPT --attention < input.en 2> attention.txt

The command line is attnmt.cli.translate; this module holds what it streams with.

One output line per input line, in input order; an empty input line gives an empty output line.
A line longer than --max-src-tokens subwords is cut there (a warning on stderr names the line).
--attention writes, after each translation, its cross-attention matrix (last layer, mean of the
heads) to stderr as a table: one column per source token, one row per output token. It goes to
stderr so that stdout stays one translation per line, ready for a pipe or sacreBLEU.

Loading and decoding come from attnmt.inference, shared with evaluate, compare and benchmark: the
same sentences with the same settings give the same outputs in all of them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import torch

from attnmt.inference import DecodeSettings, Translation, translate_lines


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
