"""attnmt-benchmark-long (python scripts/benchmark_long.py): full vs sliding-window self-attention on
long inputs: time and peak memory per length.

    attnmt-benchmark-long --lengths 256,512,1024,2048,4096,8192 --windows 32 --threads 2
    attnmt-benchmark-long --device cuda --lengths 1024,4096,16384 --windows 64,256 --batch 8

The Transformer preset's encoder (3 layers, d_model 256) runs forward + backward once per length
and attention (attnmt.benchmark_long); a table on stdout, JSON with --output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnmt.cli import command
from attnmt.errors import ConfigError


def _numbers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-benchmark-long", description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=_numbers, default=[256, 512, 1024, 2048, 4096], help="source lengths")
    parser.add_argument("--windows", type=_numbers, default=[32], help="window half-widths to compare with full attention")
    parser.add_argument("--batch", type=int, default=1, help="sequences per batch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2, help="timed forward+backward passes per point (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device on this machine")
    if args.batch < 1 or args.repeats < 1:
        raise ConfigError("--batch and --repeats must be at least 1")
    from attnmt.benchmark_long import format_table, run

    report = run(args.lengths, args.windows, args.batch, args.device, args.repeats, args.threads)
    print(format_table(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0
