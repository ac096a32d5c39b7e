"""Memory planning: the runner's train step compiled (never run) for its peak memory.

`plan_row(model_config, image_shape, dtype, remat)` compiles `runner_step`'s train step for
one device at two per-device batch sizes, reads each executable's `memory_analysis()`
(`scan.memory_stats`: argument + output + temp - alias bytes) and fits

    peak(batch) = fixed + batch * per_image,

where `fixed` is what does not grow with the batch (parameters, optimiser state, gradients,
their temporaries) and `per_image` the activations one more image costs. The largest
per-device batch that fits a device of C GB is then `floor((usable_fraction * C - fixed) /
per_image)`. Nothing is allocated or executed: the state and the batch are abstract.

How far the numbers carry to another backend is in WORKSPACE_NOTES.md ("Memory planning"):
the buffer sizes are the program's, but buffer assignment, fusion and scheduling are the
compiling backend's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from experiments.benchmarks import runner_step, scan
from experiments.targets import catalog, compiled, devices, programs
from pixel_rnn_jax import models

CAPACITIES_GB = (16, 80, 141)  # e.g. a 16 GB TPU v5e / V100, an 80 GB A100/H100, a 141 GB H200
# (dtype, remat) variants, in the order of the table.
VARIANTS = (("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True))
# Part of a device's memory the train step may plan for: the rest is left to the runtime,
# the allocator's fragmentation and library workspaces (a choice, not a measurement). On
# GPUs JAX preallocates 75% unless XLA_PYTHON_CLIENT_MEM_FRACTION says otherwise.
USABLE_FRACTION = 0.9


def variant_config(
    model_config: ml_collections.ConfigDict, dtype: str, remat: bool
) -> ml_collections.ConfigDict:
    """A copy of `model_config` with `dtype` and `remat` set."""
    config = ml_collections.ConfigDict(model_config.to_dict())
    config.dtype = dtype
    config.remat = remat
    return config


def train_step_memory(
    model_config: ml_collections.ConfigDict, image_shape: Sequence[int], batch: int
) -> tuple[dict[str, int], float]:
    """(`scan.memory_stats` of the compiled train step at per-device `batch`, compile s)."""
    model = models.build_model(model_config)
    step, state, images, key = runner_step.abstract_runner_train_step(
        model, model_config.num_levels, (batch, *image_shape)
    )
    start = time.perf_counter()
    compiled = step.lower(state, images, key).compile()
    seconds = time.perf_counter() - start
    stats = scan.memory_stats(compiled)
    if stats is None:
        raise RuntimeError(f"{jax.default_backend()} gives no memory_analysis().")
    return stats, seconds


def largest_batch(fixed: float, per_image: float, capacity_gb: float, usable: float) -> int:
    """The largest per-device batch with `fixed + batch * per_image <= usable * capacity`."""
    room = usable * capacity_gb * 1e9 - fixed
    if room < per_image or per_image <= 0:
        return 0
    return int(math.floor(room / per_image))


def checked_batches(batches: Sequence[int]) -> tuple[int, int]:
    """A fit's two per-device batches `(small, large)`; ValueError unless 0 < small < large."""
    small, large = batches
    if not 0 < small < large:
        raise ValueError(f"batches must be two increasing positive sizes, got {tuple(batches)}.")
    return small, large


def linear_fit(batches: Sequence[int], peaks: Sequence[float]) -> tuple[float, float]:
    """`(fixed, per_image)` through the two points `(batch, peak bytes)` (module docstring)."""
    (small, large), (low, high) = checked_batches(batches), peaks
    per_image = (high - low) / (large - small)
    return low - small * per_image, per_image


def plan_row(
    model_config: ml_collections.ConfigDict,
    image_shape: Sequence[int],
    dtype: str,
    remat: bool,
    *,
    batches: tuple[int, int] = (1, 2),
    capacities_gb: Sequence[float] = CAPACITIES_GB,
    usable_fraction: float = USABLE_FRACTION,
) -> dict[str, Any]:
    """One row of the memory plan (see the module docstring).

    Returns:
      {'dtype', 'remat', 'image', 'batches', 'peak_bytes' (at each batch), 'fixed_bytes',
      'per_image_bytes', 'largest_batch' ({capacity GB: batch}), 'compile_s' (total)}.
    """
    checked_batches(batches)  # bad batches fail before anything compiles
    config = variant_config(model_config, dtype, remat)
    peaks, compile_s = [], 0.0
    for batch in batches:
        stats, seconds = train_step_memory(config, image_shape, batch)
        peaks.append(stats["peak_bytes"])
        compile_s += seconds
    fixed, per_image = linear_fit(batches, peaks)
    return {
        "dtype": dtype,
        "remat": remat,
        "image": "x".join(map(str, image_shape)),
        "batches": list(batches),
        "peak_bytes": peaks,
        "fixed_bytes": fixed,
        "per_image_bytes": per_image,
        "usable_fraction": usable_fraction,
        "largest_batch": {
            str(c): largest_batch(fixed, per_image, c, usable_fraction) for c in capacities_gb
        },
        "compile_s": compile_s,
    }


