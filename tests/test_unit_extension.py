"""A recurrent unit defined here, outside the library: a Row GRU.

It is a `row_lstm.RowCell` (its gate count, its state and its update at one pixel) and
one registry entry (`models.registered_body`), nothing else. With them it runs the three
ways every unit runs: the layer (the 'throughput' schedule), the one scan over rows (the
'latency' schedule) and the cached one-pixel body (the cached sampler and the coder); and
it passes the probes the built-in units pass: causality and the Row receptive field, the
two schedules' equivalence, and cached == naive.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_probes import dependency_matrix, pixel_dependencies, schedules_agree, tiny_model_config
from receptive_fields import expected_dependencies
from sampling_fixtures import (
    assert_cached_logits_equal_the_models,
    build,
    random_variables,
)

from pixel_rnn_jax import models, sampling
from pixel_rnn_jax.models import row_lstm

KIND = "row_gru"


def gru_update(input_gates, state_gates, state):
    """A GRU (Cho et al., 2014) at one pixel, from the state at the pixel above.

    Gate blocks z (update), r (reset), n (candidate); the reset gate scales the state's
    share of the candidate, so the cell does not only add the two pre-activations.
    """
    (hidden_above,) = state
    x_z, x_r, x_n = jnp.split(input_gates.astype(jnp.float32), 3, axis=-1)
    h_z, h_r, h_n = jnp.split(state_gates.astype(jnp.float32), 3, axis=-1)
    update = jax.nn.sigmoid(x_z + h_z)
    reset = jax.nn.sigmoid(x_r + h_r)
    candidate = jnp.tanh(x_n + reset * h_n)
    return ((1.0 - update) * candidate + update * hidden_above,)


GRU = row_lstm.RowCell(num_gates=3, num_states=1, update=gru_update)


@pytest.fixture(scope="module", autouse=True)
def row_gru():
    with models.registered_body(KIND, row_lstm.row_body(KIND, GRU)):
        yield


def config(channels=1, levels=2, name=KIND, **overrides):
    return tiny_model_config(name, channels, levels, hidden_dim=4, output_dim=8, **overrides)


def test_registered_for_the_block_only_and_names_are_not_reused():
    body = row_lstm.row_body("row_gru_2", GRU)
    with models.registered_body("row_gru_2", body):
        assert models.build_model(config(name="row_gru_2")).name_in_registry == "row_gru_2"
        with pytest.raises(ValueError, match="is taken"), models.registered_body("row_gru_2", body):
            pass
    assert "row_gru_2" not in models.BODIES and "row_gru_2" not in models.MODEL_REGISTRY
    with pytest.raises(ValueError, match="Unknown model name"):
        models.build_model(config(name="row_gru_2"))
    with pytest.raises(ValueError, match="is taken"), models.registered_body("row_lstm", body):
        pass
    assert models.BODIES["row_lstm"] is row_lstm.BODY


def test_parameter_tree_has_the_row_unit_names_with_three_gate_blocks():
    model = models.build_model(config(num_classes=2))
    images = jnp.zeros((1, 4, 4, 1), jnp.int32)
    labels = jnp.zeros((1,), jnp.int32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, labels)["params"]
    unit = jax.eval_shape(lambda unit: row_lstm.unpack(unit, 1), params[f"{KIND}_1"])
    assert unit.input_kernel.shape == (1, 3, 8, 12)  # 1 x k, 2h -> 3 gates of h
    assert unit.state_kernel.shape == (3 * 4, 12)
    assert unit.class_embedding.shape == (2, 12)
    assert unit.conditioning is None


def test_causal_with_the_row_lstms_receptive_field():
    height, width = 5, 6
    deps = dependency_matrix(config(first_kernel_size=3), height, width)
    got = pixel_dependencies(deps, height, width, 1)
    want = expected_dependencies("row_lstm", height, width, 2, first_kernel_size=3)
    np.testing.assert_array_equal(got, want)


def test_causal_in_colour_under_the_latency_schedule():
    height, width, channels = 3, 3, 3
    overrides = {"schedule": "latency", "first_kernel_size": 3}
    deps = dependency_matrix(config(channels, 4, **overrides), height, width, num_probes=2)
    earlier = np.tril(np.ones(deps.shape, dtype=bool), k=-1)
    assert not (deps & ~earlier).any(), np.argwhere(deps & ~earlier)[:5]
    assert deps[-1].sum() > channels  # the last sub-pixel does see earlier pixels


def test_latency_schedule_equals_throughput_in_logits_and_gradients():
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 5, 4, 3), 0, 4)
    labels = jnp.array([0, 2])
    schedules_agree(config(3, 4, first_kernel_size=3, num_classes=3), images, labels)


def test_cached_logits_equal_the_models_with_labels_and_a_conditioning_map():
    model, _, images = build(KIND, 3, 4, 3, 4, hidden_dim=4, output_dim=8, num_classes=2)
    variables = random_variables(model, images.shape, conditioning_dim=2)
    conditioning = jax.random.normal(jax.random.PRNGKey(2), (*images.shape[:3], 2))
    labels = jnp.array([1, 0, 1])
    assert_cached_logits_equal_the_models(model, variables, images, conditioning, labels)


def test_cached_draws_exactly_the_naive_images():
    model, variables, given = build(KIND, 1, 2, 4, 3, hidden_dim=4, output_dim=8)
    rng = jax.random.PRNGKey(5)
    naive = sampling.sample(model, variables, rng, given, method="naive")
    drawn = sampling.sample(model, variables, rng, given, method="cached")
    np.testing.assert_array_equal(drawn, naive)
    assert len(np.unique(np.asarray(drawn))) > 1  # sampled, not constant
