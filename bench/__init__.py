"""Benchmarks: they print figures (and one `BENCH_JSON` line each for `bench.report`); none passes or fails on time."""