def target_plan(
    experiment_config: ml_collections.ConfigDict,
    dtype: str,
    remat: bool,
    target_name: str,
    *,
    batches: tuple[int, int] = (8, 16),
    usable_fraction: float = USABLE_FRACTION,
    cache_dir=None,
) -> dict[str, Any]:
    """The same fit from the train step compiled for one chip of a target (`experiments.aot`'s
    programs: the target's own buffer assignment, and `model.schedule='auto'` resolved for it).

    Returns:
      {'target', 'schedule', 'fixed_bytes', 'per_image_bytes', 'memory_bytes',
      'largest_batch' (by the fit, in the target's usable memory), 'compile_s'}.
    """
    checked_batches(batches)  # bad batches fail before anything compiles
    target = catalog.parse(target_name)
    config = ml_collections.ConfigDict(experiment_config.to_dict())
    config.model = variant_config(config.model, dtype, remat)
    found = devices.target_devices(target)
    analyses = []
    for batch in batches:
        (step,) = programs.build(config, target, found[:1], batch, which=["train_step"])
        analyses.append(compiled.analyse(step, target, batch, cache_dir=cache_dir))
    a, b = analyses
    fixed, per_image = linear_fit(batches, (a.peak_bytes, b.peak_bytes))
    usable_gb = target.memory_bytes / 1e9
    return {
        "target": target.name,
        "schedule": programs.model_config_for(config.model, target.platform).schedule,
        "fixed_bytes": fixed,
        "per_image_bytes": per_image,
        "memory_bytes": target.memory_bytes,
        "largest_batch": largest_batch(fixed, per_image, usable_gb, usable_fraction),
        "compile_s": a.compile_seconds + b.compile_seconds,
    }


def markdown(
    rows: Sequence[dict[str, Any]], capacities_gb=CAPACITIES_GB, targets: Sequence[str] = ()
) -> str:
    """The plan as a Markdown table (one line per config and variant), with each target's
    columns (`target_plan`) after the CPU-derived ones."""
    names = ["config", "image", "dtype", "remat", "fixed MiB", "MiB per image"]
    names += [f"batch in {c:g} GB" for c in capacities_gb] + ["compile s"]
    for target in targets:
        names += [f"{target}: fixed MiB", f"{target}: MiB per image", f"{target}: batch"]
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        if "error" in row:
            cells = [row["config"], row.get("image", ""), row["dtype"], str(row["remat"])]
            cells += [row["error"]] + [""] * (len(names) - 5)
        else:
            cells = [
                row["config"],
                row["image"],
                row["dtype"],
                "yes" if row["remat"] else "no",
                f"{row['fixed_bytes'] / 2**20:.0f}",
                f"{row['per_image_bytes'] / 2**20:.1f}",
                *(f"{row['largest_batch'][str(c)]:,}" for c in capacities_gb),
                f"{row['compile_s']:.1f}",
            ]
            for target in targets:
                plan = row.get("targets", {}).get(target)
                if plan is None or "error" in plan:
                    cells += [plan["error"] if plan else "", "", ""]
                    continue
                cells += [
                    f"{plan['fixed_bytes'] / 2**20:.0f}",
                    f"{plan['per_image_bytes'] / 2**20:.1f}",
                    f"{plan['largest_batch']:,} ({plan['schedule']})",
                ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# XLA:CPU expands (removes) the optimization barriers that `jax.checkpoint` puts around a
# rematerialised unit's inputs, and common-subexpression elimination then merges the
# recomputation with the forward pass: remat saves no memory there (WORKSPACE_NOTES.md,
# "Memory planning"). GPU and TPU keep the barriers. Disabling that one pass makes a CPU
# program keep them too, so that CPU memory analysis and CPU runs see what remat does.
XLA_CPU_KEEP_REMAT_BARRIERS = "--xla_disable_hlo_passes=cse_barrier_expander"


def keep_remat_barriers(environ=None) -> None:
    """Adds `XLA_CPU_KEEP_REMAT_BARRIERS` to XLA_FLAGS; call before JAX starts a backend."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if "cse_barrier_expander" not in flags:
        environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_KEEP_REMAT_BARRIERS}".strip()
