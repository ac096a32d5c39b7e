"""Causality, receptive fields, shapes and input validation of every model kind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_probes import dependency_matrix, pixel_dependencies, tiny_model_config
from receptive_fields import expected_dependencies

from pixel_rnn_jax import models

MODEL_NAMES = ("row_lstm", "diagonal_bilstm", "pixelcnn")
COLOUR_MODES = ((1, 2), (3, 256))  # (channels, levels): binarized greyscale, 8-bit RGB


def strictly_earlier(num_positions: int) -> np.ndarray:
    """bool [out, in]: input index < output index in raster-then-channel order."""
    return np.tril(np.ones((num_positions, num_positions), dtype=bool), k=-1)


@pytest.mark.parametrize("channels,levels", COLOUR_MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_is_strictly_causal(name, channels, levels):
    height, width = 4, 6  # non-square, every position probed
    deps = dependency_matrix(tiny_model_config(name, channels, levels), height, width)
    leaks = deps & ~strictly_earlier(height * width * channels)
    assert not leaks.any(), f"{name}: outputs depend on later inputs at {np.argwhere(leaks)[:5]}"
    # The probe itself must be able to see dependencies: the model does use its context.
    assert deps.sum() > height * width


@pytest.mark.parametrize("full_context", (False, True))
def test_diagonal_bilstm_with_full_context_is_causal_in_colour(full_context):
    height, width, channels = 3, 5, 3
    config = tiny_model_config("diagonal_bilstm", channels, 256, full_context=full_context)
    deps = dependency_matrix(config, height, width)
    assert not (deps & ~strictly_earlier(height * width * channels)).any()


@pytest.mark.parametrize(
    "name,full_context",
    (
        ("row_lstm", False),
        ("diagonal_bilstm", False),
        ("diagonal_bilstm", True),
        ("pixelcnn", False),
    ),
)
def test_receptive_field_matches_the_papers_wiring(name, full_context):
    """The Jacobian support equals the dependency sets derived from Table 1's wiring."""
    height, width = 6, 9
    config = tiny_model_config(name, 1, 2, full_context=full_context)
    deps = pixel_dependencies(dependency_matrix(config, height, width), height, width, 1)
    expected = expected_dependencies(name, height, width, 2, full_context=full_context)
    np.testing.assert_array_equal(deps, expected)


def test_row_lstm_context_is_a_triangle_above_the_pixel():
    height, width = 6, 9
    deps = pixel_dependencies(
        dependency_matrix(tiny_model_config("row_lstm", 1, 2), height, width), height, width, 1
    )
    i, j = height - 1, 0
    assert deps[i, j, i - 1, 1]  # just above-right: inside the triangle
    assert not deps[i, j, 0, width - 1]  # far above-right: outside it
    assert not deps[i, width - 1, i, 0]  # far left on the same row: outside it


def test_pixelcnn_has_the_blind_spot():
    height, width = 6, 9
    deps = pixel_dependencies(
        dependency_matrix(tiny_model_config("pixelcnn", 1, 2), height, width), height, width, 1
    )
    i, j = height - 1, 1
    # A pixel three rows up and four columns right is seen, yet the nearer pixel one row up
    # and four columns right is not: stacked masked convolutions leave a blind spot.
    assert deps[i, j, i - 3, j + 4]
    assert deps[i, j, i - 1, j + 3]
    assert not deps[i, j, i - 1, j + 4]


def test_faithful_diagonal_bilstm_misses_only_the_previous_rows_last_pixel():
    height, width = 6, 9
    deps = pixel_dependencies(
        dependency_matrix(tiny_model_config("diagonal_bilstm", 1, 2), height, width),
        height,
        width,
        1,
    )
    missing = []
    for i in range(height):
        for j in range(width):
            for r in range(height):
                for c in range(width):
                    if (r, c) < (i, j) and not deps[i, j, r, c]:
                        missing.append((i, j, r, c))
    expected_gap = [
        (i, j, i - 1, width - 1) for i in range(1, height) for j in range(width) if j < width - 4
    ]
    assert missing == expected_gap


