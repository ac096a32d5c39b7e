"""Sampling a PixelRNN in raster-then-R,G,B order, by either method."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pixel_rnn_jax.models import pixel_rnn
from pixel_rnn_jax.sampling import cached, common, naive

# The jitted samplers by method: `(model, variables, rng, images, start, temperature,
# labels=None)`, with `model` static, `start` an int32 and `temperature` a float32 scalar,
# images (and the int32 `[batch]` labels of a class-conditional model) validated.
# `sample_pixel_rnn` is the checked entry point; the sampling benchmark lowers and times
# these directly.
JITTED_SAMPLERS = {
    "naive": naive.sample_naive,  # one full forward pass per position: the reference
    "cached": cached.sample_cached,  # `cached.run_incremental`: only what each position changes
}
SAMPLING_METHODS = tuple(JITTED_SAMPLERS)


def sample_pixel_rnn(
    model: pixel_rnn.PixelRNN,
    variables,
    rng: jax.Array,
    images: jax.Array,
    *,
    start: int = 0,
    method: str = "cached",
    temperature: float = 1.0,
    labels: jax.Array | None = None,
) -> jax.Array:
    """Replaces every position >= `start` of `images` by a sample from the model.

    Args:
      model: a `PixelRNN` from `models.build_model`.
      variables: its variables.
      rng: PRNG key; position p uses `fold_in(rng, p)`.
      images: integer [batch, height, width, channels]; positions before `start` are kept
        (the given context), the rest are overwritten.
      start: first raster-then-channel position to sample: 0 for unconditional samples,
        `rows * width * channels` to complete images whose top `rows` rows are given.
      method: 'cached' (incremental: per position only the work it changes, see
        `sampling.cached`) or 'naive' (reruns the whole network for every position, the
        reference). Both draw the same images from the same `rng`.
      temperature: > 0; 1 samples the model's distribution, lower is greedier.
      labels: integer `[batch]` in `[0, model.num_classes)`: image i is drawn from
        p(x | labels[i]). Required by a class-conditional model, refused by others.

    Returns:
      int32 [batch, height, width, channels]; split over this process's devices when the
      batch divides evenly among them (the same images as on one device).
    """
    if method not in SAMPLING_METHODS:
        raise ValueError(f"Unknown sampling method {method!r}; choose one of {SAMPLING_METHODS}.")
    if method == "cached" and model.name_in_registry not in cached.CACHED_BODIES:
        raise ValueError(
            f"method='cached' supports the models {sorted(cached.CACHED_BODIES)}, not "
            f"{model.name_in_registry!r}; use method='naive'."
        )
    images = common.checked_images(model, images, start, temperature)
    labels = common.checked_labels(model, labels, images.shape[0])
    images, variables, rng, labels = common.over_local_devices(images, variables, rng, labels)
    return JITTED_SAMPLERS[method](
        model, variables, rng, images, jnp.int32(start), jnp.float32(temperature), labels
    )
