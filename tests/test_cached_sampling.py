"""Incremental evaluation: teacher-forced per-pixel logits equal the full model's logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampling_fixtures import (
    assert_cached_logits_equal_the_models,
    build,
    keep,
    random_variables,
)

from pixel_rnn_jax.models import pixel_rnn
from pixel_rnn_jax.nn import incremental, layers
from pixel_rnn_jax.sampling import cached


def incremental_logits(model, variables, images):
    run = jax.jit(lambda v, x: cached.run_incremental(model, v, x, keep, collect_logits=True))
    return run(variables, images)


@pytest.mark.parametrize(
    "name,channels,levels,height,width,overrides",
    (
        ("row_lstm", 1, 2, 4, 6, {}),
        ("row_lstm", 3, 256, 5, 3, {}),
        # Wider kernels, no skips: k//2 = 2 cached columns; the output reads the last unit.
        (
            "row_lstm",
            3,
            4,
            4,
            5,
            {"recurrent_kernel_size": 5, "first_kernel_size": 5, "use_skip": False},
        ),
        ("diagonal_bilstm", 1, 2, 5, 3, {}),
        ("diagonal_bilstm", 3, 256, 4, 4, {"full_context": True}),
        ("diagonal_bilstm", 1, 2, 3, 6, {"full_context": True, "use_residual": False}),
        ("pixelcnn", 1, 2, 4, 5, {}),
        ("pixelcnn", 3, 256, 3, 4, {}),
        # Even kernels (centre at k//2, one column fewer on the right), no residuals.
        (
            "pixelcnn",
            1,
            2,
            5,
            4,
            {"recurrent_kernel_size": 4, "first_kernel_size": 4, "use_residual": False},
        ),
        ("pixelcnn", 3, 256, 4, 3, {"recurrent_kernel_size": 5, "num_layers": 3}),
    ),
)
def test_teacher_forced_logits_match_the_model(name, channels, levels, height, width, overrides):
    model, variables, images = build(name, channels, levels, height, width, **overrides)
    kept, logits = incremental_logits(model, variables, images)
    np.testing.assert_array_equal(kept, images)
    want = jax.jit(model.apply)(variables, images)
    assert logits.shape == want.shape
    # Same math, different summation order (per-pixel dots vs whole-map convolutions).
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize(
    "name,channels,levels,overrides",
    (
        ("row_lstm", 3, 256, {}),
        ("diagonal_bilstm", 1, 2, {"full_context": True}),
        ("pixelcnn", 3, 4, {}),
    ),
)
def test_teacher_forced_logits_with_a_conditioning_map(name, channels, levels, overrides):
    """The multi-scale model's conditional network: a full map added to every unit."""
    model, _, images = build(name, channels, levels, 4, 5, **overrides)
    variables = random_variables(model, images.shape, conditioning_dim=5)
    conditioning = jax.random.normal(jax.random.PRNGKey(2), (*images.shape[:3], 5))
    run = jax.jit(
        lambda v, x, c: cached.run_incremental(
            model, v, x, keep, conditioning=c, collect_logits=True
        )
    )
    _, logits = run(variables, images, conditioning)
    apply = jax.jit(lambda v, x, c: model.apply(v, x, c, method="logits_from_inputs"))
    want = apply(variables, layers.preprocess_images(images, levels), conditioning)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=2e-6)
    # Without the map the logits differ: the test above does exercise the conditioning.
    assert not np.allclose(want, jax.jit(model.apply)(variables, images), atol=1e-3)


def test_conditioning_needs_the_conditioning_layers():
    model, variables, images = build("row_lstm", 1, 2, 2, 3)
    with pytest.raises(ValueError, match="no conditioning"):
        cached.run_incremental(model, variables, images, keep, conditioning=jnp.zeros((3, 2, 3, 4)))
    with pytest.raises(ValueError, match="conditioning must be"):
        cached.run_incremental(model, variables, images, keep, conditioning=jnp.zeros((3, 2, 2, 4)))


