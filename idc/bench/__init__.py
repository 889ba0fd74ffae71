"""Benchmarks (`make bench`): each section module has `run(quick: bool) -> str` (markdown)."""
