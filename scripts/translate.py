"""Command line of attnmt.translate (run `python scripts/translate.py --help`); works from any directory."""

from __future__ import annotations

import sys

from attnmt.translate import main

if __name__ == "__main__":
    sys.exit(main())
