"""Causality, receptive fields, shapes and input validation of every model kind."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_probes import dependency_matrix, pixel_dependencies, tiny_model_config
from receptive_fields import expected_dependencies
from sampling_fixtures import random_variables

from pixel_rnn_jax import likelihood, models
from pixel_rnn_jax.nn import layers

MODEL_NAMES = ("row_lstm", "diagonal_bilstm", "pixelcnn")
COLOUR_MODES = ((1, 2), (3, 256))  # (channels, levels): binarized greyscale, 8-bit RGB
# (model, full_context): every body wiring, the Diagonal BiLSTM with and without full context.
WIRINGS = (
    ("row_lstm", False),
    ("diagonal_bilstm", False),
    ("diagonal_bilstm", True),
    ("pixelcnn", False),
)


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


@pytest.mark.parametrize("name,full_context", WIRINGS)
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
        ({"num_classes": -1}, "num_classes"),
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
    variables = None
    for unroll in (1, "python"):  # every setting is compared at layer level as well
        model = models.build_model(tiny_model_config(name, 3, 256, unroll=unroll))
        # Same params for every setting, drawn without running the (op-by-op) initialiser.
        variables = variables or random_variables(model, images.shape)

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


# ---------------------------------------------------------------------------------------
# Class-conditional models (model.num_classes > 0): p(x | y).

NUM_CLASSES = 3


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_conditional_model_is_strictly_causal_in_colour(name):
    height, width, channels = 3, 4, 3
    config = tiny_model_config(name, channels, 256, num_classes=NUM_CLASSES)
    deps = dependency_matrix(config, height, width)
    leaks = deps & ~strictly_earlier(height * width * channels)
    assert not leaks.any(), f"{name}: outputs depend on later inputs at {np.argwhere(leaks)[:5]}"
    assert deps.sum() > height * width


@pytest.mark.parametrize("name,full_context", WIRINGS)
def test_labels_leave_the_receptive_field_as_the_papers_wiring(name, full_context):
    """The label is the same at every pixel: the context is exactly the unconditional one."""
    height, width = 4, 6
    config = tiny_model_config(name, 1, 2, full_context=full_context, num_classes=NUM_CLASSES)
    deps = pixel_dependencies(dependency_matrix(config, height, width), height, width, 1)
    expected = expected_dependencies(name, height, width, 2, full_context=full_context)
    np.testing.assert_array_equal(deps, expected)


def _conditional(name, channels=1, levels=2, **overrides):
    model = models.build_model(
        tiny_model_config(name, channels, levels, num_classes=NUM_CLASSES, **overrides)
    )
    images = jnp.zeros((1, 2, 3, channels), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), images, jnp.zeros((1,), jnp.int32))
    return model, variables


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_changing_the_label_changes_the_logits(name):
    model, variables = _conditional(name, 3, 256)
    images = jax.random.randint(jax.random.PRNGKey(1), (NUM_CLASSES, 3, 4, 3), 0, 256)
    apply = jax.jit(model.apply)
    by_label = [apply(variables, images, jnp.full((NUM_CLASSES,), y)) for y in range(NUM_CLASSES)]
    for a, b in itertools.combinations(by_label, 2):
        assert not np.allclose(a, b, atol=1e-4)
    # A batch of mixed labels gives each image its own label's logits.
    mixed = apply(variables, images, jnp.arange(NUM_CLASSES))
    for y in range(NUM_CLASSES):
        np.testing.assert_allclose(mixed[y], by_label[y][y], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "name,full_context", (*((n, False) for n in MODEL_NAMES), ("diagonal_bilstm", True))
)
def test_conditional_likelihood_sums_to_one_over_every_binary_image_for_each_label(
    name, full_context
):
    model, variables = _conditional(name, full_context=full_context)
    height, width = 2, 3
    bits = np.array(list(itertools.product((0, 1), repeat=height * width)), np.int32)
    images = jnp.asarray(bits.reshape(-1, height, width, 1))  # all 64 binary 2x3 images

    @jax.jit
    def log_p(labels):
        return likelihood.log_likelihood(model.apply(variables, images, labels), images, 2)

    totals = []
    for y in range(NUM_CLASSES):
        log_probs = log_p(jnp.full((len(images),), y, jnp.int32))
        totals.append(float(jax.nn.logsumexp(log_probs)))
        assert abs(totals[-1]) < 1e-5, (y, totals[-1])
    # ... and the labels give different distributions.
    different = log_p(jnp.zeros((len(images),), jnp.int32)) - log_p(
        jnp.ones((len(images),), jnp.int32)
    )
    assert np.abs(np.asarray(different)).max() > 1e-3


@pytest.mark.parametrize(
    "labels,message",
    (
        (None, r"class-conditional \(model.num_classes = 3\): pass labels="),
        (np.array([3, 0]), r"values in \[0, 3\]"),
        (np.array([-1, 0]), r"values in \[-1, 0\]"),
        (np.array([0]), "shape"),
        (np.array([[0], [1]]), "shape"),
        (np.array([0.0, 1.0]), "dtype"),
    ),
)
def test_bad_labels_raise_value_errors_naming_the_expectation(labels, message):
    model, variables = _conditional("row_lstm")
    images = jnp.zeros((2, 2, 3, 1), jnp.int32)
    with pytest.raises(ValueError, match=message) as error:
        model.apply(variables, images, None if labels is None else jnp.asarray(labels))
    assert "integer labels [batch] = [2] in [0, 3)" in str(error.value)


def test_labels_given_to_an_unconditional_model_are_refused():
    model = models.build_model(tiny_model_config("row_lstm", 1, 2))
    images = jnp.zeros((2, 2, 3, 1), jnp.int32)
    variables = model.init(jax.random.PRNGKey(0), images)
    with pytest.raises(ValueError, match="unconditional model"):
        model.apply(variables, images, jnp.zeros((2,), jnp.int32))


def test_labels_are_checked_once_per_forward_pass(monkeypatch):
    model, variables = _conditional("row_lstm")
    images, labels = jnp.zeros((2, 2, 3, 1), jnp.int32), jnp.zeros((2,), jnp.int32)
    calls = []
    check = layers.validate_labels
    monkeypatch.setattr(layers, "validate_labels", lambda *args: calls.append(check(*args)))
    jax.eval_shape(model.apply, variables, images, labels)
    assert len(calls) == 1


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_conditional_tree_is_the_unconditional_one_plus_class_embeddings(name):
    """num_classes=0 keeps every existing checkpoint's tree; > 0 only adds embeddings."""
    images = jnp.zeros((1, 2, 3, 1), jnp.int32)

    def tree(num_classes):
        model = models.build_model(tiny_model_config(name, 1, 2, num_classes=num_classes))
        labels = jnp.zeros((1,), jnp.int32) if num_classes else None
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images, labels)["params"]
        paths = jax.tree_util.tree_flatten_with_path(shapes)[0]
        return {jax.tree_util.keystr(path): leaf.shape for path, leaf in paths}

    plain, conditional = tree(0), tree(NUM_CLASSES)
    assert not any("class" in path for path in plain)
    assert {k: v for k, v in conditional.items() if k in plain} == plain
    added = {k: v for k, v in conditional.items() if k not in plain}
    per_unit = 2 if name == "diagonal_bilstm" else 1  # one embedding per direction
    assert len(added) == per_unit * 2  # 2 units in the tiny models
    assert all("class_embedding" in k and v[0] == NUM_CLASSES for k, v in added.items())
