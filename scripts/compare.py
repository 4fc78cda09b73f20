"""`python scripts/compare.py ARGS` = `attnmt-compare ARGS` (attnmt.cli.compare; --help lists the options)."""
from attnmt.cli.compare import main
if __name__ == "__main__": raise SystemExit(main())
