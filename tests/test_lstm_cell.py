"""The LSTM cell: gate order and nonlinearities."""

import jax
import numpy as np

from pixel_rnn_jax.lstm_cell import lstm_cell


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
