"""The estimated step time: the compiler's own estimates plus the costs they leave out.

    estimated step = compiler's estimate of the work + assumed overheads

The compiler's per-instruction estimates (TPU `estimated_cycles`, GPU `exec_time_us`; every
loop body weighted by its trips: `hlo.summarize`) leave out what every launched op and every
loop trip costs beyond its work. Those costs are what the schedules and unroll factors
change, so they are modelled explicitly with the assumed costs in `OVERHEAD_S`: a choice, to
be recalibrated by the accelerator suite on a lent device, which prints this estimate beside
each measured row (WORKSPACE_NOTES.md, "Compiled for TPUs and GPUs", says how).
"""

from __future__ import annotations

import math
from typing import Any

from experiments.targets import catalog, hlo

# Assumed costs the compiler's estimates leave out (seconds), per platform:
# - 'launch': each launched op (a fusion, a library call, a copy, a collective). On a GPU a
#   kernel launch from the host costs a few microseconds when the step is launch-bound
#   (no CUDA graph); a TPU's sequencer issues ops from on-chip instruction memory.
# - 'trip': each loop iteration's control. On a GPU a while loop's condition is copied to the
#   host and waited for every trip; on a TPU the loop runs on the chip's scalar unit.
OVERHEAD_S = {
    "gpu": {"launch": 3e-6, "trip": 10e-6},
    "tpu": {"launch": 0.2e-6, "trip": 1e-6},
}
# Compile options that make the GPU compiler write its per-fusion estimates into the HLO.
GPU_COMPILER_OPTIONS = {"xla_gpu_collect_cost_model_stats": True}


def overhead_seconds(summary: hlo.HloSummary, platform: str) -> float:
    """The assumed launch and loop costs of one call of the summarised program."""
    costs = OVERHEAD_S[platform]
    return costs["launch"] * summary.launched_ops + costs["trip"] * summary.loop_trips


def executable_estimate(executable: Any, device: Any) -> dict[str, float] | None:
    """The estimate of one call of a program compiled for `device`, with its parts:
    {'compiler_s', 'launched_ops', 'loop_trips', 'overhead_s', 'estimated_s'}.

    None on a CPU, or where the compiler wrote no estimates (a GPU program compiled without
    `GPU_COMPILER_OPTIONS`). The parts are what recalibrating `OVERHEAD_S` fits:
    measured - compiler_s against launched_ops and loop_trips.
    """
    platform = "gpu" if device.platform in ("gpu", "cuda", "rocm") else device.platform
    if platform not in OVERHEAD_S:
        return None
    chip = catalog.chip_for_device_kind(device.device_kind)
    clock = chip.clock_hz if chip else None
    summary = hlo.summarize(executable.as_text(), platform=platform, clock_hz=clock)
    if summary.estimated_ops == 0 or math.isnan(summary.estimated_seconds):
        return None
    overhead = overhead_seconds(summary, platform)
    return {
        "compiler_s": summary.estimated_seconds,
        "launched_ops": summary.launched_ops,
        "loop_trips": summary.loop_trips,
        "overhead_s": overhead,
        "estimated_s": summary.estimated_seconds + overhead,
    }
