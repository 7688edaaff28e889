"""``python -m bench``: every benchmark, written to docs/benchmarks.md (see bench/run_all.py)."""

from bench.run_all import main

main()
