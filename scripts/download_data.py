"""`python scripts/download_data.py ARGS` = `attnmt-download ARGS` (attnmt.cli.download; --help lists the options)."""
from attnmt.cli.download import main
if __name__ == "__main__": raise SystemExit(main())
