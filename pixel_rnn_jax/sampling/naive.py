"""The reference sampler: one full forward pass of the model per sub-pixel, O((H W C)^2)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.sampling import common


# `start` and `temperature` are traced so that completions of any length and any
# temperature reuse one compiled sampler per model and image shape.
@functools.partial(jax.jit, static_argnames=("model",))
def sample_naive(model: nn.Module, variables, rng, images, start, temperature, labels=None):
    _, height, width, channels = images.shape

    def body(position, images):
        row, rest = jnp.divmod(position, width * channels)
        column, channel = jnp.divmod(rest, channels)
        logits = model.apply(variables, images, labels)[:, row, column, channel]
        value = common.draw(
            jax.random.fold_in(rng, position), logits, model.num_levels, temperature
        )
        return images.at[:, row, column, channel].set(value)

    return jax.lax.fori_loop(start, height * width * channels, body, images)
