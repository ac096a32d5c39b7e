"""Autoregressive sampling in raster-then-R,G,B order: naive reference and cached.

Position `p` of an image `[height, width, channels]` is the sub-pixel
`(p // (width * channels), (p // channels) % width, p % channels)`. Each position draws its
randomness from `jax.random.fold_in(rng, p)`, so every sampler given the same `rng` and
the same conditionals draws the same image: 'cached' reproduces 'naive' exactly up to
float rounding of the logits (a draw flips only if its uniform variate falls within
rounding of the threshold, which the tests have never seen).
"""

from __future__ import annotations

import functools
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from pixel_rnn_jax import incremental, layers, models


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


# `start` and `temperature` are traced so that completions of any length and any
# temperature reuse one compiled sampler per model and image shape.
@functools.partial(jax.jit, static_argnames=("model",))
def _sample_naive(model: nn.Module, variables, rng, images, start, temperature):
    _, height, width, channels = images.shape

    def body(position, images):
        row, rest = jnp.divmod(position, width * channels)
        column, channel = jnp.divmod(rest, channels)
        logits = model.apply(variables, images)[:, row, column, channel]
        value = draw(jax.random.fold_in(rng, position), logits, model.num_levels, temperature)
        return images.at[:, row, column, channel].set(value)

    return jax.lax.fori_loop(start, height * width * channels, body, images)


@functools.partial(jax.jit, static_argnames=("model",))
def _sample_cached(model: nn.Module, variables, rng, images, start, temperature):
    def choose(position, logits, current):
        # Positions before `start` are walked too (that fills the caches with the given
        # context) but keep their values.
        value = draw(jax.random.fold_in(rng, position), logits, model.num_levels, temperature)
        return jnp.where(position >= start, value, current)

    images, _ = incremental.run_incremental(model, variables, images, choose)
    return images


# The jitted samplers by method: `(model, variables, rng, images, start, temperature)`, with
# `model` static, `start` an int32 and `temperature` a float32 scalar, images validated.
# `sample` is the checked entry point; `sampling_benchmark` lowers and times these directly.
JITTED_SAMPLERS = {
    "naive": _sample_naive,  # one full forward pass per position: O((H W C)^2), the reference
    "cached": _sample_cached,  # `incremental.run_incremental`: only what each position changes
}
SAMPLING_METHODS = tuple(JITTED_SAMPLERS)


def sample(
    model: nn.Module,
    variables,
    rng: jax.Array,
    images: jax.Array,
    *,
    start: int = 0,
    method: str = "cached",
    temperature: float = 1.0,
) -> jax.Array:
    """Replaces every position >= `start` of `images` by a sample from the model.

    Args:
      model: a model from `models.build_model`.
      variables: its variables.
      rng: PRNG key; position p uses `fold_in(rng, p)`.
      images: integer [batch, height, width, channels]; positions before `start` are kept
        (the given context), the rest are overwritten.
      start: first raster-then-channel position to sample: 0 for unconditional samples,
        `rows * width * channels` to complete images whose top `rows` rows are given.
      method: 'cached' (incremental: per position only the work it changes, see
        `incremental`) or 'naive' (reruns the whole network for every position, the
        reference). Both draw the same images from the same `rng`.
      temperature: > 0; 1 samples the model's distribution, lower is greedier.

    Returns:
      int32 [batch, height, width, channels]; split over this process's devices when the
      batch divides evenly among them (the same images as on one device).
    """
    from pixel_rnn_jax import multiscale  # noqa: PLC0415 - multiscale builds on this module

    if isinstance(model, multiscale.MultiScalePixelRNN):  # its own order: s, then the rest
        return multiscale.sample(
            model, variables, rng, images, start=start, method=method, temperature=temperature
        )
    if method not in SAMPLING_METHODS:
        raise ValueError(f"Unknown sampling method {method!r}; choose one of {SAMPLING_METHODS}.")
    if not isinstance(model, models.PixelRNN):
        raise ValueError(f"sample() draws PixelRNNs in raster order; got a {type(model).__name__}.")
    if method == "cached" and model.name_in_registry not in incremental.CACHED_BODIES:
        raise ValueError(
            f"method='cached' supports the models {sorted(incremental.CACHED_BODIES)}, not "
            f"{model.name_in_registry!r}; use method='naive'."
        )
    images = checked_images(model, images, start, temperature)
    images, variables, rng = _over_local_devices(images, variables, rng)
    return JITTED_SAMPLERS[method](
        model, variables, rng, images, jnp.int32(start), jnp.float32(temperature)
    )


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


def _over_local_devices(images, variables, rng):
    """Splits the batch over this process's devices (when it divides evenly), rest replicated.

    The samplers are batch-parallel, so jit partitions them along the batch; every image
    gets the same values as on one device (its randomness depends only on `rng` and the
    position). With one device, or a batch that does not divide, nothing moves.
    """
    devices = jax.local_devices()
    if len(devices) == 1 or images.shape[0] % len(devices):
        return images, variables, rng
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return (
        jax.device_put(images, batch),
        jax.device_put(variables, replicated),
        jax.device_put(rng, replicated),
    )
