"""Exact discrete log-likelihoods in nats, and bits per dimension.

`log_likelihood(model.apply(variables, x), x, num_levels)` is log p(x) for every model,
the multi-scale one included; `multiscale_log_likelihood_parts` splits the multi-scale
model's log p(x) into its two networks' terms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from pixel_rnn_jax.models import multiscale
from pixel_rnn_jax.nn import layers


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


def multiscale_log_likelihood_parts(
    model: multiscale.MultiScalePixelRNN, variables, images: jax.Array, labels=None
):
    """The two terms of log p(x), each computed by its own network alone.

    Args:
      model: a MultiScalePixelRNN.
      variables: its variables.
      images: integer `[batch, height, width, channels]` in [0, num_levels).
      labels: integer `[batch]` for a class-conditional model (then both terms are given
        y), None otherwise.

    Returns:
      (log p_small(s), log p_cond(rest | s)), each `[batch]` in nats; their sum equals
      `log_likelihood(model.apply(variables, images, labels=labels), images, num_levels)`.
    """
    images = jnp.asarray(images)
    layers.validate_images(images, model.num_channels, model.num_levels)
    layers.validate_labels(labels, images.shape[0], model.num_classes)
    levels, f = model.num_levels, model.factor
    small_images = multiscale.subsample(images, f)
    small_logits = model.apply(
        variables, small_images, labels, method=multiscale.MultiScalePixelRNN.small_logits
    )
    small_ll = log_likelihood(small_logits, small_images, levels)
    inputs = layers.preprocess_images(images, levels)
    conditional_logits = model.apply(
        variables,
        inputs,
        multiscale.subsample(inputs, f),
        labels,
        method=multiscale.MultiScalePixelRNN.conditional_logits,
    )
    per_dim = log_prob_per_dim(conditional_logits, images, levels)
    off_grid = ~multiscale.grid_mask(images.shape[1], images.shape[2], f)
    conditional_ll = jnp.sum(jnp.where(off_grid[None, :, :, None], per_dim, 0.0), axis=(1, 2, 3))
    return small_ll, conditional_ll
