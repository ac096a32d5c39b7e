"""Ahead-of-time compiling for Cloud TPU slices and NVIDIA GPUs, on a machine without them.

XLA compiles for a TPU slice or a GPU from a description of the hardware (a "topology"),
with no device attached: the executable is never run, but its memory plan, its collectives
and the compiler's own per-instruction cost estimates can be read. `experiments.aot` and the
benchmark's `targets` suite use this package:

- `catalog`: the targets by the names their users use (`v5e-8`, `v4-32`, `h100x8`), with chips,
  hosts, memory per chip and peak bf16 FLOP/s, each with its source.
- `devices`: a target's abstract devices (`jax.experimental.topologies`).
- `programs`: the runner's train step, eval step and cached sampler, built abstractly over a
  target's data mesh exactly as the runner builds them on a pod.
- `hlo`: what an optimised HLO module does per step, read from its text: loops and trip
  counts, FLOPs, collectives and the compiler's estimates weighted by the trips.
- `compiled`: compile one program for one target and report on it; the largest batch that fits.
- `report`: the Markdown and JSON reports.

The TPU and CUDA compilers come from the `targets` extra (`pip install -e '.[targets]'`).
"""
