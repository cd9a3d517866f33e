"""Benchmarks of lslo: each writes JSON next to benchmarks/RESULTS.md and renders its section."""
