"""The ahead-of-time report: Markdown for people, JSON for tools, one row per program."""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence
from typing import Any

from experiments.targets import catalog
from experiments.targets.catalog import Target
from experiments.targets.compiled import Analysis, CompileFailure, LargestBatch
from experiments.targets.estimate import OVERHEAD_S
from pixel_rnn_jax.errors import ConfigError

ESTIMATE_NOTE = (
    "Every time, rate and MFU here is an estimate from the compiler's cost model plus the "
    "assumed per-launch and per-loop-trip costs below, not a measurement."
)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f}"


def milliseconds(seconds: float) -> str:
    """Seconds as milliseconds for a table, 'n/a' where there is no estimate."""
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e3:.2f}"


def collectives_text(collectives: Sequence[dict[str, Any]]) -> str:
    """'all-reduce 3x 1.2 MiB' per kind, or 'none'."""
    if not collectives:
        return "none"
    return ", ".join(f"{c['kind']} {c['count']}x {c['bytes'] / 2**20:.2f} MiB" for c in collectives)


PROGRAM_COLUMNS = (
    "program",
    "per-chip batch",
    "peak GiB/chip",
    "fit",
    "largest per-chip batch",
    "loop trips (jaxpr / HLO)",
    "dependent steps",
    "collectives per step",
    "GFLOP/chip",
    "est. compiler ms",
    "est. overhead ms",
    "est. step ms",
    "est. images/s/chip",
    "est. MFU",
    "compile s",
)
SUMMARY_COLUMNS = (
    "config",
    "target",
    "schedule",
    "per-chip batch",
    "peak GiB/chip",
    "fit",
    "largest per-chip batch",
    "est. step ms",
    "est. images/s/chip",
    "est. images/s/target",
    "est. MFU",
    "compile s",
)


def row(a: Analysis | CompileFailure, largest: LargestBatch | None = None) -> dict[str, str]:
    """One program's cells, as the Markdown table shows them."""
    if isinstance(a, CompileFailure):
        cells = dict.fromkeys(PROGRAM_COLUMNS, "")
        cells.update({"program": a.program, "per-chip batch": str(a.per_chip_batch)})
        cells["fit"] = a.fit_text()
        return cells
    estimated = not math.isnan(a.estimated_seconds)
    return {
        "program": a.program,
        "per-chip batch": str(a.per_chip_batch),
        "peak GiB/chip": _gib(a.peak_bytes),
        "fit": a.fit_text(),
        "largest per-chip batch": largest.text() if largest else "",
        "loop trips (jaxpr / HLO)": f"{a.loop_trips} / {a.hlo_loop_trips}",
        "dependent steps": str(a.dependent_steps),
        "collectives per step": collectives_text(a.collectives),
        "GFLOP/chip": f"{a.flops / 1e9:.2f}",
        "est. compiler ms": milliseconds(a.compiler_seconds),
        "est. overhead ms": milliseconds(a.overhead_seconds),
        "est. step ms": milliseconds(a.estimated_seconds),
        "est. images/s/chip": f"{a.images_per_second_per_chip:,.0f}" if estimated else "n/a",
        "est. MFU": f"{a.mfu:.1%}" if estimated else "n/a",
        "compile s": f"{a.compile_seconds:.1f}",
    }


def markdown_table(rows: Sequence[dict[str, str]]) -> str:
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r[h] for h in header) + " |" for r in rows]
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Run:
    """One config's programs compiled for one target."""

    config_name: str
    target: Target
    schedule: str  # as resolved for the target's platform
    dtype: str
    analyses: Sequence[Analysis | CompileFailure]
    largest: LargestBatch | None

    usable_fraction: float = 0.9

    def train(self) -> Analysis | CompileFailure | None:
        return next((a for a in self.analyses if a.program == "train_step"), None)


def write(output: pathlib.Path, run: Run, *, command: str) -> None:
    """OUTPUT/report.md and OUTPUT/report.json."""
    output.mkdir(parents=True, exist_ok=True)
    target = run.target
    rows = [row(a, run.largest if a.program == "train_step" else None) for a in run.analyses]
    slice_rate = ", ".join(
        f"{a.program} {a.images_per_second_per_chip * target.chips:,.0f}"
        for a in run.analyses
        if isinstance(a, Analysis) and a.program != "sample" and not math.isnan(a.estimated_seconds)
    )
    overhead = OVERHEAD_S[target.platform]
    text = [
        f"# {run.config_name} compiled for {target.name}",
        "",
        f"`{command}`",
        "",
        f"- Target: {target.describe()}. Source: {target.chip.source}.",
        f"- Model schedule for this platform: '{run.schedule}'; dtype {run.dtype}. The sampler "
        "runs on one host's chips.",
        f"- Fits: peak memory per chip within {run.usable_fraction:.0%} of the chip's.",
        f"- {ESTIMATE_NOTE} Assumed: {overhead['launch'] * 1e6:g} us per launched op, "
        f"{overhead['trip'] * 1e6:g} us per loop trip ({target.platform}).",
        f"- Estimated images/s over the whole target: {slice_rate or 'n/a'}.",
        "",
        markdown_table(rows),
        "",
    ]
    (output / "report.md").write_text("\n".join(text))
    (output / "report.json").write_text(
        json.dumps(dict(_run_json(run), command=command), indent=1, default=float)
    )


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "config": run.config_name,
        "target": run.target.name,
        "usable_fraction": run.usable_fraction,
        "chips": run.target.chips,
        "hosts": run.target.hosts,
        "schedule": run.schedule,
        "dtype": run.dtype,
        "overhead_s": OVERHEAD_S[run.target.platform],
        "largest_batch": None if run.largest is None else dataclasses.asdict(run.largest),
        "programs": [a.to_json() for a in run.analyses],
    }


