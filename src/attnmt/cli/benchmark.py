"""attnmt-benchmark (python scripts/benchmark.py): training and decoding speed of the model presets
on Multi30k: a table on stdout, JSON with --output.

    attnmt-benchmark                                   # transformer, bahdanau, luong on cuda if present, else cpu
    attnmt-benchmark --device cpu --threads 2 --output bench.json
    attnmt-benchmark --device cuda --precision bf16-mixed --max-tokens 16384
    attnmt-benchmark --families transformer --checkpoint transformer=outputs/train/<run>/checkpoints/last.ckpt
    attnmt-benchmark --reference scripts/benchmark_reference.json   # + ratios to another toolkit's figures

Per family and device: target tokens/s, ms/step and peak memory of a plain PyTorch loop (`model`)
and of the real Lightning training path (`lightning`), then greedy and beam-search sentences/s on
the first validation sentences. Extra Hydra overrides go after `--`, e.g. `-- data.num_workers=2`.
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

from attnmt.cli import command
from attnmt.errors import ConfigError


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-benchmark", description=__doc__.splitlines()[0])
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
    parser.add_argument("--beam-size", type=int, default=None,
                        help="beams of the beam-search pass (default: attnmt.inference.DecodeSettings')")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="FAMILY=PATH",
                        help="decode with this trained checkpoint's weights (repeatable)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="JSON of reference tokens/s (and target ratios) per <transformer|rnn>/<device>: "
                             "adds the ratio column (e.g. scripts/benchmark_reference.json)")
    parser.add_argument("--output", type=Path, default=None, help="write the full report as JSON here")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every family (after --)")
    return parser.parse_args(argv)


def _quiet_lightning() -> None:
    """Lightning's start-up chatter would bury the table (its import set these levels: set them after)."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*(LeafSpec|val_check_interval|num_workers).*")


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    checkpoints = {}
    for item in args.checkpoint:
        family, _, path = item.partition("=")
        if not path:
            raise ConfigError(f"--checkpoint {item!r}: expected FAMILY=PATH")
        checkpoints[family] = path
    from attnmt.benchmark import Settings, format_table, read_references, run  # after argument errors: torch imports take seconds

    _quiet_lightning()
    references = read_references(args.reference) if args.reference is not None else {}
    beam = {} if args.beam_size is None else {"beam_size": args.beam_size}
    settings = Settings(
        families=args.families, devices=args.device, modes=args.modes, steps=args.steps, warmup=args.warmup,
        repeats=args.repeats, max_tokens=args.max_tokens, threads=args.threads, precision=args.precision,
        compile=args.compile, retain_memory=not args.no_retain_memory, decode_sentences=args.decode_sentences,
        checkpoints=checkpoints, overrides=tuple(args.overrides), references=references, **beam,
    )

    def save(report: dict) -> None:  # after every family: a run cut short keeps what it measured
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n")

    report = run(settings, progress=save)
    save(report)
    print(format_table(report))
    if args.output is not None:
        print(f"\nwrote {args.output}")
    return 0
