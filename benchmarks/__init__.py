"""Benchmarks for rotabot: `python -m benchmarks` runs every scenario and writes RESULTS.md."""
