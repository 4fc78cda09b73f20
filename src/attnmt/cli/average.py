"""attnmt-average (python scripts/average_checkpoints.py): average the weights of several checkpoints
of one run (usually the last N step checkpoints).

    attnmt-average RUN_DIR                    # last 5 step<N>.ckpt -> RUN_DIR/checkpoints/averaged.ckpt
    attnmt-average RUN_DIR --last 3 -o avg3.ckpt
    attnmt-average a.ckpt b.ckpt c.ckpt -o avg.ckpt

Step checkpoints come from training with callbacks.step_checkpoints.keep=N (every
callbacks.step_checkpoints.every_n_train_steps updates). The output is a training checkpoint
without optimizer state: evaluate it with `attnmt-evaluate <output>`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnmt.cli import command
from attnmt.errors import ConfigError


def inputs(paths: list[str], last: int) -> tuple[list[Path], Path | None]:
    """The checkpoints to average and the run's checkpoints/ folder (None for explicit files)."""
    from attnmt.averaging import step_checkpoints

    if len(paths) == 1 and Path(paths[0]).is_dir():
        folder = Path(paths[0]) / "checkpoints"
        found = step_checkpoints(folder)
        if not found:
            raise ConfigError(
                f"{folder} holds no step<N>.ckpt files: train with callbacks.step_checkpoints.keep=N "
                "(and every_n_train_steps) to keep them, or give .ckpt files"
            )
        return found[-last:], folder
    return [Path(p) for p in paths], None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnmt-average", description="Average the weights of checkpoints of one run.")
    parser.add_argument("paths", nargs="+", help="a run folder (its last --last step checkpoints) or .ckpt files")
    parser.add_argument("--last", type=int, default=5, help="with a run folder: how many of the latest step checkpoints")
    parser.add_argument("-o", "--output", help="output .ckpt (default: <run>/checkpoints/averaged.ckpt)")
    return parser.parse_args(argv)


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from attnmt.averaging import average_checkpoints

    if args.last < 1:
        raise ConfigError(f"--last {args.last}: must be at least 1")
    paths, folder = inputs(args.paths, args.last)
    if args.output is None and folder is None:
        raise ConfigError("give -o/--output when averaging explicit .ckpt files")
    output = average_checkpoints(paths, args.output or folder / "averaged.ckpt")
    print(f"averaged {len(paths)} checkpoints -> {output}")
    for path in paths:
        print(f"  {path}")
    return 0
