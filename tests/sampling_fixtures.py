"""Tiny models with random parameters for the sampling tests, built without compiling init."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from model_probes import tiny_model_config

from pixel_rnn_jax import models


def random_variables(model, image_shape, seed: int = 0, conditioning_dim: int | None = None):
    """Random variables with the model's tree and shapes; biases are non-zero too.

    Unlike `model.init`, nothing is compiled (only shapes are traced), and non-zero biases
    make a sampler that drops or misplaces a bias fail the exactness tests. With
    `conditioning_dim`, the tree includes the layers' conditioning 1x1s for a
    `[batch, height, width, conditioning_dim]` map; a class-conditional model's tree
    includes its class embeddings.
    """
    key = jax.random.PRNGKey(0)
    labels = jnp.zeros(image_shape[:1], jnp.int32) if model.num_classes else None
    if conditioning_dim is None:
        shapes = jax.eval_shape(model.init, key, jnp.zeros(image_shape, jnp.int32), labels)
    else:
        inputs = jnp.zeros(image_shape, jnp.float32)
        conditioning = jnp.zeros((*image_shape[:3], conditioning_dim), jnp.float32)
        init = lambda k, x, c, y: model.init(k, x, c, y, method="logits_from_inputs")
        shapes = jax.eval_shape(init, key, inputs, conditioning, labels)
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if len(leaf.shape) == 1:  # bias
            return jnp.asarray(0.3 * rng.standard_normal(leaf.shape), jnp.float32)
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in), jnp.float32)

    return jax.tree.map(draw, shapes)


def build(name, channels, levels, height, width, batch=3, seed=0, **overrides):
    """A tiny model, random variables and random integer images `[batch, H, W, C]`."""
    model = models.build_model(tiny_model_config(name, channels, levels, **overrides))
    shape = (batch, height, width, channels)
    images = np.random.default_rng(seed + 1).integers(0, levels, shape, dtype=np.int32)
    return model, random_variables(model, shape, seed), jnp.asarray(images)


def keep(position, logits, current):
    """A `run_incremental` choice that keeps the given images (teacher forcing)."""
    del position, logits
    return current


def assert_cached_logits_equal_the_models(model, variables, images, conditioning, labels):
    """The cached walk's teacher-forced logits equal the whole model's, with both inputs."""
    from pixel_rnn_jax.nn import layers
    from pixel_rnn_jax.sampling import cached

    _, logits = jax.jit(
        lambda v, x, c, y: cached.run_incremental(
            model, v, x, keep, conditioning=c, labels=y, collect_logits=True
        )
    )(variables, images, conditioning, labels)
    apply = jax.jit(lambda v, x, c, y: model.apply(v, x, c, y, method="logits_from_inputs"))
    want = apply(
        variables, layers.preprocess_images(images, model.num_levels), conditioning, labels
    )
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=2e-6)
