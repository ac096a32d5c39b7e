"""Exact discrete log-likelihoods in nats, and bits per dimension."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def log_prob_per_dim(logits: jax.Array, images: jax.Array, num_levels: int) -> jax.Array:
    """log p(x_d | x_<d) for every sub-pixel, in nats.

    Args:
      logits: [batch, height, width, channels] Bernoulli logits (num_levels == 2) or
        [batch, height, width, channels, num_levels] categorical logits.
      images: integer [batch, height, width, channels] in [0, num_levels).
      num_levels: 2 or the number of categorical levels.

    Returns:
      [batch, height, width, channels] log-probabilities.
    """
    if num_levels == 2:
        # log sigmoid(l) for x = 1 and log sigmoid(-l) for x = 0, without overflow.
        signs = 2.0 * images.astype(logits.dtype) - 1.0
        return jax.nn.log_sigmoid(signs * logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(log_probs, images[..., None].astype(jnp.int32), axis=-1)[..., 0]


def log_likelihood(logits: jax.Array, images: jax.Array, num_levels: int) -> jax.Array:
    """log p(image) in nats for each image of the batch: `[batch]`."""
    return jnp.sum(log_prob_per_dim(logits, images, num_levels), axis=(1, 2, 3))


def nll_bits_per_dim(nll_nats: jax.Array | float, num_dims: int) -> jax.Array | float:
    """Negative log-likelihood in nats per image -> bits per dimension (sub-pixel)."""
    return nll_nats / (num_dims * math.log(2.0))
