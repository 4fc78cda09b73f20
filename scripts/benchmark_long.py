"""Full vs sliding-window self-attention on long inputs: time and peak memory per length.

    python scripts/benchmark_long.py --lengths 256,512,1024,2048,4096,8192 --windows 32 --threads 2
    python scripts/benchmark_long.py --device cuda --lengths 1024,4096,16384 --windows 64,256 --batch 8

The Transformer preset's encoder (3 layers, d_model 256) runs forward + backward once per length
and attention (src/attnmt/benchmark_long.py); a table on stdout, JSON with --output.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _numbers(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive integers")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=_numbers, default=[256, 512, 1024, 2048, 4096], help="source lengths")
    parser.add_argument("--windows", type=_numbers, default=[32], help="window half-widths to compare with full attention")
    parser.add_argument("--batch", type=int, default=1, help="sequences per batch")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=2, help="timed forward+backward passes per point (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    parser.add_argument("--output", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device on this machine", file=sys.stderr)
        return 2
    if args.batch < 1 or args.repeats < 1:
        print("error: --batch and --repeats must be at least 1", file=sys.stderr)
        return 2
    from attnmt.benchmark_long import format_table, run

    report = run(args.lengths, args.windows, args.batch, args.device, args.repeats, args.threads)
    print(format_table(report))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
