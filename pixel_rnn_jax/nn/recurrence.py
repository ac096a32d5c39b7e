"""One driver for every recurrence: `jax.lax.scan` with an unroll factor, or a Python loop.

All settings compute the same function; they differ in compile time, memory and speed, which
is what `experiments/benchmark.py` measures.

A schedule (`config.model.schedule`) says how a model lays its recurrences out: 'throughput'
runs one loop per layer and direction with the most work per step (the layout XLA:CPU runs
fastest), 'latency' the fewest sequential steps (every loop iteration costs launches and
loop control on an accelerator whatever its work). 'auto' picks one per backend, model kind
and, where that decides it, the recurrent state's width h (`resolve_schedule`). A schedule
never changes the parameters or the function.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class ByWidth:
    """An 'auto' choice that depends on the recurrent state's width h (`model.hidden_dim`)."""

    up_to: int  # the widest h that takes `narrow`
    narrow: str
    wide: str

    def pick(self, hidden_dim: int) -> str:
        return self.narrow if hidden_dim <= self.up_to else self.wide


# What 'auto' picks per backend and model kind ('*': any other kind). CPU: measured (both
# schedules timed, WORKSPACE_NOTES.md "Recurrence schedules"). TPU and GPU: the compiler's
# estimates of the runner's train step compiled for a v5e-8 and 8 H100s, both schedules and
# every unroll at 28x28 and 32x32x3, and h = 16 to 128 on the v5e (the targets suite and
# `experiments.aot`; the rows are cited in WORKSPACE_NOTES.md, "Compiled for TPU pods and
# GPUs"): estimates, until the accelerator suite on a lent device measures them.
AUTO_SCHEDULE: dict[str, dict[str, str | ByWidth]] = {
    "cpu": {"*": "throughput"},
    "tpu": {"*": "throughput", "diagonal_bilstm": ByWidth(64, "latency", "throughput")},
    "gpu": {"*": "throughput", "diagonal_bilstm": "latency"},
}
_BACKEND_ALIASES = {"cuda": "gpu", "rocm": "gpu"}


def resolve_schedule(
    schedule: str,
    backend: str | None = None,
    kind: str | None = None,
    hidden_dim: int | None = None,
) -> str:
    """'throughput' or 'latency' for a `config.model.schedule` value.

    Args:
      schedule: 'auto', 'throughput' or 'latency'.
      backend: the platform 'auto' resolves for; default `jax.default_backend()`.
      kind: the model kind (`config.model.name`, e.g. 'row_lstm'): 'auto' may pick per kind.
      hidden_dim: the model's h; needed where 'auto' picks by width (`ByWidth`).

    Returns:
      One of `SCHEDULES`; ValueError for any other value, or for a `ByWidth` choice
      without `hidden_dim`.
    """
    if schedule in SCHEDULES:
        return schedule
    if schedule != "auto":
        raise ValueError(f"model.schedule must be {SCHEDULE_CHOICES}; got {schedule!r}.")
    backend = backend or jax.default_backend()
    choices = AUTO_SCHEDULE.get(_BACKEND_ALIASES.get(backend, backend), {"*": "throughput"})
    choice = choices.get(kind, choices["*"])
    if not isinstance(choice, ByWidth):
        return choice
    if hidden_dim is None:
        raise ValueError(f"'auto' for {kind} on {backend} picks by width: pass hidden_dim.")
    return choice.pick(hidden_dim)


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
