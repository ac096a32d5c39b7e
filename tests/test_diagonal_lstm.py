"""Diagonal BiLSTM: skewing, the recurrence against a direct loop, both directions and
both schedules."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from model_probes import schedules_agree, tiny_model_config, unread_parameters
from sampling_fixtures import random_variables

from pixel_rnn_jax import models
from pixel_rnn_jax.models import diagonal_lstm


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_diagonal_lstm(input_gates, state_kernel):
    """Direct loop in image coordinates: state (i, j) reads (i - 1, j) and (i, j - 1)."""
    batch, height, width, four_h = input_gates.shape
    h_dim = four_h // 4
    hidden = np.zeros((batch, height, width, h_dim))
    cell = np.zeros_like(hidden)
    zero = np.zeros((batch, h_dim))
    for j in range(width):
        for i in range(height):
            above_h = hidden[:, i - 1, j] if i > 0 else zero
            left_h = hidden[:, i, j - 1] if j > 0 else zero
            left_c = cell[:, i, j - 1] if j > 0 else zero
            gates = input_gates[:, i, j] + np.concatenate([above_h, left_h], -1) @ state_kernel
            o, f, ii, g = np.split(gates, 4, axis=-1)
            cell[:, i, j] = sigmoid(f) * left_c + sigmoid(ii) * np.tanh(g)
            hidden[:, i, j] = sigmoid(o) * np.tanh(cell[:, i, j])
    return hidden


@pytest.mark.parametrize("height,width", [(3, 5), (5, 3), (4, 4), (1, 6)])
def test_skew_shifts_row_r_by_r_and_unskew_inverts_it(height, width):
    x = jnp.arange(2 * height * width * 2, dtype=jnp.float32).reshape(2, height, width, 2) + 1
    skewed = diagonal_lstm.skew(x)
    assert skewed.shape == (2, height, width + height - 1, 2)
    for r in range(height):
        np.testing.assert_array_equal(skewed[:, r, r : r + width], x[:, r])
        assert not skewed[:, r, :r].any() and not skewed[:, r, r + width :].any()
    np.testing.assert_array_equal(diagonal_lstm.unskew(skewed, width), x)


def test_shift_down():
    x = jnp.arange(6.0).reshape(1, 3, 2, 1)
    np.testing.assert_array_equal(diagonal_lstm.shift_down(x)[0, :, :, 0], [[0, 0], [0, 1], [2, 3]])


class DiagonalLSTMTest(chex.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        self.gates = jax.random.normal(keys[0], (2, 4, 6, 12))
        self.right_gates = jax.random.normal(keys[1], (2, 4, 6, 12))
        self.kernels = 0.5 * jax.random.normal(keys[2], (2, 6, 12))

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_direct_loop(self):
        got = self.variant(diagonal_lstm.diagonal_lstm)(self.gates, self.kernels[0])
        want = numpy_diagonal_lstm(np.asarray(self.gates), np.asarray(self.kernels[0]))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bidirectional_is_mirrored_and_shifted_down(self):
        got = self.variant(diagonal_lstm.diagonal_bilstm)(
            self.gates, self.right_gates, self.kernels
        )
        left = numpy_diagonal_lstm(np.asarray(self.gates), np.asarray(self.kernels[0]))
        right = numpy_diagonal_lstm(
            np.asarray(self.right_gates)[:, :, ::-1], np.asarray(self.kernels[1])
        )[:, :, ::-1]
        want = left.copy()
        want[:, 1:] += right[:, :-1]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    @parameterized.parameters(2, 4, "full", "python")
    def test_unroll_settings_give_same_outputs_and_gradients(self, unroll):
        def loss(left, right, kernels, unroll):
            out = diagonal_lstm.diagonal_bilstm(left, right, kernels, unroll)
            return jnp.sum(jnp.sin(out))

        grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)
        args = (self.gates, self.right_gates, self.kernels)
        (v1, g1), (v2, g2) = grad(*args, 1), grad(*args, unroll)
        np.testing.assert_allclose(v1, v2, rtol=1e-5)
        chex.assert_trees_all_close(g1, g2, rtol=1e-5, atol=1e-6)

    def test_full_context_needs_the_image(self):
        layer = diagonal_lstm.DiagonalBiLSTMLayer(hidden_dim=3, full_context=True)
        with pytest.raises(ValueError, match="context"):
            layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 3, 3, 4)))


SHAPES = [(3, 5), (5, 3), (4, 4), (1, 6), (6, 1), (7, 2)]


@pytest.mark.parametrize("height,width", [*SHAPES, (28, 28)])
def test_column_phases_cover_every_pixel_with_the_row_above_it(height, width):
    num_columns = width + height - 1
    for num_phases in range(1, num_columns + 1):
        phases = diagonal_lstm.column_phases(height, width, num_phases)
        assert phases[0].start == 0 and phases[-1].stop == num_columns
        for before, after in zip(phases[:-1], phases[1:], strict=True):
            assert before.stop == after.start and after.row_start >= before.row_start
        for phase in phases:
            for t in range(phase.start, phase.stop):
                rows = [r for r in range(height) if 0 <= t - r < width]
                assert phase.row_start <= min(rows) and max(rows) < phase.row_stop
                # The row above a band's first pixel row carries its "above" input in.
                if min(rows) > 0:
                    assert phase.row_start <= min(rows) - 1
    # At MNIST size the default phases skip about a quarter of the padded row-steps.
    phases = diagonal_lstm.column_phases(28, 28, diagonal_lstm.default_num_phases(28, 28))
    work = sum((p.stop - p.start) * (p.row_stop - p.row_start) for p in phases)
    assert work < 0.8 * 55 * 28


@pytest.mark.parametrize("height,width", SHAPES)
def test_sweep_columns_matches_the_direct_loop_for_any_number_of_phases(height, width):
    keys = jax.random.split(jax.random.PRNGKey(height * 10 + width), 3)
    image_gates = jax.random.normal(keys[0], (2, height, width, 12))
    kernel = 0.5 * jax.random.normal(keys[1], (6, 12))
    columns = diagonal_lstm.to_columns(image_gates)
    # Garbage off the image (as a conv bias leaves there) must be ignored.
    garbage = jax.random.normal(keys[2], columns.shape)
    columns = jnp.where(diagonal_lstm.valid_columns(height, width), columns, garbage)
    want = numpy_diagonal_lstm(np.asarray(image_gates), np.asarray(kernel))
    for num_phases in sorted({1, 2, 3, width + height - 1}):
        hidden = diagonal_lstm.sweep_columns(columns, kernel, width, num_phases=num_phases)
        got = diagonal_lstm.from_columns(hidden, width)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{num_phases}")


def test_phases_give_the_same_gradients():
    height, width = 5, 4
    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    columns = jax.random.normal(keys[0], (width + height - 1, 2, height, 12))
    kernel = 0.5 * jax.random.normal(keys[1], (6, 12))
    weights = jax.random.normal(keys[2], (2, height, width, 3))

    def loss(columns, kernel, num_phases):
        hidden = diagonal_lstm.sweep_columns(columns, kernel, width, num_phases=num_phases)
        return jnp.sum(jnp.sin(diagonal_lstm.from_columns(hidden, width)) * weights)

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)
    (v1, g1), (v3, g3) = grad(columns, kernel, 1), grad(columns, kernel, 3)
    np.testing.assert_allclose(v1, v3, rtol=1e-5)
    chex.assert_trees_all_close(g1, g3, rtol=1e-5, atol=1e-6)
    # Off the image the input gates are ignored, so their gradient is exactly zero.
    off_image = ~np.broadcast_to(diagonal_lstm.valid_columns(height, width), columns.shape)
    assert not np.asarray(g3[0])[off_image].any()


def test_default_phases_shrink_with_an_integer_unroll_only():
    base = diagonal_lstm.default_num_phases(28, 28)
    assert base == diagonal_lstm.MAX_PHASES
    assert diagonal_lstm.default_num_phases(28, 28, 2) == base // 2
    assert diagonal_lstm.default_num_phases(28, 28, 8) == 1
    assert diagonal_lstm.default_num_phases(28, 28, "full") == base
    assert diagonal_lstm.default_num_phases(28, 28, "python") == base
    assert diagonal_lstm.default_num_phases(4, 4) == 1  # 7 columns: too short to split


def test_stacked_sweep_runs_each_direction_with_its_own_kernel():
    height, width = 4, 5
    keys = jax.random.split(jax.random.PRNGKey(8), 3)
    image_gates = jax.random.normal(keys[0], (2, 2, height, width, 12))  # [direction, ...]
    kernels = 0.5 * jax.random.normal(keys[1], (2, 6, 12))
    columns = jnp.stack([diagonal_lstm.to_columns(g) for g in image_gates], axis=1)
    # Garbage off the image (as a conv bias leaves there) must be ignored.
    valid = diagonal_lstm.valid_columns(height, width)[:, None]
    columns = jnp.where(valid, columns, jax.random.normal(keys[2], columns.shape))
    hidden = jax.jit(diagonal_lstm.sweep_stacked, static_argnums=2)(columns, kernels, width)
    for direction in range(2):
        got = diagonal_lstm.from_columns(hidden[:, direction], width)
        want = numpy_diagonal_lstm(
            np.asarray(image_gates[direction]), np.asarray(kernels[direction])
        )
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# (channels, levels, overrides): binary and RGB/256 conditional with full context, and
# bfloat16 with remat and another unroll, each compared across the two schedules.
SCHEDULE_CASES = (
    (1, 2, {}),
    (3, 256, {"num_classes": 3, "full_context": True}),
    (1, 2, {"dtype": "bfloat16", "remat": True, "unroll": 2}),
)


@pytest.mark.parametrize("channels,levels,overrides", SCHEDULE_CASES)
def test_latency_schedule_equals_throughput_in_logits_and_gradients(channels, levels, overrides):
    config = tiny_model_config("diagonal_bilstm", channels, levels, hidden_dim=4, output_dim=8)
    config.first_kernel_size = 3
    config.update(overrides)
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 5, 6, channels), 0, levels)
    labels = jnp.array([0, 2]) if config.num_classes else None
    tolerance = {"rtol": 2e-2, "atol": 1e-3} if config.dtype == "bfloat16" else {}
    schedules_agree(config, images, labels, **tolerance)


def test_unpack_reads_every_parameter_of_a_unit():
    """`unpack` is the one reader of the layer's names: a parameter the layer creates and
    the 'latency' driver and the cached body would not see fails here."""
    model = models.build_model(
        tiny_model_config("diagonal_bilstm", 3, 4, hidden_dim=3, num_classes=2, full_context=True)
    )
    variables = random_variables(model, (1, 3, 3, 3), conditioning_dim=2)
    unit = variables["params"]["diagonal_bilstm_1"]
    names = " ".join(unit["layer"])  # every optional parameter is there
    assert "conditioning" in names and "class_embedding" in names
    assert not unread_parameters(lambda u: diagonal_lstm.unpack(u, 3), unit)
    # A parameter the layer would create and `unpack` not read is caught.
    grown = {**unit, "layer": {**unit["layer"], "new_gate": {"kernel": jnp.zeros(2)}}}
    assert unread_parameters(lambda u: diagonal_lstm.unpack(u, 3), grown) == {
        ("layer", "new_gate", "kernel")
    }
