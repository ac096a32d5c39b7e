"""Sampling: the cached sampler draws exactly the naive sampler's images; start; temperature."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampling_fixtures import build

from pixel_rnn_jax import models, sampling

# (model, full_context, channels, levels, height, width): every model kind in binarized
# greyscale and 8-bit RGB, at square, wide, tall and single-row sizes. The other tests reuse
# these models and shapes, so that they reuse the compiled samplers.
EXACTNESS_CASES = (
    ("row_lstm", False, 1, 2, 5, 3),
    ("row_lstm", False, 3, 256, 3, 4),
    ("diagonal_bilstm", False, 1, 2, 4, 6),
    ("diagonal_bilstm", False, 3, 256, 4, 3),
    ("diagonal_bilstm", True, 1, 2, 6, 2),
    ("diagonal_bilstm", True, 3, 256, 3, 5),
    ("pixelcnn", False, 1, 2, 1, 7),
    ("pixelcnn", False, 3, 256, 4, 4),
)


def flat(images):
    return np.asarray(images).reshape(images.shape[0], -1)  # raster-then-channel order


@pytest.mark.parametrize("name,full_context,channels,levels,height,width", EXACTNESS_CASES)
def test_cached_draws_exactly_the_naive_images(name, full_context, channels, levels, height, width):
    model, variables, given = build(
        name, channels, levels, height, width, full_context=full_context
    )
    total = height * width * channels
    rows_given = height // 2
    # Unconditional, completion of the top rows, and a start inside a pixel (RGB: its R given).
    for start in sorted({0, rows_given * width * channels, total // 2 + 1}):
        rng = jax.random.PRNGKey(100 + start)
        naive = sampling.sample(model, variables, rng, given, start=start, method="naive")
        cached = sampling.sample(model, variables, rng, given, start=start, method="cached")
        np.testing.assert_array_equal(cached, naive, err_msg=f"start={start}")
        # The context is kept and the rest is sampled (not left as given, not constant).
        np.testing.assert_array_equal(flat(cached)[:, :start], flat(given)[:, :start])
        drawn = flat(cached)[:, start:]
        assert (drawn != flat(given)[:, start:]).any()
        assert len(np.unique(drawn)) > 1
        assert cached.dtype == jnp.int32 and cached.shape == given.shape


@pytest.mark.parametrize("name", ["row_lstm", "diagonal_bilstm"])
def test_the_latency_schedule_draws_the_images_the_cached_sampler_draws(name):
    # The cached walk reads the parameters only and does not depend on the schedule; the
    # naive sampler runs the model, here under the 'latency' schedule.
    model, variables, given = build(name, 1, 2, 4, 3, schedule="latency")
    assert model.schedule == "latency"
    rng = jax.random.PRNGKey(300)
    naive = sampling.sample(model, variables, rng, given, method="naive")
    cached = sampling.sample(model, variables, rng, given, method="cached")
    np.testing.assert_array_equal(cached, naive)


def test_different_keys_draw_different_images_and_batch_entries_differ():
    model, variables, given = build("row_lstm", 1, 2, 5, 3)
    a = sampling.sample(model, variables, jax.random.PRNGKey(1), given)
    b = sampling.sample(model, variables, jax.random.PRNGKey(2), given)
    assert (a != b).any()
    assert len({flat(a)[i].tobytes() for i in range(len(a))}) > 1


def test_start_at_the_end_returns_the_images_unchanged():
    model, variables, given = build("pixelcnn", 3, 256, 4, 4)
    for method in sampling.SAMPLING_METHODS:
        out = sampling.sample(
            model, variables, jax.random.PRNGKey(0), given, start=4 * 4 * 3, method=method
        )
        np.testing.assert_array_equal(out, given)


@pytest.mark.parametrize(
    "case", [EXACTNESS_CASES[i] for i in (1, 2, 5, 7)], ids=lambda c: "-".join(map(str, c))
)
def test_very_low_temperature_is_the_argmax_of_the_models_logits(case):
    name, full_context, channels, levels, height, width = case
    model, variables, given = build(
        name, channels, levels, height, width, full_context=full_context
    )
    start = width * channels  # keep the first row: greedy decoding from a random context
    out = sampling.sample(
        model, variables, jax.random.PRNGKey(0), given, start=start, temperature=1e-6
    )
    # The model is causal, so its logits on the finished images are the conditionals every
    # position was drawn from. At T = 1e-6 a Gumbel perturbation (< 17) moves a logit by
    # < 2e-5 and Bernoulli probabilities saturate to 0 or 1, so every position whose best
    # value leads by more than 1e-4 must be that value. Ties do occur at initialisation: an
    # output-stack ReLU layer that is all zero leaves every logit at its zero bias.
    logits = jax.jit(model.apply)(variables, out)
    if levels == 2:
        greedy, lead = (logits > 0).astype(jnp.int32), jnp.abs(logits)
    else:
        top2 = jax.lax.top_k(logits, 2)[0]
        greedy, lead = jnp.argmax(logits, axis=-1), top2[..., 0] - top2[..., 1]
    decided = flat(lead)[:, start:] > 1e-4
    assert decided.mean() > 0.5, "too few positions with a clear argmax to test anything"
    np.testing.assert_array_equal(flat(out)[:, start:][decided], flat(greedy)[:, start:][decided])


def test_temperature_rescales_the_first_pixels_distribution():
    """At (0, 0) nothing is given, so P(x = 1) is sigmoid(logit / T) for a fixed logit."""
    model, variables, _ = build("row_lstm", 1, 2, 1, 1)
    batch = 4000
    zeros = jnp.zeros((batch, 1, 1, 1), jnp.int32)
    logit = float(jax.jit(model.apply)(variables, zeros)[0, 0, 0, 0])
    probs = {t: 1 / (1 + np.exp(-logit / t)) for t in (0.25, 1.0, 4.0)}
    # The temperatures must give clearly different distributions for the test to mean much.
    assert abs(probs[0.25] - probs[4.0]) > 0.1, logit
    for temperature, prob in probs.items():
        out = sampling.sample(
            model, variables, jax.random.PRNGKey(3), zeros, temperature=temperature
        )
        freq = float(np.mean(out))
        tolerance = 5 * np.sqrt(prob * (1 - prob) / batch) + 1e-3
        assert abs(freq - prob) < tolerance, (temperature, freq, prob)


@pytest.fixture(scope="module")
def rgb_model():
    return build("row_lstm", 3, 256, 3, 4)


@pytest.mark.parametrize(
    "kwargs,message",
    (
        ({"method": "fast"}, "Unknown sampling method"),
        ({"start": -1}, "start must be in"),
        ({"start": 3 * 4 * 3 + 1}, "start must be in"),
        ({"start": 1.5}, "integer"),
        ({"start": True}, "integer"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
    ),
)
def test_bad_arguments_raise_value_errors(rgb_model, kwargs, message):
    model, variables, images = rgb_model
    with pytest.raises(ValueError, match=message):
        sampling.sample(model, variables, jax.random.PRNGKey(0), images, **kwargs)


@pytest.mark.parametrize(
    "images,message",
    (
        (np.zeros((4, 4, 3), np.int32), "shape"),
        (np.zeros((1, 3, 4, 1), np.int32), "channels"),
        (np.zeros((1, 3, 4, 3), np.float32), "dtype"),
        (np.full((1, 3, 4, 3), 256, np.int32), "values in"),
    ),
)
def test_bad_images_raise_value_errors(rgb_model, images, message):
    model, variables, _ = rgb_model
    for method in sampling.SAMPLING_METHODS:
        with pytest.raises(ValueError, match=message):
            sampling.sample(model, variables, jax.random.PRNGKey(0), images, method=method)


def test_cached_rejects_a_model_it_has_no_incremental_body_for(rgb_model):
    _, variables, images = rgb_model
    other = models.PixelRNN(
        name_in_registry="multiscale", num_layers=2, hidden_dim=6, num_levels=256, num_channels=3
    )
    with pytest.raises(ValueError, match="method='cached' supports"):
        sampling.sample(other, variables, jax.random.PRNGKey(0), images, method="cached")


MULTI_DEVICE_SCRIPT = textwrap.dedent(
    """
    import jax, numpy as np
    from sampling_fixtures import build
    from pixel_rnn_jax import sampling

    assert jax.local_device_count() == 4
    model, variables, given = build("diagonal_bilstm", 3, 256, 3, 4, batch=8)
    rng = jax.random.PRNGKey(7)
    for method in ("cached", "naive"):
        split = sampling.sample(model, variables, rng, given, start=5, method=method)
        assert len(split.sharding.device_set) == 4, split.sharding
        single = sampling.JITTED_SAMPLERS[method](
            model, variables, rng, given, np.int32(5), np.float32(1.0)
        )
        assert len(single.sharding.device_set) == 1, single.sharding
        np.testing.assert_array_equal(split, single)
    """
)


def test_the_batch_is_split_over_local_devices_and_draws_the_same_images():
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "PYTHONPATH": os.pathsep.join([tests_dir, os.path.dirname(tests_dir)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", MULTI_DEVICE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


# ---------------------------------------------------------------------------------------
# Class-conditional models: every image is drawn from p(x | its label).

NUM_CLASSES = 3
# (model, full_context, channels, levels, height, width): every body kind, with labels.
CONDITIONAL_CASES = (
    ("row_lstm", False, 3, 256, 3, 4),
    ("diagonal_bilstm", False, 1, 2, 4, 6),
    ("diagonal_bilstm", True, 3, 256, 3, 5),
    ("pixelcnn", False, 1, 2, 4, 4),
)


def conditional_build(name, channels, levels, height, width, full_context=False, batch=3):
    model, variables, given = build(
        name,
        channels,
        levels,
        height,
        width,
        batch=batch,
        full_context=full_context,
        num_classes=NUM_CLASSES,
    )
    # Random untrained logits are nearly flat; strong class embeddings make the label decide
    # many draws, so that a sampler that ignored or mixed up the labels would fail.
    variables = jax.tree_util.tree_map_with_path(
        lambda path, x: 8.0 * x if "class_embedding" in jax.tree_util.keystr(path) else x,
        variables,
    )
    return model, variables, given


@pytest.mark.parametrize("name,full_context,channels,levels,height,width", CONDITIONAL_CASES)
def test_cached_draws_exactly_the_naive_images_given_labels(
    name, full_context, channels, levels, height, width
):
    model, variables, given = conditional_build(name, channels, levels, height, width, full_context)
    labels = jnp.array([2, 0, 1])
    for start in (0, (height // 2) * width * channels):
        rng = jax.random.PRNGKey(200 + start)
        kwargs = {"start": start, "labels": labels}
        naive = sampling.sample(model, variables, rng, given, method="naive", **kwargs)
        cached = sampling.sample(model, variables, rng, given, method="cached", **kwargs)
        np.testing.assert_array_equal(cached, naive, err_msg=f"start={start}")
        np.testing.assert_array_equal(flat(cached)[:, :start], flat(given)[:, :start])


def test_each_image_of_a_mixed_batch_is_drawn_from_its_own_class():
    """Image i of a batch with labels [0, 1, 2] is the one an all-label-i batch draws."""
    # 256 levels: a categorical draw moves with any change of its logits.
    name, full_context, channels, levels, height, width = CONDITIONAL_CASES[0]
    model, variables, given = conditional_build(name, channels, levels, height, width, full_context)
    rng = jax.random.PRNGKey(5)
    mixed = sampling.sample(model, variables, rng, given, labels=jnp.arange(NUM_CLASSES))
    single = [
        sampling.sample(model, variables, rng, given, labels=jnp.full((NUM_CLASSES,), y))
        for y in range(NUM_CLASSES)
    ]
    for y in range(NUM_CLASSES):
        np.testing.assert_array_equal(mixed[y], single[y][y])
    # The label is used: the same key draws different images for different classes.
    assert len({flat(s).tobytes() for s in single}) == NUM_CLASSES


@pytest.mark.parametrize(
    "labels,message",
    (
        (None, "class-conditional"),
        (np.array([0, 1, 3]), r"values in \[0, 3\]"),
        (np.array([0, 1]), "shape"),
    ),
)
def test_bad_labels_raise_value_errors_for_both_methods(labels, message):
    model, variables, given = conditional_build("row_lstm", 3, 256, 3, 4)
    for method in sampling.SAMPLING_METHODS:
        with pytest.raises(ValueError, match=message):
            sampling.sample(
                model, variables, jax.random.PRNGKey(0), given, method=method, labels=labels
            )


def test_labels_for_an_unconditional_model_are_refused(rgb_model):
    model, variables, images = rgb_model
    for method in sampling.SAMPLING_METHODS:
        with pytest.raises(ValueError, match="unconditional model"):
            sampling.sample(
                model, variables, jax.random.PRNGKey(0), images, method=method, labels=[0]
            )
