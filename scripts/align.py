"""`python scripts/align.py ARGS` = `attnmt-align ARGS` (attnmt.cli.align; --help lists the options)."""
from attnmt.cli.align import main
if __name__ == "__main__": raise SystemExit(main())
