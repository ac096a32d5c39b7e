"""The loop counter: exact loop trips and dependent steps of the runner's train step per
schedule, the trips cross-checked against the `while` loops of the lowered StableHLO."""

import re

import jax
import jax.numpy as jnp
import pytest
from model_probes import tiny_model_config

from experiments.benchmarks import loops, runner_step
from pixel_rnn_jax import models

LAYERS, HEIGHT, WIDTH = 2, 6, 5
COLUMNS = WIDTH + HEIGHT - 1  # the Diagonal BiLSTM's skewed columns


def train_step_loops(name, schedule, **overrides):
    """The train step's `LoopCount` and its lowered StableHLO text."""
    config = tiny_model_config(name, 1, 2, num_layers=LAYERS, schedule=schedule, **overrides)
    model = models.build_model(config)
    step, state, batch, key = runner_step.abstract_runner_train_step(
        model, 2, (2, HEIGHT, WIDTH, 1)
    )
    return loops.count_loops(step, state, batch, key), step.lower(state, batch, key).as_text()


_FUNCTION = re.compile(r"^\s*func\.func \w+ @([\w.$-]+)\(")
_CALL = re.compile(r"call @([\w.$-]+)\(")
_CONSTANT = re.compile(r"(%[\w#]+) = stablehlo\.constant dense<(\d+)> : tensor<i32>")
_BOUND = re.compile(r"stablehlo\.compare\s+LT, %[\w#]+, (%[\w#]+),")


def stablehlo_loops(text: str) -> tuple[int, int]:
    """(loop trips, loops) of a lowered program, read from its StableHLO text.

    Independent of the jaxpr walk: each `stablehlo.while`'s bound is the constant its `cond`
    region compares the counter with (`compare LT, %i, %c`); loops in a loop's body and in
    the functions it calls count once per trip of the outer loop.
    """
    functions: dict[str, list[str]] = {}
    lines: list[str] = []
    for line in text.splitlines():
        match = _FUNCTION.match(line)
        if match:
            lines = functions.setdefault(match.group(1), [])
        else:
            lines.append(line)
    memo: dict[str, tuple[int, int]] = {}

    def function(name):
        if name not in memo:
            memo[name] = block(iter(functions[name]))
        return memo[name]

    def block(rest):  # consumes `rest` up to the line that closes this region
        trips = count = 0
        for line in rest:
            stripped = line.strip()
            if stripped == "}" or stripped.startswith("} do {"):
                return trips, count
            if "stablehlo.while(" in line:
                assert next(rest).strip() == "cond {"
                constants, bound = {}, None
                for cond_line in rest:
                    if cond_line.strip().startswith("} do {"):
                        break
                    constants.update(_CONSTANT.findall(cond_line))
                    found = _BOUND.search(cond_line)
                    bound = int(constants[found.group(1)]) if found else bound
                body_trips, body_count = block(rest)
                trips += bound * (1 + body_trips)
                count += 1 + body_count
            for name in _CALL.findall(line):
                trips, count = trips + function(name)[0], count + function(name)[1]
        return trips, count

    return function("main")


# (model, schedule, unroll) -> (loop trips, loops, dependent steps) of one train step,
# forward and backward, from the schedules' formulas.
EXPECTED = {
    # One sweep of H rows per layer, each way; the layers wait for each other.
    ("row_lstm", "throughput", 1): (LAYERS * HEIGHT * 2, LAYERS * 2, LAYERS * HEIGHT * 2),
    # One scan over rows for all layers, each way.
    ("row_lstm", "latency", 1): (HEIGHT * 2, 2, HEIGHT * 2),
    # Two scans of H // 2 trips (the unrolled body runs two rows a trip): the same rows.
    ("row_lstm", "latency", 2): (HEIGHT // 2 * 2, 2, HEIGHT * 2),
    # Per layer: two directions of W + H - 1 columns, one phase each at this size, each way;
    # the two directions do not feed each other: one direction's columns are dependent.
    ("diagonal_bilstm", "throughput", 1): (
        LAYERS * 2 * COLUMNS * 2,
        LAYERS * 2 * 2,
        LAYERS * COLUMNS * 2,
    ),
    # Per layer: one loop of both directions, each way.
    ("diagonal_bilstm", "latency", 1): (LAYERS * COLUMNS * 2, LAYERS * 2, LAYERS * COLUMNS * 2),
    # Unrolled in full: no loop is left, every column still waits for the one before.
    ("diagonal_bilstm", "latency", "full"): (0, 0, LAYERS * COLUMNS * 2),
    ("pixelcnn", "latency", 1): (0, 0, 0),
}


@pytest.mark.parametrize("name,schedule,unroll", list(EXPECTED))
def test_train_step_loops_follow_the_schedule(name, schedule, unroll):
    count, stablehlo = train_step_loops(name, schedule, unroll=unroll)
    counted = (count.loop_trips, count.loops, count.dependent_steps)
    assert counted == EXPECTED[name, schedule, unroll]
    assert count.while_loops == 0
    assert stablehlo_loops(stablehlo) == (count.loop_trips, count.loops)


def test_the_diagonal_phases_are_loops_of_their_own():
    # 28 x 28: six phases per direction (`diagonal_lstm.default_num_phases`).
    config = tiny_model_config("diagonal_bilstm", 1, 2, num_layers=1, schedule="throughput")
    model = models.build_model(config)
    args = runner_step.abstract_runner_train_step(model, 2, (1, 28, 28, 1))
    count = loops.count_loops(*args)
    assert (count.loop_trips, count.loops) == (2 * 55 * 2, 2 * 6 * 2)
    assert count.dependent_steps == 55 * 2  # the phases of a direction run one after another


@pytest.mark.parametrize(
    "length,unroll,expected",
    [(28, 1, (28, 0)), (28, 4, (7, 0)), (28, 3, (9, 1)), (28, 28, (0, 28)), (1, 1, (1, 0))],
)
def test_scan_trips_as_lax_scan_lowers_them(length, unroll, expected):
    assert loops.scan_trips(length, unroll) == expected


def test_nested_loops_multiply_and_cond_counts_its_costliest_branch():
    def inner(c, x):
        c, _ = jax.lax.scan(lambda a, b: (a + b, None), c, jnp.ones(4))
        return c, x

    def fn(x):
        c, _ = jax.lax.scan(inner, 0.0, x)  # 3 trips, each running a loop of 4
        loop = lambda v: jax.lax.scan(lambda a, b: (a * b, None), v, jnp.ones(5))[0]
        return jax.lax.cond(c > 0, loop, lambda v: v, c)

    count = loops.count_loops(jax.jit(fn), jnp.ones(3))
    assert (count.loop_trips, count.loops) == (3 + 3 * 4 + 5, 3)
    assert count.dependent_steps == 3 * 4 + 5  # the cond waits for the outer scan


def test_dependent_steps_follow_the_data_not_the_program_order():
    def fn(x):
        scan = lambda v, n: jax.lax.scan(lambda a, b: (a * b, None), v, jnp.ones(n))[0]
        independent = scan(x, 4) + scan(x, 6)  # two loops of the same input
        return scan(independent, 5)  # fed by both

    count = loops.count_loops(jax.jit(fn), jnp.ones(()))
    assert (count.loop_trips, count.loops, count.dependent_steps) == (4 + 6 + 5, 3, 6 + 5)
