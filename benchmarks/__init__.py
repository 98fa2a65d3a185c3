"""Benchmark scripts and what they share (timing helpers, the published reference
loops); run from the repository root as ``python -m benchmarks.<script>``. Not installed."""
