"""`python scripts/evaluate.py ARGS` = `attnmt-evaluate ARGS` (attnmt.cli.evaluate; --help lists the options)."""
from attnmt.cli.evaluate import main
if __name__ == "__main__": raise SystemExit(main())
