"""The targets suite: scan vs unrolled recurrences on TPU slices and GPUs, compiled here.

`python -m experiments.benchmark --suite=targets --targets=v5e-8,v4-32,h100x8` compiles the
runner's train step (`experiments.targets.programs`) of every model kind at 28x28 (binarized
MNIST) and 32x32x3 (CIFAR-10, the paper's sizes, `scan.SIZES`) for each target, under both
schedules and each unroll, in float32 and bfloat16, and reports per row the sequential steps,
the per-chip peak memory, the compile time and the step time the compiler's cost model
estimates (`experiments.targets.compiled`). Nothing runs: every time is an estimate.

The rows are chosen to answer "which schedule and unroll should `auto` pick here" within an
hour for three targets on a 2-core CPU: unroll 1, 2, 4 and 8 everywhere, 'full' where the
unrolled program stays within `MAX_UNROLLED_STEPS` (the Row LSTM at 28x28); bfloat16 at
unroll 1 (the dtype changes the work, not the loop structure). Compiled results are cached
(`compiled.analyse`), so a rerun or a new target column costs only what is new.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from experiments.benchmarks import scan
from experiments.configs import base
from experiments.targets import catalog, compiled, estimate, programs, report
from experiments.targets import devices as target_devices

DATASETS = {28: "binarized_mnist", 32: "cifar10"}  # the dataset each size stands for
PER_CHIP_BATCH = 16  # the MNIST configs' batch; a common per-chip batch for CIFAR too
# 'full' rows only up to the scan suite's cap on unrolled steps (layers x steps): the Row
# LSTM at 28x28 (7 x 28); a fully unrolled 28x28 Diagonal BiLSTM (7 x 55 columns x 2
# directions) took 3-9 minutes per compile for a v5e.
MAX_UNROLLED_STEPS = 200


@dataclasses.dataclass(frozen=True)
class RowSpec:
    """One compile of the suite."""

    model: str
    size: int
    schedule: str  # 'throughput' or 'latency'
    unroll: Any  # int or 'full'
    dtype: str


def row_specs(
    models: Sequence[str] = scan.MODEL_NAMES,
    sizes: Sequence[int] = (28, 32),
    unrolls: Sequence[Any] = (1, 2, 4, 8, "full"),
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    schedules: Sequence[str] = ("throughput", "latency"),
) -> list[RowSpec]:
    """The suite's rows (see the module docstring for which are left out and why)."""
    rows = []
    for size in sizes:
        for model in models:
            recurrent = model in scan.RECURRENT_MODELS
            for dtype in dtypes:
                for schedule in schedules if recurrent else ("throughput",):
                    for unroll in unrolls if recurrent else (1,):
                        too_long = scan.skip_reason(
                            model, scan.SIZES[size], unroll, MAX_UNROLLED_STEPS
                        )
                        if too_long:
                            continue
                        if dtype != "float32" and unroll != 1:
                            continue
                        rows.append(RowSpec(model, size, schedule, unroll, dtype))
    return rows


def experiment_config(spec: RowSpec) -> ml_collections.ConfigDict:
    """The base experiment config with the row's model at its paper size and dataset."""
    config = base.get_config()
    config.unlock()
    config.model = scan.model_config(
        spec.model,
        scan.SIZES[spec.size],
        spec.unroll,
        dtype=spec.dtype,
        schedule=spec.schedule,
    )
    config.data.name = DATASETS[spec.size]
    return config


def run_row(
    spec: RowSpec,
    target: catalog.Target,
    *,
    per_chip_batch: int = PER_CHIP_BATCH,
    cache_dir=None,
) -> dict[str, Any]:
    """Compiles one row's train step for `target`; returns its result row."""
    devices = target_devices.target_devices(target)
    (program,) = programs.build(
        experiment_config(spec), target, devices, per_chip_batch, which=("train_step",)
    )
    analysis = compiled.analyse(program, target, per_chip_batch, cache_dir=cache_dir)
    return {
        "target": target.name,
        **dataclasses.asdict(spec),
        "unroll": str(spec.unroll),
        "per_chip_batch": per_chip_batch,
        # A program the compiler refuses is a row too: its message in the memory column.
        **(_FAILED if isinstance(analysis, compiled.CompileFailure) else {}),
        **analysis.to_json(),
    }


