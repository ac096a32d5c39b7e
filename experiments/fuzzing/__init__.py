"""Fuzz targets of the readers of outside bytes, for `experiments.fuzz` (tooling only)."""
