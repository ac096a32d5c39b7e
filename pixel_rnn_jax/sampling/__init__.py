"""Autoregressive sampling: `sample()` picks the sampler of the model's type.

- `naive`: one full forward pass per sub-pixel (the reference).
- `cached`: the incremental walk over positions, using each body's `CachedBody`.
- `raster`: a PixelRNN in raster-then-R,G,B order, by either method.
- `multiscale`: the small image first, then the conditional positions.
- `common`: `draw`, the input checks, and the split of the batch over local devices.

Position `p` of an image `[height, width, channels]` is the sub-pixel
`(p // (width * channels), (p // channels) % width, p % channels)`. Each position draws its
randomness from `jax.random.fold_in(rng, p)`, so every sampler given the same `rng` and
the same conditionals draws the same image: 'cached' reproduces 'naive' exactly up to
float rounding of the logits (a draw flips only if its uniform variate falls within
rounding of the threshold, which the tests have never seen).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import linen as nn

from pixel_rnn_jax.models.multiscale import MultiScalePixelRNN
from pixel_rnn_jax.models.pixel_rnn import PixelRNN
from pixel_rnn_jax.sampling.common import checked_images, draw
from pixel_rnn_jax.sampling.multiscale import sample_multiscale
from pixel_rnn_jax.sampling.raster import JITTED_SAMPLERS, SAMPLING_METHODS, sample_pixel_rnn

# The sampler of each model type: (model, variables, rng, images, *, start, method,
# temperature, labels) -> images. Each model type defines its own sampling order.
SAMPLERS: dict[type, Callable[..., jax.Array]] = {
    PixelRNN: sample_pixel_rnn,  # raster, then R, G, B
    MultiScalePixelRNN: sample_multiscale,  # s first, then the rest given s
}


def sample(
    model: nn.Module,
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
      model: a model from `models.build_model`.
      variables: its variables.
      rng: PRNG key; position p uses `fold_in(rng, p)` (see the model type's sampler).
      images: integer [batch, height, width, channels]; positions before `start` are kept
        (the given context), the rest are overwritten.
      start: first raster-then-channel position to sample: 0 for unconditional samples,
        `rows * width * channels` to complete images whose top `rows` rows are given.
      method: 'cached' (per position only the work it changes) or 'naive' (reruns the whole
        network for every position, the reference). Both draw the same images.
      temperature: > 0; 1 samples the model's distribution, lower is greedier.
      labels: integer `[batch]` in `[0, model.num_classes)` for a class-conditional model
        (`model.num_classes > 0`; required there): image i is drawn from p(x | labels[i]).
        A label given to an unconditional model is a ValueError.

    Returns:
      int32 [batch, height, width, channels].
    """
    sampler = SAMPLERS.get(type(model))
    if sampler is None:
        raise ValueError(
            f"No sampler for a {type(model).__name__}; sample() knows "
            f"{sorted(t.__name__ for t in SAMPLERS)}."
        )
    return sampler(
        model,
        variables,
        rng,
        images,
        start=start,
        method=method,
        temperature=temperature,
        labels=labels,
    )


__all__ = [
    "JITTED_SAMPLERS",
    "SAMPLERS",
    "SAMPLING_METHODS",
    "checked_images",
    "draw",
    "sample",
]
