"""Where a train step's time goes: a `jax.profiler` trace, summed per XLA operation.

`profile_train_step` traces a few calls of the runner's own train step
(`runner_step.runner_train_step`: clipping, metrics, `shard_map`) and reads the trace back with
`jax.profiler.ProfileData`. On CPU every XLA thunk (a fusion, a matmul, a while loop) is
an event on one of XLA:CPU's threads (its worker pool, or the client thread that runs the
program and executes some thunks itself); nested events (a loop body's kernels inside
the loop's event) are subtracted from their parent, so each operation gets its *self*
time. The operations are then summarised three ways:

- by kind (`copy_bitcast_fusion`, `dot`, ...: the HLO name without its numeric suffix);
- inside or outside recurrence loops (an operation run more often than once per step
  sits in a loop body);
- by the model scope that XLA's metadata names (`row_lstm_N/layer/transpose`,
  forward or backward).

Times are summed over threads, so they add up to more than the wall time when XLA
runs independent operations side by side. This is the profile that found the transposes,
the scan buffers and the padded Diagonal rows listed in WORKSPACE_NOTES.md.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import re
import tempfile
from collections.abc import Iterable

import jax
import numpy as np

from experiments.benchmarks import runner_step, scan
from pixel_rnn_jax import models

# Thread lines on which XLA:CPU runs thunks in a host trace: its worker pool and the client
# thread that executes the program. Both must be read: which thread runs a given thunk
# (a whole small loop, say) changes from run to run, and reading only the pool lost every
# loop kernel of some traces.
CPU_EXECUTION_LINES = ("XLAEigen", "XLAPjRtCpuClient")
_SUFFIX = re.compile(r"\.\d+$")


@dataclasses.dataclass(frozen=True)
class OpTime:
    """One XLA operation's self time over the traced calls."""

    name: str  # HLO instruction name, e.g. 'copy_bitcast_fusion.12'
    self_ns: int  # summed over all its executions and threads
    count: int  # executions

    @property
    def kind(self) -> str:
        """The instruction name without its numeric suffix."""
        return _SUFFIX.sub("", self.name)


def self_times(events_per_thread: Iterable[Iterable[tuple[str, int, int]]]) -> list[OpTime]:
    """Self time per event name from `(name, start_ns, duration_ns)` events per thread.

    Events on one thread nest (a loop's event spans its body's); a child's duration is
    taken off its innermost enclosing event.
    """
    totals: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for events in events_per_thread:
        ordered = sorted(events, key=lambda e: (e[1], -e[2]))
        open_events: list[tuple[str, int]] = []  # (name, end_ns)
        for name, start, duration in ordered:
            while open_events and open_events[-1][1] <= start:
                open_events.pop()
            if open_events:
                totals[open_events[-1][0]] -= duration
            totals[name] += duration
            counts[name] += 1
            open_events.append((name, start + duration))
    return [OpTime(name, totals[name], counts[name]) for name in totals]


def read_trace(trace_dir: str, lines: tuple[str, ...] = CPU_EXECUTION_LINES) -> list[OpTime]:
    """Self times of the XLA operations in the newest trace under `trace_dir`."""
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"No *.xplane.pb trace under {trace_dir}.")
    data = jax.profiler.ProfileData.from_file(files[-1])
    threads = [
        [(event.name, event.start_ns, event.duration_ns) for event in line.events]
        for plane in data.planes
        for line in plane.lines
        if any(part in line.name for part in lines)
    ]
    ops = self_times(threads)
    if not ops:
        raise ValueError(f"The trace has no {lines} thread lines (not a CPU trace?).")
    return ops


def hlo_scopes(hlo_text: str) -> dict[str, str]:
    """Instruction name -> the `op_name` of its metadata, from compiled HLO text."""
    pattern = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{op_name="([^"]*)"', re.M)
    return {m.group(1): m.group(2) for m in pattern.finditer(hlo_text)}


def scope_of(op_name: str) -> tuple[str, str]:
    """('forward' | 'backward', model scope with layer numbers folded to N) of an op_name."""
    direction = "backward" if "transpose(jvp(" in op_name else "forward"
    scope = re.sub(r"^jit\([^)]*\)/", "", op_name)
    scope = re.sub(r"transpose\(jvp\([^)]*\)\)/|jvp\([^)]*\)/", "", scope)
    scope = scope.replace("PixelRNN.logits_from_inputs/", "")
    return direction, re.sub(r"_\d+(?=/|$)", "_N", scope)


