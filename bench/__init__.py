"""Benchmarks and fault drills: each ``bench/<name>.py`` is one command printing a table and
writing ``bench/results/<name>.json``. See docs/benchmarks.md."""
