"""`python scripts/data_report.py ARGS` = `attnmt-data-report ARGS` (attnmt.cli.data_report; --help lists the options)."""
from attnmt.cli.data_report import main
if __name__ == "__main__": raise SystemExit(main())
