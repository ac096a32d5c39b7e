"""The sequential-step counter: exact loop trips of the runner's train step per schedule."""

import jax
import jax.numpy as jnp
import pytest
from model_probes import tiny_model_config

from experiments.benchmarks import loops, runner_step
from pixel_rnn_jax import models

LAYERS, HEIGHT, WIDTH = 2, 6, 5
COLUMNS = WIDTH + HEIGHT - 1  # the Diagonal BiLSTM's skewed columns


def train_step_loops(name, schedule, **overrides):
    config = tiny_model_config(name, 1, 2, num_layers=LAYERS, schedule=schedule, **overrides)
    model = models.build_model(config)
    step, state, batch, key = runner_step.abstract_runner_train_step(
        model, 2, (2, HEIGHT, WIDTH, 1)
    )
    return loops.count_loops(step, state, batch, key)


# (model, schedule, unroll) -> (sequential steps, loops) of one train step, forward and
# backward, from the schedules' formulas.
EXPECTED = {
    # One sweep of H rows per layer, each way.
    ("row_lstm", "throughput", 1): (LAYERS * HEIGHT * 2, LAYERS * 2),
    # One scan over rows for all layers, each way.
    ("row_lstm", "latency", 1): (HEIGHT * 2, 2),
    # Two scans of H // 2 trips (the unrolled body runs two rows a trip).
    ("row_lstm", "latency", 2): (HEIGHT // 2 * 2, 2),
    # Per layer: two directions of W + H - 1 columns, one phase each at this size, each way.
    ("diagonal_bilstm", "throughput", 1): (LAYERS * 2 * COLUMNS * 2, LAYERS * 2 * 2),
    # Per layer: one loop of both directions, each way.
    ("diagonal_bilstm", "latency", 1): (LAYERS * COLUMNS * 2, LAYERS * 2),
    ("pixelcnn", "latency", 1): (0, 0),
}


@pytest.mark.parametrize("name,schedule,unroll", list(EXPECTED))
def test_train_step_loops_follow_the_schedule(name, schedule, unroll):
    count = train_step_loops(name, schedule, unroll=unroll)
    assert (count.sequential_steps, count.loops) == EXPECTED[name, schedule, unroll]
    assert count.while_loops == 0


def test_the_diagonal_phases_are_loops_of_their_own():
    # 28 x 28: six phases per direction (`diagonal_lstm.default_num_phases`).
    config = tiny_model_config("diagonal_bilstm", 1, 2, num_layers=1, schedule="throughput")
    model = models.build_model(config)
    args = runner_step.abstract_runner_train_step(model, 2, (1, 28, 28, 1))
    count = loops.count_loops(*args)
    assert (count.sequential_steps, count.loops) == (2 * 55 * 2, 2 * 6 * 2)


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
    assert (count.sequential_steps, count.loops) == (3 + 3 * 4 + 5, 3)
