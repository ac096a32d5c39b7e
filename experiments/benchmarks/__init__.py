"""Benchmarks and the profiler: outside the installed library, timing the runner's own step.

- `runner_step`: the runner's compiled train step (`train.make_train_step`: clipping,
  metrics, `shard_map`) with its inputs placed as the runner places them.
- `scan`: scan vs unrolled recurrences, forward and train step.
- `sampling`: naive vs cached sampling.
- `devices`: the data-parallel train step over 1..N devices, one child process each.
- `profiling`: where a train step's time goes, per XLA operation.
"""
