"""Average the weights of several checkpoints of one run (usually the last N step checkpoints).

    python scripts/average_checkpoints.py RUN_DIR                    # last 5 step<N>.ckpt -> RUN_DIR/checkpoints/averaged.ckpt
    python scripts/average_checkpoints.py RUN_DIR --last 3 -o avg3.ckpt
    python scripts/average_checkpoints.py a.ckpt b.ckpt c.ckpt -o avg.ckpt

Step checkpoints come from training with callbacks.step_checkpoints.keep=N (every
callbacks.step_checkpoints.every_n_train_steps updates). The output is a training checkpoint
without optimizer state: evaluate it with `python scripts/evaluate.py <output>`.
Mistakes a user can fix print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnmt.averaging import average_checkpoints, step_checkpoints
from attnmt.errors import ConfigError, UserError, report_user_error


def inputs(paths: list[str], last: int) -> tuple[list[Path], Path | None]:
    """The checkpoints to average and the run's checkpoints/ folder (None for explicit files)."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Average the weights of checkpoints of one run.")
    parser.add_argument("paths", nargs="+", help="a run folder (its last --last step checkpoints) or .ckpt files")
    parser.add_argument("--last", type=int, default=5, help="with a run folder: how many of the latest step checkpoints")
    parser.add_argument("-o", "--output", help="output .ckpt (default: <run>/checkpoints/averaged.ckpt)")
    args = parser.parse_args(argv)
    try:
        if args.last < 1:
            raise ConfigError(f"--last {args.last}: must be at least 1")
        paths, folder = inputs(args.paths, args.last)
        if args.output is None and folder is None:
            raise ConfigError("give -o/--output when averaging explicit .ckpt files")
        output = average_checkpoints(paths, args.output or folder / "averaged.ckpt")
    except UserError as error:
        report_user_error(error)
        return 2
    print(f"averaged {len(paths)} checkpoints -> {output}")
    for path in paths:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
