"""The command-line convention: every console command is `main(argv=None) -> int` in attnmt.cli.<name>.

    attnmt-translate, attnmt-evaluate, attnmt-compare, attnmt-average, attnmt-benchmark,
    attnmt-benchmark-long, attnmt-data-report, attnmt-download, attnmt-align   ([project.scripts])
    python scripts/<name>.py ...   the same commands (two-line shims), from a checkout
    python train.py ...            training (Hydra); its errors go through the same reporter

`command` wraps each main: a mistake the user can fix (errors.UserError, a `???` left unset, a
Hydra override or composition error) prints exactly one `error: ...` line on stderr and returns
exit code 2; anything else is a bug and keeps its traceback. argparse's own usage errors also
exit with code 2. Modules here import little at the top, so `--help` and argument errors are fast.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from attnmt.errors import report_user_error

Main = Callable[[list[str] | None], int]


def command(function: Callable[[list[str] | None], int | None]) -> Main:
    """Decorate a command's body: main(argv=None) -> exit code (0, or 2 for the user's mistake)."""

    @functools.wraps(function)
    def main(argv: list[str] | None = None) -> int:
        try:
            return function(argv) or 0
        except Exception as error:  # a bug is raised again by report_user_error, traceback intact
            report_user_error(error)
            return 2

    return main


def setup_logging(level: int = logging.INFO) -> None:
    """Messages only (no logger names or times), as every command prints them."""
    logging.basicConfig(level=level, format="%(message)s")


def add_decode_options(parser, several_beams: bool = False) -> None:
    """--beam-size, --alpha, --max-len-a/-b, --max-tokens with attnmt.inference.DecodeSettings' defaults."""
    from attnmt.inference import DecodeSettings

    default = DecodeSettings()
    group = parser.add_argument_group("decoding")
    if several_beams:
        group.add_argument("--beam-size", type=int, nargs="+", default=[default.beam_size],
                           help=f"one or more beam sizes, each decoded and recorded separately; 1 = greedy "
                                f"(default {default.beam_size})")
    else:
        group.add_argument("--beam-size", type=int, default=default.beam_size,
                           help=f"beams; 1 = greedy search (default {default.beam_size})")
    group.add_argument("--alpha", type=float, default=default.alpha,
                       help=f"length penalty exponent for beam search (default {default.alpha})")
    group.add_argument("--max-len-a", type=float, default=default.max_len_a,
                       help=f"max output length = a * source length + b (default {default.max_len_a})")
    group.add_argument("--max-len-b", type=float, default=default.max_len_b, help=f"see --max-len-a (default {default.max_len_b:g})")
    group.add_argument("--max-tokens", type=int, default=default.max_tokens,
                       help=f"source tokens per batch, padding included (default {default.max_tokens})")


def decode_settings(args):
    """The DecodeSettings of add_decode_options' arguments (the first --beam-size when several)."""
    from attnmt.inference import DecodeSettings

    beam = args.beam_size[0] if isinstance(args.beam_size, list) else args.beam_size
    return DecodeSettings(beam_size=beam, alpha=args.alpha, max_len_a=args.max_len_a, max_len_b=args.max_len_b,
                          max_tokens=args.max_tokens)
