"""`python scripts/translate.py ARGS` = `attnmt-translate ARGS` (attnmt.cli.translate; --help lists the options)."""
from attnmt.cli.translate import main
if __name__ == "__main__": raise SystemExit(main())
