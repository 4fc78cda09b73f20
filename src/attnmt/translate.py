"""Translate text with any checkpoint: length-sorted batches, beam or greedy search, input order kept.

    python scripts/translate.py RUN_OR_CKPT < input.en > output.fr
    python scripts/translate.py CKPT --input input.en --output output.fr --beam-size 1
    python scripts/translate.py CKPT --attention < input.en 2> attention.txt

One output line per input line, in input order; an empty input line gives an empty output line.
A line longer than --max-src-tokens subwords is cut there (a warning on stderr names the line).
--attention writes, after each translation, its cross-attention matrix (last layer, mean of the
heads) to stderr as a table: one column per source token, one row per output token. It goes to
stderr so that stdout stays one translation per line, ready for a pipe or sacreBLEU.

`decode_ids` is the batching and search shared with evaluate.py: the same sentences with the same
settings give the same outputs in both.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from attnmt.cpu_memory import retain_freed_memory
from attnmt.data.batching import TokenBucketSampler, pad_sources
from attnmt.data.vocab import EOS_PIECE
from attnmt.errors import CheckpointError, ConfigError, DataError, UserError
from attnmt.search import Hypothesis, decode_batch


@dataclass(frozen=True)
class DecodeSettings:
    """How to search; beam_size 1 is greedy search (alpha unused then)."""

    beam_size: int = 5
    alpha: float = 0.6
    max_len_a: float = 1.5
    max_len_b: float = 10
    max_tokens: int = 4096  # source tokens per batch, padding and EOS included (beam search multiplies it by beam_size)

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ConfigError(f"--beam-size {self.beam_size}: must be at least 1 (1 = greedy search)")
        if self.max_tokens < 1:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be a positive number of tokens")

    @property
    def name(self) -> str:
        """Short label used in file names and metrics keys: "greedy" or "beam<K>"."""
        return "greedy" if self.beam_size == 1 else f"beam{self.beam_size}"


def pick_device(name: str = "auto") -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return torch.device(name)


def load_model(path: str | Path, device: torch.device):
    """A .ckpt file -> (model in eval mode on `device`, tokenizer, hparams)."""
    from attnmt.checkpoint import load_for_inference

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: give a .ckpt file (e.g. {path}/checkpoints/last.ckpt)")
    model, tokenizer, hparams = load_for_inference(path, map_location="cpu")
    if device.type == "cpu":
        retain_freed_memory()  # beam search's per-step tensors reuse memory (attnmt/cpu_memory.py)
    return model.to(device).eval(), tokenizer, hparams


def decode_ids(
    model,
    sequences: Sequence[Sequence[int]],
    settings: DecodeSettings,
    device: torch.device,
    need_attention: bool = True,
) -> list[Hypothesis | None]:
    """Decode source id lists (no EOS) -> the best hypothesis of each, in input order.

    Empty sequences are not decoded (None). The others go through the token-bucket sampler in
    evaluation order (longest first, at most settings.max_tokens source tokens per batch), so
    padding stays low and the same input always forms the same batches.
    """
    results: list[Hypothesis | None] = [None] * len(sequences)
    kept = [i for i, ids in enumerate(sequences) if len(ids) > 0]
    if not kept:
        return results
    lengths = np.array([len(sequences[i]) + 1 for i in kept], dtype=np.int64)  # + EOS
    sampler = TokenBucketSampler(lengths, lengths, settings.max_tokens, shuffle=False, even=False)
    for batch in sampler.batches():
        src, src_mask = pad_sources([sequences[kept[j]] for j in batch], device)
        found = decode_batch(
            model, src, src_mask, beam_size=settings.beam_size, alpha=settings.alpha,
            max_len_a=settings.max_len_a, max_len_b=settings.max_len_b, need_attention=need_attention,
        )
        for j, nbest in zip(batch, found):
            results[kept[j]] = nbest[0]
    return results


@dataclass
class Translation:
    """One input line and its translation.

    src_tokens / tgt_tokens label the attention map: source pieces + "</s>" (what the model read),
    output pieces incl. "</s>" when the model ended the output (hypothesis.output_ids).
    """

    line_number: int  # 1-based, in the input
    source: str
    text: str
    hypothesis: Hypothesis | None = field(default=None, repr=False)  # None for an empty line
    src_tokens: list[str] = field(default_factory=list)
    tgt_tokens: list[str] = field(default_factory=list)
    truncated_from: int | None = None  # subword count before truncation, when the line was cut


def translate_lines(
    model,
    tokenizer,
    lines: Sequence[str],
    settings: DecodeSettings,
    device: torch.device,
    max_src_tokens: int | None = 256,
    need_attention: bool = False,
    first_line_number: int = 1,
) -> list[Translation]:
    """Translate sentences (one per item) -> one Translation per item, same order."""
    if max_src_tokens is not None and max_src_tokens < 1:
        raise ConfigError(f"--max-src-tokens {max_src_tokens}: must be at least 1")
    stripped = [line.strip() for line in lines]
    encoded = tokenizer.encode_src(stripped)
    sequences, cut_from = [], []
    for ids in encoded:
        too_long = max_src_tokens is not None and len(ids) > max_src_tokens
        sequences.append(ids[:max_src_tokens] if too_long else ids)
        cut_from.append(len(ids) if too_long else None)
    hypotheses = decode_ids(model, sequences, settings, device, need_attention)
    texts = tokenizer.decode_tgt([h.tokens if h is not None else [] for h in hypotheses])
    results = []
    for offset, (source, ids, hyp, text, cut) in enumerate(zip(stripped, sequences, hypotheses, texts, cut_from)):
        translation = Translation(first_line_number + offset, source, text if hyp is not None else "", hyp, truncated_from=cut)
        if hyp is not None:
            translation.src_tokens = tokenizer.src_pieces_from_ids(ids) + [EOS_PIECE]
            translation.tgt_tokens = tokenizer.tgt_pieces_from_ids(hyp.output_ids)
        results.append(translation)
    return results


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


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder -> its best checkpoint (checkpoints/best-*.ckpt), else last.ckpt."""
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist: give a .ckpt file or a run folder (outputs/<task>/<date>_<time>)")
    folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    best = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime)
    if len(best) > 1:  # save_top_k > 1: the run's summary names the best one
        summary = folder.parent / "train_metrics.json"
        named = json.loads(summary.read_text()).get("best_checkpoint") if summary.is_file() else None
        best = [p for p in best if named and p.name == Path(named).name] or best
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise CheckpointError(f"no checkpoint in {folder}: expected best-*.ckpt or last.ckpt (did the run save any?)")


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
