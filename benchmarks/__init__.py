"""Benchmarks: each runs as `python -m benchmarks.NAME` from the repository root."""
