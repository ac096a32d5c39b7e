"""Row LSTM: the recurrence against a direct loop, scan vs unrolled, and both schedules."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from model_probes import schedules_agree, tiny_model_config, unread_parameters
from sampling_fixtures import random_variables

from pixel_rnn_jax import models
from pixel_rnn_jax.models import row_lstm


def numpy_row_lstm(input_gates, state_kernel):
    """Direct per-pixel loop: h(i, j) from gates(i, j) and h(i - 1, j - 1 .. j + 1)."""
    batch, height, width, four_h = input_gates.shape
    h_dim = four_h // 4
    k = state_kernel.shape[0] // h_dim
    kernel = state_kernel.reshape(k, h_dim, four_h)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))
    hidden = np.zeros((batch, height, width, h_dim))
    cell = np.zeros((batch, width, h_dim))
    prev = np.zeros((batch, width, h_dim))
    for i in range(height):
        new_cell = np.zeros_like(cell)
        for j in range(width):
            gates = input_gates[:, i, j].astype(np.float64)
            for s in range(k):
                c = j + s - k // 2
                if 0 <= c < width:
                    gates = gates + prev[:, c] @ kernel[s]
            o, f, ii, g = np.split(gates, 4, axis=-1)
            new_cell[:, j] = sigmoid(f) * cell[:, j] + sigmoid(ii) * np.tanh(g)
            hidden[:, i, j] = sigmoid(o) * np.tanh(new_cell[:, j])
        cell, prev = new_cell, hidden[:, i]
    return hidden


class RowLSTMTest(chex.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        self.gates = jax.random.normal(keys[0], (2, 4, 5, 12))
        self.kernel = 0.5 * jax.random.normal(keys[1], (9, 12))

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_direct_loop(self):
        run = self.variant(row_lstm.row_lstm)
        got = run(self.gates, self.kernel)
        chex.assert_shape(got, (2, 4, 5, 3))
        want = numpy_row_lstm(np.asarray(self.gates), np.asarray(self.kernel))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    @parameterized.parameters(2, 3, "full", "python")
    def test_unroll_settings_give_same_outputs_and_gradients(self, unroll):
        def loss(gates, kernel, unroll):
            return jnp.sum(jnp.sin(row_lstm.row_lstm(gates, kernel, unroll)))

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
        (v1, g1), (v2, g2) = grad(self.gates, self.kernel, 1), grad(self.gates, self.kernel, unroll)
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        chex.assert_trees_all_close(g1, g2, rtol=1e-5, atol=1e-6)

    def test_layer_is_causal_along_the_row(self):
        layer = row_lstm.RowLayer(hidden_dim=3)
        x = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 6, 4))
        variables = layer.init(jax.random.PRNGKey(2), x)
        base = layer.apply(variables, x)
        moved = layer.apply(variables, x.at[0, 1, 3].add(1.0))
        changed = np.abs(np.asarray(moved - base)).sum(-1)[0] > 0
        # Mask B: pixel (1, 3) itself and later positions may change, earlier ones never.
        flat = changed.reshape(-1)
        assert not flat[: 1 * 6 + 3].any()
        assert flat[1 * 6 + 3]


# (channels, levels, overrides): binary and RGB/256 conditional, and bfloat16 with remat,
# another unroll and no skips, each compared across the two schedules.
SCHEDULE_CASES = (
    (1, 2, {}),
    (3, 256, {"num_classes": 3}),
    (1, 2, {"dtype": "bfloat16", "remat": True, "unroll": 2, "use_skip": False}),
)


@pytest.mark.parametrize("channels,levels,overrides", SCHEDULE_CASES)
def test_latency_schedule_equals_throughput_in_logits_and_gradients(channels, levels, overrides):
    config = tiny_model_config("row_lstm", channels, levels, hidden_dim=4, output_dim=8)
    config.first_kernel_size = 3
    config.update(overrides)
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 6, 5, channels), 0, levels)
    labels = jnp.array([0, 2]) if config.num_classes else None
    tolerance = {"rtol": 2e-2, "atol": 1e-3} if config.dtype == "bfloat16" else {}
    schedules_agree(config, images, labels, **tolerance)


def test_latency_schedule_is_one_scan_over_rows():
    config = tiny_model_config("row_lstm", 1, 2, hidden_dim=4, schedule="latency")
    model = models.build_model(config)
    images = jnp.zeros((1, 4, 3, 1), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
    program = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, images))(params))
    assert program.count("scan[") == 1 and "length=4" in program


def test_unpack_reads_every_parameter_of_a_unit():
    """`unpack` is the one reader of the layer's names: a parameter the layer creates and
    the 'latency' driver and the cached body would not see fails here."""
    model = models.build_model(tiny_model_config("row_lstm", 3, 4, hidden_dim=3, num_classes=2))
    variables = random_variables(model, (1, 3, 3, 3), conditioning_dim=2)
    unit = variables["params"]["row_lstm_1"]
    names = " ".join(unit["layer"])  # every optional parameter is there
    assert "conditioning" in names and "class_embedding" in names
    assert not unread_parameters(lambda u: row_lstm.unpack(u, 3), unit)
    # A parameter the layer would create and `unpack` not read is caught.
    grown = {**unit, "layer": {**unit["layer"], "new_gate": {"kernel": jnp.zeros(2)}}}
    assert unread_parameters(lambda u: row_lstm.unpack(u, 3), grown) == {
        ("layer", "new_gate", "kernel")
    }
