"""The LSTM cell: gate order and nonlinearities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixel_rnn_jax.models import diagonal_lstm, row_lstm
from pixel_rnn_jax.nn.lstm_cell import lstm_cell, lstm_recurrence, lstm_sweep


def test_gates_o_f_i_sigmoid_and_g_tanh():
    rng = np.random.default_rng(0)
    gates = rng.normal(size=(2, 4 * 3)).astype(np.float32)
    cell = rng.normal(size=(2, 3)).astype(np.float32)
    o, f, i, g = np.split(gates, 4, axis=-1)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    expected_cell = sigmoid(f) * cell + sigmoid(i) * np.tanh(g)
    hidden, new_cell = lstm_cell(gates, cell)
    np.testing.assert_allclose(new_cell, expected_cell, rtol=1e-5)
    np.testing.assert_allclose(hidden, sigmoid(o) * np.tanh(expected_cell), rtol=1e-5)


def test_g_is_tanh_not_sigmoid():
    # With o, f, i saturated open and a negative g, a tanh g gives a negative cell.
    gates = np.array([[20.0, 20.0, 20.0, -1.0]], np.float32)
    _, cell = lstm_cell(gates, np.zeros((1, 1), np.float32))
    assert float(cell[0, 0]) < 0
    assert np.isclose(float(cell[0, 0]), float(jax.numpy.tanh(-1.0)), atol=1e-6)


def row_lstm_step(kernel, state, input_gates):
    """The Row LSTM's `row_step`: the cell its layer, 'latency' driver and cached body call."""
    state = row_lstm.row_step(row_lstm.LSTM, kernel, state, input_gates)
    return state, state[0]


def _autodiff_reference(step, kernel, input_gates):
    """The layer's readable pure step function under plain `lax.scan` autodiff."""
    zeros = jnp.zeros((*input_gates.shape[1:-1], input_gates.shape[-1] // 4))
    return jax.lax.scan(lambda c, x: step(kernel, c, x), (zeros, zeros), input_gates)[1]


@pytest.mark.parametrize("unroll", [1, 3, "python"])
@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_custom_vjp_matches_autodiff_of_the_plain_scan(kind, unroll):
    """The hand-written backward sweep gives the gradients autodiff gives."""
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    if kind == "row":
        state_to_gates = row_lstm.row_state_to_gates
        step = row_lstm_step
        kernel = 0.5 * jax.random.normal(keys[0], (9, 12))
        gates = jax.random.normal(keys[1], (5, 2, 4, 12))  # [rows, batch, width, 4h]
    else:
        state_to_gates = diagonal_lstm.diagonal_state_to_gates
        step = diagonal_lstm.diagonal_lstm_step
        kernel = 0.5 * jax.random.normal(keys[0], (6, 12))
        gates = jax.random.normal(keys[1], (6, 2, 4, 12))  # [columns, batch, height, 4h]
    weights = jax.random.normal(keys[2], (*gates.shape[:-1], 3))

    def loss(fn):
        return lambda k, g: jnp.sum(jnp.sin(fn(k, g)) * weights)

    custom = loss(lambda k, g: lstm_recurrence(state_to_gates, k, g, unroll))
    plain = loss(lambda k, g: _autodiff_reference(step, k, g))
    np.testing.assert_allclose(custom(kernel, gates), plain(kernel, gates), rtol=1e-5)
    got = jax.grad(custom, argnums=(0, 1))(kernel, gates)
    want = jax.grad(plain, argnums=(0, 1))(kernel, gates)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("unroll", [1, "python"])
def test_sweep_from_given_states_with_a_mask_matches_autodiff(unroll):
    """Initial states, final states and the input mask get the gradients autodiff gives."""
    keys = jax.random.split(jax.random.PRNGKey(5), 6)
    kernel = 0.5 * jax.random.normal(keys[0], (6, 12))
    gates = jax.random.normal(keys[1], (6, 2, 4, 12))  # [columns, batch, height, 4h]
    hidden0 = jax.random.normal(keys[2], (2, 4, 3))
    cell0 = jax.random.normal(keys[3], (2, 4, 3))
    mask = jax.random.bernoulli(keys[4], 0.7, (6, 1, 4, 1))
    weights = jax.random.normal(keys[5], (6, 2, 4, 3))
    state_to_gates, step = diagonal_lstm.diagonal_state_to_gates, diagonal_lstm.diagonal_lstm_step

    def plain(k, g, h0, c0):
        masked = jnp.where(mask, g, 0.0)
        (h, c), hs = jax.lax.scan(lambda carry, x: step(k, carry, x), (h0, c0), masked)
        return hs, h, c

    def custom(k, g, h0, c0):
        return lstm_sweep(state_to_gates, k, g, h0, c0, unroll, mask)

    def loss(fn):
        def value(*args):
            hs, h, c = fn(*args)
            return jnp.sum(jnp.sin(hs) * weights) + jnp.sum(h * c) + jnp.sum(jnp.cos(c))

        return value

    args = (kernel, gates, hidden0, cell0)
    np.testing.assert_allclose(loss(custom)(*args), loss(plain)(*args), rtol=1e-5)
    got = jax.grad(loss(custom), argnums=(0, 1, 2, 3))(*args)
    want = jax.grad(loss(plain), argnums=(0, 1, 2, 3))(*args)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def folded_equals_stepwise(state_to_gates, kernel, hiddens):
    """`state_to_gates` on T steps folded into the leading axis == per step, then folded."""
    state_to_gates = jax.jit(state_to_gates)
    folded = state_to_gates(kernel, hiddens.reshape(-1, *hiddens.shape[2:]))
    stepwise = jnp.concatenate([state_to_gates(kernel, hidden) for hidden in hiddens])
    return bool(np.allclose(folded, stepwise, rtol=1e-6, atol=1e-6))


def test_state_to_gates_treats_time_folded_into_the_batch_as_batch():
    """The `StateToGates` contract that `lstm_sweep`'s backward relies on, for every
    state_to_gates the models hand to it; and a function that breaks it is caught."""
    keys = jax.random.split(jax.random.PRNGKey(7), 6)
    h = 3
    cases = (
        # [T, batch, width, h] rows; [T, batch, height, h] columns; [T, 2 directions, ...].
        (row_lstm.row_state_to_gates, (9, 12), (4, 2, 5, h)),
        (diagonal_lstm.diagonal_state_to_gates, (6, 12), (4, 2, 5, h)),
        (diagonal_lstm.stacked_state_to_gates, (2, 6, 12), (4, 2, 2, 5, h)),
    )
    for index, (state_to_gates, kernel_shape, hidden_shape) in enumerate(cases):
        kernel = jax.random.normal(keys[2 * index], kernel_shape)
        hiddens = jax.random.normal(keys[2 * index + 1], hidden_shape)
        assert folded_equals_stepwise(state_to_gates, kernel, hiddens), state_to_gates

    def mixes_the_leading_axis(kernel, hidden):  # reads the "previous batch entry"
        return row_lstm.row_state_to_gates(kernel, jnp.roll(hidden, 1, axis=0))

    kernel = jax.random.normal(keys[0], (9, 12))
    hiddens = jax.random.normal(keys[1], (4, 2, 5, h))
    assert not folded_equals_stepwise(mixes_the_leading_axis, kernel, hiddens)
