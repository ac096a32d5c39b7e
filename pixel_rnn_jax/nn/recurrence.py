"""One driver for every recurrence: `jax.lax.scan` with an unroll factor, or a Python loop.

All settings compute the same function; they differ in compile time, memory and speed, which
is what `experiments/benchmark.py` measures.

A schedule (`config.model.schedule`) says how a model lays its recurrences out: 'throughput'
runs one loop per layer and direction with the most work per step (the layout XLA:CPU runs
fastest), 'latency' the fewest sequential steps (every loop iteration costs launches and
loop control on an accelerator whatever its work). 'auto' picks one per backend
(`resolve_schedule`). A schedule never changes the parameters or the function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Unroll = int | str  # positive int (scan unroll factor), 'full' (scan fully unrolled), 'python'
UNROLL_CHOICES = "a positive integer, 'full' (lax.scan fully unrolled) or 'python' (Python loop)"


def parse_unroll(unroll: Unroll) -> int | bool | str:
    """Validates an unroll setting; returns the `lax.scan` unroll value or 'python'."""
    if unroll == "python":
        return "python"
    if unroll == "full":
        return True
    if isinstance(unroll, str) and unroll.isdigit():
        unroll = int(unroll)
    if isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1:
        return unroll
    raise ValueError(f"unroll must be {UNROLL_CHOICES}; got {unroll!r}.")


SCHEDULES = ("throughput", "latency")
SCHEDULE_CHOICES = "'auto', 'throughput' or 'latency'"
# What 'auto' picks per backend and model kind ('*': any other kind). CPU: measured (both
# schedules timed, WORKSPACE_NOTES.md "Recurrence schedules"). TPU and GPU: the compiler's
# estimates of the runner's train step compiled for a v5e-8 and 8 H100s, both schedules and
# every unroll (the targets suite; the rows are cited in WORKSPACE_NOTES.md, "Compiled for
# TPU pods and GPUs"): estimates, until the accelerator suite on a lent device measures them.
AUTO_SCHEDULE: dict[str, dict[str, str]] = {
    "cpu": {"*": "throughput"},
    "tpu": {"*": "throughput", "diagonal_bilstm": "latency"},
    "gpu": {"*": "throughput", "diagonal_bilstm": "latency"},
}
_BACKEND_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def resolve_schedule(schedule: str, backend: str | None = None, kind: str | None = None) -> str:
    """'throughput' or 'latency' for a `config.model.schedule` value.

    Args:
      schedule: 'auto', 'throughput' or 'latency'.
      backend: the platform 'auto' resolves for; default `jax.default_backend()`.
      kind: the model kind (`config.model.name`, e.g. 'row_lstm'): 'auto' may pick per kind.

    Returns:
      One of `SCHEDULES`; ValueError for any other value.
    """
    if schedule in SCHEDULES:
        return schedule
    if schedule != "auto":
        raise ValueError(f"model.schedule must be {SCHEDULE_CHOICES}; got {schedule!r}.")
    backend = backend or jax.default_backend()
    choices = AUTO_SCHEDULE.get(_BACKEND_ALIASES.get(backend, backend), {"*": "throughput"})
    return choices.get(kind, choices["*"])


def run_recurrence(
    step: Callable[[Any, Any], tuple[Any, Any]],
    init_carry: Any,
    xs: Any,
    unroll: Unroll = 1,
    reverse: bool = False,
) -> tuple[Any, Any]:
    """Runs `carry, y = step(carry, x)` over the leading axis of `xs`.

    Args:
      step: pure step function `(carry, x_t) -> (carry, y_t)`.
      init_carry: initial carry pytree.
      xs: pytree of arrays with a common leading (time) axis of length T.
      unroll: see `parse_unroll`.
      reverse: run from t = T - 1 down to 0 (ys keep the time order of xs), as
        `jax.lax.scan(reverse=True)`; backward sweeps use it.

    Returns:
      (final carry, ys) with ys stacked along a new leading axis of length T.
    """
    setting = parse_unroll(unroll)
    if setting != "python":
        return jax.lax.scan(step, init_carry, xs, unroll=setting, reverse=reverse)
    length = jax.tree.leaves(xs)[0].shape[0]
    carry, ys = init_carry, [None] * length
    for t in reversed(range(length)) if reverse else range(length):
        carry, ys[t] = step(carry, jax.tree.map(lambda x, t=t: x[t], xs))
    return carry, jax.tree.map(lambda *y: jnp.stack(y), *ys)
