"""What every sampler shares: drawing a value from logits, input checks, device placement."""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax import parallel
from pixel_rnn_jax.nn import layers


def draw(rng: jax.Array, logits: jax.Array, num_levels: int, temperature: float) -> jax.Array:
    """Samples integer values from logits of one sub-pixel per image.

    Args:
      rng: PRNG key.
      logits: [batch] Bernoulli logits (num_levels == 2) or [batch, num_levels].
      num_levels: 2 or the number of categorical levels.
      temperature: logits are divided by it; must be > 0.

    Returns:
      int32 [batch] in [0, num_levels).
    """
    scaled = logits / temperature
    if num_levels == 2:
        return jax.random.bernoulli(rng, jax.nn.sigmoid(scaled)).astype(jnp.int32)
    return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)


def checked_images(model: nn.Module, images, start, temperature: float) -> jax.Array:
    """`images` as int32 after checking them, `start` and `temperature` (see `sample`).

    Raises:
      ValueError: images not `[batch, height, width, model.num_channels]` integers in
        `[0, model.num_levels)`, `start` not an integer position in `[0, height * width *
        channels]`, or `temperature` not a finite number > 0.
    """
    images = jnp.asarray(images)
    layers.validate_images(images, model.num_channels, model.num_levels)
    total = images.shape[1] * images.shape[2] * images.shape[3]
    if isinstance(start, bool) or not isinstance(start, numbers.Integral):
        raise ValueError(f"start must be an integer position; got {start!r}.")
    if not 0 <= start <= total:
        raise ValueError(f"start must be in [0, {total}] for images {images.shape}; got {start}.")
    if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)) or (
        temperature <= 0
    ):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    return images.astype(jnp.int32)


def checked_labels(model: nn.Module, labels, batch: int) -> jax.Array | None:
    """`labels` as int32 `[batch]` after checking them against the model (None stays None).

    Raises:
      ValueError: labels missing for a class-conditional model, given to an unconditional
        one, or not integers `[batch]` in `[0, model.num_classes)`.
    """
    if labels is not None:
        labels = jnp.asarray(labels)
    layers.validate_labels(labels, batch, model.num_classes)
    return None if labels is None else labels.astype(jnp.int32)


def over_local_devices(images, variables, rng, labels=None):
    """Splits the batch over this process's devices (when it divides evenly), rest replicated.

    The samplers are batch-parallel, so jit partitions them along the batch; every image
    gets the same values as on one device (its randomness depends only on `rng` and the
    position). With one device, or a batch that does not divide, nothing moves.

    Returns:
      (images, variables, rng, labels); `labels` (`[batch]` or None) split like the images.
    """
    devices = jax.local_devices()
    if len(devices) == 1 or images.shape[0] % len(devices):
        return images, variables, rng, labels
    mesh = parallel.make_mesh(devices)
    batch = parallel.batch_sharding(mesh)
    replicated = parallel.replicated_sharding(mesh)
    return (
        jax.device_put(images, batch),
        jax.device_put(variables, replicated),
        jax.device_put(rng, replicated),
        None if labels is None else jax.device_put(labels, batch),
    )
