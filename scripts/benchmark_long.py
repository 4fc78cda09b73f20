"""`python scripts/benchmark_long.py ARGS` = `attnmt-benchmark-long ARGS` (attnmt.cli.benchmark_long; --help lists the options)."""
from attnmt.cli.benchmark_long import main
if __name__ == "__main__": raise SystemExit(main())