def test_full_context_sees_every_earlier_sub_pixel_in_colour():
    height, width, channels = 4, 5, 3
    config = tiny_model_config("diagonal_bilstm", channels, 256, full_context=True)
    deps = dependency_matrix(config, height, width, num_probes=4)
    earlier = strictly_earlier(height * width * channels)
    assert (deps == earlier).all(), np.argwhere(deps != earlier)[:5]


@pytest.mark.parametrize("channels,levels", COLOUR_MODES)
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_logit_shapes_on_non_square_images(name, channels, levels):
    model = models.build_model(tiny_model_config(name, channels, levels))
    images = jnp.zeros((2, 5, 8, channels), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), images)
    logits = model.apply(variables, images)
    expected = (2, 5, 8, channels) if levels == 2 else (2, 5, 8, channels, levels)
    assert logits.shape == expected
    assert jnp.isfinite(logits).all()


@pytest.fixture(scope="module")
def rgb_row_lstm():
    model = models.build_model(tiny_model_config("row_lstm", 3, 256))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 3), jnp.int32))
    return model, variables


@pytest.mark.parametrize(
    "images,message",
    (
        (np.zeros((4, 4, 3), np.int32), "shape"),
        (np.zeros((1, 4, 4, 1), np.int32), "channels"),
        (np.zeros((1, 4, 4, 3), np.float32), "dtype"),
        (np.full((1, 4, 4, 3), 256, np.int32), "values in"),
        (np.full((1, 4, 4, 3), -1, np.int32), "values in"),
    ),
)
def test_bad_images_raise_value_errors_naming_the_expectation(rgb_row_lstm, images, message):
    model, variables = rgb_row_lstm
    with pytest.raises(ValueError, match=message) as error:
        model.apply(variables, jnp.asarray(images))
    assert "[batch, height, width, 3] in [0, 256)" in str(error.value)


@pytest.mark.parametrize(
    "overrides,message",
    (
        ({"name": "pixel_lstm"}, "Unknown model name"),
        ({"num_channels": 2}, "num_channels"),
        ({"unroll": 0}, "unroll"),
        ({"unroll": "fast"}, "unroll"),
        ({"name": "row_lstm", "full_context": True}, "full_context"),
        ({"hidden_dim": 2}, "colour group"),
    ),
)
def test_bad_model_configs_are_rejected(overrides, message):
    config = tiny_model_config("row_lstm", 3, 256)
    config.update(overrides)
    with pytest.raises(ValueError, match=message):
        models.build_model(config)


def test_skip_and_residual_switches_change_the_parameter_tree():
    base = tiny_model_config("row_lstm", 1, 2)
    images = jnp.zeros((1, 4, 4, 1), jnp.int32)
    with_skip = models.build_model(base).init(jax.random.PRNGKey(0), images)["params"]
    base.use_skip = False
    without_skip = models.build_model(base).init(jax.random.PRNGKey(0), images)["params"]
    assert {"skip_0", "skip_1"} <= set(with_skip)
    assert not any(k.startswith("skip") for k in without_skip)


@pytest.mark.parametrize("name", ("row_lstm", "diagonal_bilstm"))
def test_scan_and_python_loop_models_agree_in_outputs_and_gradients(name):
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 5, 3), 0, 256)
    results = []
    for unroll in (1, "python"):  # every setting is compared at layer level as well
        model = models.build_model(tiny_model_config(name, 3, 256, unroll=unroll))
        variables = model.init(jax.random.PRNGKey(1), images)  # same params for every setting

        def loss(params, model=model):
            logits = model.apply({"params": params}, images)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

        results.append(jax.jit(jax.value_and_grad(loss))(variables["params"]))
    (value, grads), others = results[0], results[1:]
    for other_value, other_grads in others:
        np.testing.assert_allclose(value, other_value, rtol=1e-5)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), grads, other_grads
        )
