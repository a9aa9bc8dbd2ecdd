"""Benchmark scripts (run with `python -m benchmarks.bench_<topic>`); results/ holds recorded figures."""
