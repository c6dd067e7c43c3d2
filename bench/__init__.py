"""Benchmarks behind docs/BENCHMARKS.md; run them with `make bench` (python -m bench.run)."""