def summarize(
    ops: list[OpTime], calls: int, scopes: dict[str, str] | None = None, top: int = 15
) -> dict[str, object]:
    """Per-call milliseconds by kind, in/outside loops and by model scope.

    Args:
      ops: from `read_trace`.
      calls: traced calls of the step (times are divided by it).
      scopes: from `hlo_scopes`, for the by-scope table (skipped without it).
      top: rows per table.
    """

    def ms(ns: float) -> float:
        return ns / calls / 1e6

    control = [op for op in ops if op.kind in ("while", "ThunkExecutor::Execute")]
    work = [op for op in ops if op not in control]
    in_loop = [op for op in work if op.count > calls]
    by_kind: collections.Counter[str] = collections.Counter()
    for op in work:
        by_kind[op.kind] += op.self_ns
    summary: dict[str, object] = {
        "total_ms": ms(sum(op.self_ns for op in ops)),
        "in_loop_ms": ms(sum(op.self_ns for op in in_loop)),
        "outside_loop_ms": ms(sum(op.self_ns for op in work) - sum(op.self_ns for op in in_loop)),
        "runtime_overhead_ms": ms(sum(op.self_ns for op in control)),
        "by_kind": [(kind, ms(ns)) for kind, ns in by_kind.most_common(top)],
    }
    if scopes is not None:
        by_scope: collections.Counter[tuple[str, str]] = collections.Counter()
        by_direction: collections.Counter[str] = collections.Counter()
        backward_by_kind: collections.Counter[str] = collections.Counter()
        for op in work:
            direction, scope = scope_of(scopes.get(op.name, "(no metadata: buffer copies)"))
            by_scope[direction, scope] += op.self_ns
            by_direction[direction] += op.self_ns
            if direction == "backward":
                backward_by_kind[op.kind] += op.self_ns
        summary["by_scope"] = [(f"{d} {s}", ms(ns)) for (d, s), ns in by_scope.most_common(top)]
        # Where the backward pass's time goes, the table issue 15 ranks its candidates by.
        summary["by_direction"] = [(d, ms(ns)) for d, ns in by_direction.most_common()]
        summary["backward_by_kind"] = [(k, ms(ns)) for k, ns in backward_by_kind.most_common(top)]
    return summary


def profile_train_step(
    name: str, image_size: int = 28, batch_size: int | None = None, calls: int = 5
) -> dict[str, object]:
    """Traces `calls` train steps of `name` at a benchmark size; returns `summarize(...)`."""
    size = scan.SIZES[image_size]
    config = scan.model_config(name, size, 1)
    model = models.build_model(config)
    batch_size = batch_size or size.batch_size
    rng = np.random.default_rng(0)
    shape = (batch_size, image_size, image_size, size.num_channels)
    images = rng.integers(0, size.num_levels, shape).astype(np.int32)
    step, state, batch, key = runner_step.runner_train_step(model, size.num_levels, images)
    compiled = step.lower(state, batch, key).compile()
    for _ in range(2):  # warm-up
        state, metrics = compiled(state, batch, key)
    jax.block_until_ready(metrics)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(calls):
                state, metrics = compiled(state, batch, key)
                jax.block_until_ready(metrics)
        ops = read_trace(trace_dir)
    summary = summarize(ops, calls, hlo_scopes(compiled.as_text()))
    summary.update(model=name, image_size=image_size, batch_size=batch_size, calls=calls)
    return summary


def format_summary(summary: dict[str, object]) -> str:
    """The summary as Markdown tables."""
    lines = [
        f"## {summary['model']} {summary['image_size']}x{summary['image_size']}, batch "
        f"{summary['batch_size']}: ms per train step, summed over XLA:CPU's threads",
        "",
        f"- total {summary['total_ms']:.1f}; inside recurrence loops "
        f"{summary['in_loop_ms']:.1f}; outside {summary['outside_loop_ms']:.1f}; runtime "
        f"(loop control, thunk dispatch) {summary['runtime_overhead_ms']:.1f}",
    ]
    tables = (
        ("by_direction", "direction (forward includes the optimiser update and copies)"),
        ("by_kind", "operation kind"),
        ("backward_by_kind", "operation kind, backward pass only"),
        ("by_scope", "model scope"),
    )
    for key, title in tables:
        if key in summary:
            lines += ["", f"| {title} | ms |", "|---|---|"]
            lines += [f"| {label} | {value:.2f} |" for label, value in summary[key]]
    return "\n".join(lines) + "\n"
