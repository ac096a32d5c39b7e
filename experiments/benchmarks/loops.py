"""Two counts of a program's recurrences, read from its jaxpr: loop trips and dependent steps.

- **Loop trips**: how many times the program runs a loop body. On an accelerator every trip
  costs kernel launches and loop control whatever the batch, so the trips of a train step
  set a floor under its time. A `scan` counts as `jax.lax.scan` lowers it: `length //
  unroll` trips of a while loop plus the remainder unrolled after it, no loop at all when
  it is unrolled in full (one block of every step). `tests/test_benchmark_loops.py` checks
  these against the `while` loops of the lowered StableHLO.
- **Dependent steps**: the longest chain of recurrence steps, each waiting for the one
  before: what unrolling cannot remove. A scan of `length` steps is `length` dependent
  steps whatever its unroll (times the dependent steps of its body, when the body holds a
  loop); loops that do not feed each other do not add up (the 'throughput' schedule's two
  Diagonal BiLSTM directions: one direction's columns), loops that do are chained (layer
  after layer, forward then backward). A scan counts as a block: its outputs wait for its
  last step, as the program says (a fully unrolled Row LSTM could in principle start layer
  2's first row before layer 1's last; this count does not assume it).

The walk goes into every sub-program (jit, shard_map, remat, custom derivatives, loop
bodies). A loop inside a loop's body counts once per trip of the outer one; of a `cond`'s
branches the costliest counts. A `while` loop's trip count is not in the program (the train
steps have none): each counts as one trip and one dependent step, and is reported in
`while_loops`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex


@dataclasses.dataclass(frozen=True)
class LoopCount:
    """The loops of a program (or of one equation in it)."""

    loop_trips: int  # iterations of every loop, nested ones times their parents' trips
    loops: int  # loops in the program text (unrolled copies of a loop each counted)
    while_loops: int = 0  # `while` loops among them, each counted as one trip
    dependent_steps: int = 0  # the longest chain of recurrence steps (module docstring)

    def times(self, n: int) -> LoopCount:
        """This program's loops run (or copied) `n` times, one after another."""
        return LoopCount(
            self.loop_trips * n, self.loops * n, self.while_loops * n, self.dependent_steps * n
        )


NO_LOOPS = LoopCount(0, 0)


def _serial(counts: list[LoopCount]) -> LoopCount:
    """Programs run one after another, each fed by the one before."""
    total = NO_LOOPS
    for c in counts:
        total = LoopCount(
            total.loop_trips + c.loop_trips,
            total.loops + c.loops,
            total.while_loops + c.while_loops,
            total.dependent_steps + c.dependent_steps,
        )
    return total


def scan_trips(length: int, unroll: int) -> tuple[int, int]:
    """(while-loop iterations, steps unrolled after it) of a `lax.scan` of `length` steps.

    As `jax.lax.scan` lowers it (jax 0.10): `divmod(length, unroll)`, except that a scan
    unrolled into exactly one block (`unroll == length > 1`) is no loop; `unroll` 0 or
    True-as-length likewise.
    """
    if unroll == 0:
        return 0, length
    trips, remainder = divmod(length, unroll)
    if unroll != 1 and trips == 1 and remainder == 0:
        return 0, length
    return trips, remainder


def _sub_jaxprs(value: Any) -> list[jex.Jaxpr]:
    if isinstance(value, jex.ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, jex.Jaxpr):
        return [value]
    return []


def _equation(eqn: jex.JaxprEqn) -> LoopCount:
    """The loops of one equation; its dependent steps are those its outputs wait for."""
    name = eqn.primitive.name
    if name == "scan":
        body = count_jaxpr(eqn.params["jaxpr"])
        length, unroll = eqn.params["length"], int(eqn.params["unroll"])
        trips, remainder = scan_trips(length, unroll)
        copies = (unroll if trips else 0) + remainder  # the body's copies in the program
        return LoopCount(
            trips + body.loop_trips * length,
            (1 if trips else 0) + body.loops * copies,
            body.while_loops * copies,
            length * max(1, body.dependent_steps),
        )
    if name == "while":
        inner = _serial(
            [count_jaxpr(eqn.params["body_jaxpr"]), count_jaxpr(eqn.params["cond_jaxpr"])]
        )
        return LoopCount(
            1 + inner.loop_trips, 1 + inner.loops, 1 + inner.while_loops, 1 + inner.dependent_steps
        )
    if name == "cond":
        branches = [count_jaxpr(branch) for branch in eqn.params["branches"]]
        return max(branches, key=lambda c: (c.loop_trips, c.loops, c.dependent_steps))
    subs = []
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple | list) else (value,):
            subs += [count_jaxpr(sub) for sub in _sub_jaxprs(item)]
    return _serial(subs)


def count_jaxpr(jaxpr: jex.Jaxpr | jex.ClosedJaxpr) -> LoopCount:
    """The loops of `jaxpr` and of every program inside it (see the module docstring).

    Loop trips add up over the equations; dependent steps follow the data: an equation's
    outputs are ready `its own dependent steps` after the latest of its inputs.
    """
    if isinstance(jaxpr, jex.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    ready: dict[jex.Var, int] = {}  # variable -> dependent steps before it is computed

    def ready_at(var) -> int:
        return 0 if isinstance(var, jex.Literal) else ready.get(var, 0)

    counts = []
    for eqn in jaxpr.eqns:
        count = _equation(eqn)
        counts.append(count)
        done = max((ready_at(v) for v in eqn.invars), default=0) + count.dependent_steps
        for var in eqn.outvars:
            ready[var] = done
    total = _serial(counts)
    depth = max([ready_at(v) for v in jaxpr.outvars] + list(ready.values()), default=0)
    return dataclasses.replace(total, dependent_steps=depth)


def count_loops(fn: Callable, *args: Any, **kwargs: Any) -> LoopCount:
    """The loops of `fn(*args, **kwargs)`'s program (traced, not compiled or run).

    Args:
      fn: a function of arrays, jitted or not (a train step, `jax.value_and_grad(loss)`).
      *args, **kwargs: its arguments, arrays or `jax.ShapeDtypeStruct`s.
    """
    if hasattr(fn, "trace"):  # jitted: its own trace (its compiler options stay top-level)
        return count_jaxpr(fn.trace(*args, **kwargs).jaxpr)
    return count_jaxpr(jax.make_jaxpr(fn)(*args, **kwargs))