def test_choose_sees_each_position_in_order_with_its_logits():
    """`choose` gets positions 0, 1, 2, ... and what it returns is what later pixels see."""
    model, variables, images = build("row_lstm", 3, 256, 2, 3, batch=1)

    def choose(position, logits, current):
        del logits, current
        return jnp.full((1,), (7 * position) % 256, jnp.int32)

    out, logits = jax.jit(
        lambda v, x: cached.run_incremental(model, v, x, choose, collect_logits=True)
    )(variables, images)
    np.testing.assert_array_equal(out.reshape(-1), (7 * np.arange(18)) % 256)
    np.testing.assert_allclose(logits, jax.jit(model.apply)(variables, out), rtol=1e-5, atol=2e-6)


def test_every_registered_model_has_an_incremental_body():
    assert cached.CACHED_BODIES is pixel_rnn.BODIES  # live: a kind registered later too
    for body in pixel_rnn.BODIES.values():
        assert isinstance(body.cached, incremental.CachedBody)


def test_causal_rows_masks_like_the_layer_and_drops_rows_below_the_centre():
    kernel = jnp.ones((5, 5, 3, 6))
    rows = incremental.causal_rows(kernel, "A", num_groups=3)
    assert rows.shape == (3, 5, 3, 6)
    assert rows[:2].all() and not rows[2, 3:].any()  # rows above visible, right of centre not
    centre = np.asarray(rows[2, 2])  # mask A: group g sees input groups < g only
    np.testing.assert_array_equal(centre.any(axis=1), [True, True, False])


@pytest.mark.parametrize(
    "name,channels,levels,overrides",
    (
        ("row_lstm", 3, 256, {}),
        ("diagonal_bilstm", 1, 2, {}),
        ("diagonal_bilstm", 3, 4, {"full_context": True}),
        ("pixelcnn", 3, 256, {}),
    ),
)
def test_teacher_forced_logits_with_labels_match_the_model(name, channels, levels, overrides):
    """Class embeddings folded into the cached bodies' biases, one label per image."""
    model, variables, images = build(name, channels, levels, 4, 5, num_classes=3, **overrides)
    labels = jnp.array([1, 2, 0])
    run = jax.jit(
        lambda v, x, y: cached.run_incremental(model, v, x, keep, labels=y, collect_logits=True)
    )
    _, logits = run(variables, images, labels)
    want = jax.jit(model.apply)(variables, images, labels)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=2e-6)
    # Other labels give other logits: the test above does exercise the class embeddings.
    assert not np.allclose(want, jax.jit(model.apply)(variables, images, labels[::-1]), atol=1e-3)


def test_teacher_forced_logits_with_a_conditioning_map_and_labels():
    """The class-conditional multi-scale model's conditional network: both at once."""
    model, _, images = build("diagonal_bilstm", 3, 4, 3, 4, num_classes=2, full_context=True)
    variables = random_variables(model, images.shape, conditioning_dim=3)
    conditioning = jax.random.normal(jax.random.PRNGKey(3), (*images.shape[:3], 3))
    labels = jnp.array([1, 0, 1])
    assert_cached_logits_equal_the_models(model, variables, images, conditioning, labels)


def test_labels_must_fit_the_model():
    model, variables, images = build("row_lstm", 1, 2, 2, 3)
    with pytest.raises(ValueError, match="unconditional model"):
        cached.run_incremental(model, variables, images, keep, labels=jnp.zeros((3,), jnp.int32))
    conditional, variables, images = build("pixelcnn", 1, 2, 2, 3, num_classes=2)
    with pytest.raises(ValueError, match="class-conditional"):
        cached.run_incremental(conditional, variables, images, keep)
    with pytest.raises(ValueError, match=r"\[batch\] = \[3\]"):
        cached.run_incremental(conditional, variables, images, keep, labels=jnp.zeros((2,), int))
