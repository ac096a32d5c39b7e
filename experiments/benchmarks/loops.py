"""Sequential steps of a program: the trip counts of its loops, read from its jaxpr.

On an accelerator every loop iteration costs kernel launches and loop control whatever the
batch, so the total trip count of a train step's loops sets a floor under its time. This
walks the jaxpr of a (jitted) function, into every sub-program (jit, shard_map, remat,
custom derivatives, loop bodies), and counts each `scan` as `jax.lax.scan` lowers it:
`length // unroll` iterations of a while loop plus the remainder unrolled after it, no loop
at all when it is unrolled in full (one block of every step). A loop inside a loop's body
counts once per iteration of the outer one; of a `cond`'s branches the costliest counts.
A `while` loop's trip count is not in the program (the train steps have none): each counts
as a loop of one trip and is reported in `while_loops`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.extend.core as jex


@dataclasses.dataclass(frozen=True)
class LoopCount:
    """The loops of a program."""

    sequential_steps: int  # iterations of every loop, nested ones times their parents' trips
    loops: int  # loops in the program text (unrolled copies of a loop each counted)
    while_loops: int = 0  # `while` loops among them, each counted as one trip

    def __add__(self, other: LoopCount) -> LoopCount:
        return LoopCount(
            self.sequential_steps + other.sequential_steps,
            self.loops + other.loops,
            self.while_loops + other.while_loops,
        )

    def times(self, n: int) -> LoopCount:
        """This program's loops run (or copied) `n` times."""
        return LoopCount(self.sequential_steps * n, self.loops * n, self.while_loops * n)


NO_LOOPS = LoopCount(0, 0)


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


def count_jaxpr(jaxpr: jex.Jaxpr | jex.ClosedJaxpr) -> LoopCount:
    """The loops of `jaxpr` and of every program inside it (see the module docstring)."""
    if isinstance(jaxpr, jex.ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    total = NO_LOOPS
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            body = count_jaxpr(eqn.params["jaxpr"])
            length, unroll = eqn.params["length"], int(eqn.params["unroll"])
            trips, remainder = scan_trips(length, unroll)
            copies = (unroll if trips else 0) + remainder  # the body's copies in the program
            own = LoopCount(trips, 1) if trips else NO_LOOPS
            total += own + LoopCount(body.sequential_steps * length, body.loops * copies)
            total += LoopCount(0, 0, body.while_loops * copies)
        elif name == "while":
            inner = count_jaxpr(eqn.params["body_jaxpr"]) + count_jaxpr(eqn.params["cond_jaxpr"])
            total += LoopCount(1, 1, 1) + inner
        elif name == "cond":
            branches = [count_jaxpr(branch) for branch in eqn.params["branches"]]
            total += max(branches, key=lambda c: (c.sequential_steps, c.loops))
        else:
            for value in eqn.params.values():
                values = value if isinstance(value, tuple | list) else (value,)
                for item in values:
                    for sub in _sub_jaxprs(item):
                        total += count_jaxpr(sub)
    return total


def count_loops(fn: Callable, *args: Any, **kwargs: Any) -> LoopCount:
    """The loops of `fn(*args, **kwargs)`'s program (traced, not compiled or run).

    Args:
      fn: a function of arrays, jitted or not (a train step, `jax.value_and_grad(loss)`).
      *args, **kwargs: its arguments, arrays or `jax.ShapeDtypeStruct`s.
    """
    if hasattr(fn, "trace"):  # jitted: its own trace (its compiler options stay top-level)
        return count_jaxpr(fn.trace(*args, **kwargs).jaxpr)
    return count_jaxpr(jax.make_jaxpr(fn)(*args, **kwargs))
