"""Jacobian probes of a model's dependency structure, shared by the model tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pixel_rnn_jax import models


def tiny_model_config(name: str, num_channels: int, num_levels: int, **overrides):
    config = models.default_model_config()
    config.name = name
    config.num_layers = 2
    config.hidden_dim = 6
    config.output_dim = 9
    config.num_channels = num_channels
    config.num_levels = num_levels
    config.update(overrides)
    return config


def dependency_matrix(config, height: int, width: int, num_probes: int = 3, seed: int = 0):
    """Which input sub-pixels each output sub-pixel depends on, by the exact Jacobian.

    Returns:
      bool [H * W * C, H * W * C] indexed (output, input) in raster-then-channel order,
      OR-ed over `num_probes` random inputs and random parameters so that a dependency
      hidden by an inactive ReLU at one point still shows. A class-conditional config
      (`num_classes > 0`) is probed with a different label at every probe.
    """
    model = models.build_model(config)
    channels, levels = config.num_channels, config.num_levels
    rng = jax.random.PRNGKey(seed)
    images = jnp.zeros((1, height, width, channels), jnp.int32)
    found = np.zeros((height * width * channels,) * 2, dtype=bool)
    num_classes = config.get("num_classes", 0)

    def outputs(x, variables, projection, labels):
        logits = model.apply(variables, x[None], labels=labels, method="logits_from_inputs")[0]
        if levels != 2:  # random projection of the level logits: one scalar per sub-pixel
            logits = logits @ projection
        return logits.reshape(-1)

    jacobian_fn = jax.jit(jax.jacrev(outputs))  # one compile serves every probe
    for probe in range(num_probes):
        key_params, key_x, key_proj = jax.random.split(jax.random.fold_in(rng, probe), 3)
        labels = jnp.full((1,), probe % num_classes, jnp.int32) if num_classes else None
        variables = model.init(key_params, images, labels)
        projection = jax.random.normal(key_proj, (levels,))
        x = jax.random.uniform(key_x, (height, width, channels), minval=-1.0, maxval=1.0)
        jacobian = jacobian_fn(x, variables, projection, labels).reshape(found.shape)
        found |= np.asarray(jnp.abs(jacobian) > 0)
    return found


def pixel_dependencies(deps: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Collapses channels: bool [H, W, H, W], pixel (i, j) output depends on pixel (r, c)."""
    d = deps.reshape(height, width, channels, height, width, channels)
    return d.any(axis=(2, 5))