def summary_row(run: Run) -> dict[str, str]:
    """One config on one target: its train step's fit, largest batch and estimated time."""
    a = run.train()
    if isinstance(a, CompileFailure):
        cells = dict.fromkeys(SUMMARY_COLUMNS, "")
        cells.update(config=run.config_name, target=run.target.name, schedule=run.schedule)
        cells.update({"per-chip batch": str(a.per_chip_batch), "fit": a.fit_text()})
        return cells
    estimated = a is not None and not math.isnan(a.estimated_seconds)
    return {
        "config": run.config_name,
        "target": run.target.name,
        "schedule": run.schedule,
        "per-chip batch": str(a.per_chip_batch) if a else "",
        "peak GiB/chip": _gib(a.peak_bytes) if a else "",
        "fit": a.fit_text() if a else "",
        "largest per-chip batch": run.largest.text() if run.largest else "",
        "est. step ms": milliseconds(a.estimated_seconds) if a else "",
        "est. images/s/chip": f"{a.images_per_second_per_chip:,.0f}" if estimated else "n/a",
        "est. images/s/target": (
            f"{a.images_per_second_per_chip * run.target.chips:,.0f}" if estimated else "n/a"
        ),
        "est. MFU": f"{a.mfu:.1%}" if estimated else "n/a",
        "compile s": f"{sum(getattr(x, 'compile_seconds', 0.0) for x in run.analyses):.1f}",
    }


def write_summary(output: pathlib.Path, runs: Sequence[Run], *, command: str) -> None:
    """OUTPUT/summary.md and summary.json: one row per config and target (train step)."""
    output.mkdir(parents=True, exist_ok=True)
    platforms = sorted({r.target.platform for r in runs})
    assumed = "; ".join(
        f"{p}: {OVERHEAD_S[p]['launch'] * 1e6:g} us per launched op, "
        f"{OVERHEAD_S[p]['trip'] * 1e6:g} us per loop trip"
        for p in platforms
    )
    text = [
        "# The named configs compiled for each target (train step)",
        "",
        f"`{command}`",
        "",
        f"- {ESTIMATE_NOTE} Assumed: {assumed}.",
        "- Each config's own report (every program, collectives, loops, FLOPs) is in "
        "<config>/<target>/report.md.",
        "",
        markdown_table([summary_row(r) for r in runs]),
        "",
    ]
    (output / "summary.md").write_text("\n".join(text))
    payload = {"command": command, "runs": [_run_json(r) for r in runs]}
    (output / "summary.json").write_text(json.dumps(payload, indent=1, default=float))


def read_run(path: pathlib.Path) -> tuple[Run, str]:
    """A `Run` and its command back from a report.json that `write` wrote."""
    payload = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(Analysis)}
    failure_names = {f.name for f in dataclasses.fields(CompileFailure)}
    analyses = [
        CompileFailure(**{k: v for k, v in p.items() if k in failure_names})
        if "message" in p
        else Analysis(**{k: v for k, v in p.items() if k in names})
        for p in payload["programs"]
    ]
    largest = payload["largest_batch"]
    run = Run(
        config_name=payload["config"],
        target=catalog.parse(payload["target"]),
        schedule=payload["schedule"],
        dtype=payload["dtype"],
        analyses=analyses,
        largest=None if largest is None else LargestBatch(**largest),
        usable_fraction=payload.get("usable_fraction", 0.9),
    )
    return run, payload["command"]


def summarise_directory(output: pathlib.Path) -> None:
    """OUTPUT/summary.md and summary.json again from OUTPUT/<config>/<target>/report.json (the
    reports of one or several runs of `experiments.aot` into the same directory)."""
    found = [read_run(path) for path in sorted(output.glob("*/*/report.json"))]
    if not found:
        raise ConfigError(f"No <config>/<target>/report.json under {output}.")
    order = {name: i for i, name in enumerate(catalog.all_names())}
    found.sort(key=lambda rc: (rc[0].config_name, order.get(rc[0].target.name, len(order))))
    commands = "; ".join(dict.fromkeys(command for _, command in found))
    write_summary(output, [run for run, _ in found], command=commands)
