"""Thin command-line entry points (train, evaluate, sample) and the named configs."""
