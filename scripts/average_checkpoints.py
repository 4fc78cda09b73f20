"""`python scripts/average_checkpoints.py ARGS` = `attnmt-average ARGS` (attnmt.cli.average; --help lists the options)."""
from attnmt.cli.average import main
if __name__ == "__main__": raise SystemExit(main())
