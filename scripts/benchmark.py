"""`python scripts/benchmark.py ARGS` = `attnmt-benchmark ARGS` (attnmt.cli.benchmark; --help lists the options)."""
from attnmt.cli.benchmark import main
if __name__ == "__main__": raise SystemExit(main())