_FAILED = {
    "loop_trips": "",
    "hlo_loop_trips": "",
    "dependent_steps": "",
    "launched_ops": 0,
    "compile_seconds": math.nan,
    "compiler_seconds": math.nan,
    "overhead_seconds": math.nan,
    "estimated_seconds": math.nan,
}


def run_suite(
    target_names: Sequence[str],
    *,
    specs: Sequence[RowSpec] | None = None,
    per_chip_batch: int = PER_CHIP_BATCH,
    cache_dir=None,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every row for every target; returns (header fields, rows) for `benchmark.py`."""
    target_devices.prepare_environment()
    targets = [catalog.parse(name) for name in target_names]  # unknown names fail first
    for target in targets:
        target_devices.check_compiler(target.platform)
    specs = list(specs if specs is not None else row_specs())
    rows = []
    for target in targets:
        for spec in specs:
            row = run_row(spec, target, per_chip_batch=per_chip_batch, cache_dir=cache_dir)
            log(
                f"{target.name} {spec.model} {spec.size} {spec.schedule} unroll={spec.unroll} "
                f"{spec.dtype}: est. {row['estimated_seconds'] * 1e3:.2f} ms, "
                f"compile {row['compile_seconds']:.1f} s {row.get('message', '')}"
            )
            rows.append(row)
    header = {
        "title": "Scan vs unrolled recurrences per target: compiled here, estimated, not run",
        "timing": (
            "est. step ms = the compiler's per-instruction estimates (every loop body weighted "
            "by its trips) + assumed costs per launched op and per loop trip "
            f"({estimate.OVERHEAD_S}); an estimate, never a measurement"
        ),
        "memory": "peak GiB per chip from memory_analysis() of the target's executable",
        "loop_trips": "loop trips of the train step from its jaxpr / from the optimised HLO",
        "columns": COLUMNS,
        "notes": "lowest estimated step per target, model, size and dtype: "
        + "; ".join(f"{key}: {value}" for key, value in best_rows(rows).items()),
    }
    return header, rows


COLUMNS = (
    ("target", lambda r: r["target"]),
    ("model", lambda r: r["model"]),
    ("size", lambda r: f"{r['size']}x{r['size']}"),
    ("schedule", lambda r: r["schedule"]),
    ("unroll", lambda r: r["unroll"]),
    ("dtype", lambda r: r["dtype"]),
    ("per-chip batch", lambda r: str(r["per_chip_batch"])),
    ("loop trips (jaxpr / HLO)", lambda r: f"{r['loop_trips']} / {r['hlo_loop_trips']}"),
    ("dependent steps", lambda r: str(r["dependent_steps"])),
    ("launched ops", lambda r: f"{r['launched_ops']:,}"),
    (
        "peak GiB/chip",
        lambda r: r["message"] if "message" in r else f"{r['peak_bytes'] / 2**30:.2f}",
    ),
    ("compile s", lambda r: f"{r['compile_seconds']:.1f}"),
    ("est. compiler ms", lambda r: report.milliseconds(r["compiler_seconds"])),
    ("est. overhead ms", lambda r: report.milliseconds(r["overhead_seconds"])),
    ("est. step ms", lambda r: report.milliseconds(r["estimated_seconds"])),
)


def best_rows(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per target, model, size and dtype: the row with the lowest estimated step."""
    best: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        if math.isnan(row["estimated_seconds"]):
            continue
        key = (row["target"], row["model"], row["size"], row["dtype"])
        if key not in best or row["estimated_seconds"] < best[key]["estimated_seconds"]:
            best[key] = row
    return {
        " ".join(map(str, key)): f"{r['schedule']} unroll={r['unroll']} "
        f"({r['estimated_seconds'] * 1e3:.2f} ms)"
        for key, r in best.items()
    }
