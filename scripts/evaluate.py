"""Command line of attnmt.evaluate (run `python scripts/evaluate.py --help`); works from any directory."""

from __future__ import annotations

import sys

from attnmt.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
