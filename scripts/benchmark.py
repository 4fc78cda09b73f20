"""Training and decoding speed of the model presets on Multi30k: a table on stdout, JSON with --output.

    python scripts/benchmark.py                                   # transformer, bahdanau, luong on cuda if present, else cpu
    python scripts/benchmark.py --device cpu --threads 2 --output bench.json
    python scripts/benchmark.py --device cuda --precision bf16-mixed --max-tokens 16384
    python scripts/benchmark.py --families transformer --checkpoint transformer=outputs/train/<run>/checkpoints/last.ckpt

Per family and device: target tokens/s, ms/step and peak memory of a plain PyTorch loop (`model`)
and of the real Lightning training path (`lightning`), then greedy and beam-search sentences/s on
the first validation sentences. Extra Hydra overrides go after `--`, e.g. `-- data.num_workers=2`.
Mistakes a user can fix print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from pathlib import Path

from attnmt.errors import UserError


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", type=_names, default=("transformer", "bahdanau", "luong"),
                        help="comma-separated configs/model/ names (default: transformer,bahdanau,luong)")
    parser.add_argument("--device", type=_names, default=("auto",), help="cpu, cuda, auto or a list such as cpu,cuda")
    parser.add_argument("--modes", type=_names, default=("model", "lightning"), help="model, lightning or both")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per family and mode")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each mode this often, interleaved, and report the median (shared machines drift)")
    parser.add_argument("--max-tokens", type=int, default=4096, help="tokens per training batch, padding included")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's choice)")
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed"], help="bf16-mixed: bf16 autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile the Transformer (no effect on RNNs)")
    parser.add_argument("--no-retain-memory", action="store_true",
                        help="keep glibc's malloc defaults (training reuses freed memory: see attnmt/cpu_memory.py)")
    parser.add_argument("--decode-sentences", type=int, default=200, help="first N val sentences decoded (0: skip)")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FAMILY=PATH",
                        help="decode with this trained checkpoint's weights (repeatable)")
    parser.add_argument("--output", type=Path, default=None, help="write the full report as JSON here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every family (after --)")
    return parser.parse_args(argv)


def user_error(error: BaseException) -> BaseException | None:
    """The user's mistake behind `error`: a UserError (Hydra wraps those raised by constructors)
    or a Hydra override/composition error (a wrong key or group after --); None for a bug."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (UserError, ConfigCompositionException, OverrideParseException)):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def main(argv: list[str] | None = None, quiet: bool = False) -> int:
    args = parse_args(argv)
    from attnmt.benchmark import Settings, format_table, run  # after argument errors: torch imports take seconds

    if quiet:  # Lightning's start-up chatter would bury the table (its import set these levels: set them after)
        for name in ("lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="lightning")
        warnings.filterwarnings("ignore", message=".*(LeafSpec|val_check_interval|num_workers).*")

    checkpoints = {}
    for item in args.checkpoint:
        family, _, path = item.partition("=")
        if not path:
            print(f"error: --checkpoint {item!r}: expected FAMILY=PATH", file=sys.stderr)
            return 2
        checkpoints[family] = path
    settings = Settings(
        families=args.families, devices=args.device, modes=args.modes, steps=args.steps, warmup=args.warmup,
        repeats=args.repeats, max_tokens=args.max_tokens, threads=args.threads, precision=args.precision,
        compile=args.compile, retain_memory=not args.no_retain_memory, decode_sentences=args.decode_sentences,
        beam_size=args.beam_size, checkpoints=checkpoints, overrides=tuple(args.overrides),
    )
    def save(report: dict) -> None:  # after every family: a run cut short keeps what it measured
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n")

    try:
        report = run(settings, progress=save)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise  # a bug: keep the traceback
        print(f"error: {' '.join(str(cause).split())}", file=sys.stderr)
        return 2
    save(report)
    print(format_table(report))
    if args.output is not None:
        print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(quiet=True))
