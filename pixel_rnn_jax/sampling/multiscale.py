"""Sampling the Multi-Scale PixelRNN: the small image s first, then the rest given s.

s is drawn with the PixelRNN sampler of the small model; then every position off the grid in
raster order with s fixed, both parts with the same method: 'cached' walks the conditional
network with `cached.run_incremental` (the conditioning map computed once and given to it),
'naive' reruns the conditional network for every position. Both draw the same images.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from pixel_rnn_jax.models import multiscale
from pixel_rnn_jax.nn import layers
from pixel_rnn_jax.sampling import cached, common
from pixel_rnn_jax.sampling.raster import sample_pixel_rnn


def conditioning_map(model, variables, images):
    """The encoded, upsampled map of s = images[:, ::f, ::f] (s is fixed once drawn or coded).

    Computed once per walk: the cached walks of the conditional network take it whole.
    """
    _, height, width, _ = images.shape
    inputs = layers.preprocess_images(images, model.num_levels)
    small_inputs = multiscale.subsample(inputs, model.factor)
    return model.apply(
        variables, small_inputs, height, width, method=multiscale.MultiScalePixelRNN.conditioning
    )


def walk_conditional(model, variables, images, choose, labels=None):
    """The cached walk of the conditional network over every position, s fixed.

    The one multi-scale walk of the sampler and the coder (`coding.lockstep`), which differ
    only in how a position's value is chosen.

    Args:
      model: a MultiScalePixelRNN.
      variables: its variables.
      images: integer `[batch, height, width, channels]` holding s at the grid positions.
      choose: `(position, logits, current, on_grid) -> values [batch]` (traced), as
        `cached.run_incremental`'s, told whether the position is on the small grid (whose
        values s already holds).
      labels: integer `[batch]` for a class-conditional model, else None.

    Returns:
      The images as chosen.
    """
    _, _, width, channels = images.shape

    def choose_position(position, logits, current):
        grid = multiscale.position_on_grid(position, width, channels, model.factor)
        return choose(position, logits, current, grid)

    images, _ = cached.run_incremental(
        model.conditional,
        multiscale.conditional_variables(variables),
        images,
        choose_position,
        conditioning=conditioning_map(model, variables, images),
        labels=labels,
    )
    return images


# `first` and `temperature` are traced so that completions of any length reuse one program.
@functools.partial(jax.jit, static_argnames=("model",))
def _sample_conditional(model, variables, rng, images, positions, first, temperature, labels=None):
    """Draws `images` at `positions[first:]` (off the grid) one conditional pass each."""
    _, height, width, channels = images.shape
    conditioning = conditioning_map(model, variables, images)

    def body(index, images):
        position = positions[index]
        row, rest = jnp.divmod(position, width * channels)
        column, channel = jnp.divmod(rest, channels)
        inputs = layers.preprocess_images(images, model.num_levels)
        logits = model.apply(
            variables,
            inputs,
            conditioning,
            labels,
            method=multiscale.MultiScalePixelRNN.conditional_from_map,
        )[:, row, column, channel]
        key = jax.random.fold_in(rng, position)
        value = common.draw(key, logits, model.num_levels, temperature)
        return images.at[:, row, column, channel].set(value)

    return jax.lax.fori_loop(first, positions.shape[0], body, images)


@functools.partial(jax.jit, static_argnames=("model",))
def _sample_conditional_cached(model, variables, rng, images, start, temperature, labels=None):
    """`_sample_conditional` by `cached.run_incremental` over the conditional network.

    Every position is walked (that fills the caches); positions on the grid or before
    `start` keep their values, the others are drawn with `fold_in(rng, position)`, the keys
    the naive sampler uses, so both give the same images.
    """

    def choose(position, logits, current, on_grid):
        value = common.draw(
            jax.random.fold_in(rng, position), logits, model.num_levels, temperature
        )
        return jnp.where((position >= start) & ~on_grid, value, current)

    return walk_conditional(model, variables, images, choose, labels)


def sample_multiscale(
    model: multiscale.MultiScalePixelRNN,
    variables,
    rng: jax.Array,
    images: jax.Array,
    *,
    start: int = 0,
    method: str = "cached",
    temperature: float = 1.0,
    labels: jax.Array | None = None,
) -> jax.Array:
    """Replaces every position >= `start` of `images` by a sample: s first, then the rest.

    The small image is drawn by `sample_pixel_rnn(model.small, ...)` with the first key of
    `jax.random.split(rng)` (so it equals that sample exactly), from its positions whose
    full-image position is < `start` (a completion's given rows give s's top rows too). Then
    every position off the grid and >= `start` is drawn in raster-then-channel order from
    the conditional network with s fixed, position p with `fold_in(second key, p)`.

    Completions sample s's missing rows from p_small(s_rest | s_given), which does not see
    the given pixels off the grid: an approximation of p(x_rest | x_given) inherent to the
    multi-scale factorisation (the conditional part is exact).

    Args:
      model: a MultiScalePixelRNN.
      variables: its variables.
      rng: PRNG key.
      images: integer [batch, height, width, channels]; positions before `start` are kept.
      start: first raster-then-channel position to sample (as in `sample_pixel_rnn`).
      method: 'cached' or 'naive' (see `sample_pixel_rnn`), for both parts; they draw the
        same images.
      temperature: > 0, for both parts.
      labels: integer `[batch]` for a class-conditional model (both parts are given them),
        None otherwise.

    Returns:
      int32 [batch, height, width, channels].
    """
    images = common.checked_images(model, images, start, temperature)
    labels = common.checked_labels(model, labels, images.shape[0])
    _, height, width, channels = images.shape
    f = model.factor
    grid, rest = multiscale.split_positions(height, width, channels, f)
    small_rng, conditional_rng = jax.random.split(rng)
    small = sample_pixel_rnn(
        model.small,
        multiscale.small_variables(variables),
        small_rng,
        multiscale.subsample(images, f),
        start=int(np.searchsorted(grid, start)),  # s's positions given by the completion
        method=method,
        temperature=temperature,
        labels=labels,
    )
    images = images.at[:, ::f, ::f].set(small)
    if method == "cached":
        return _sample_conditional_cached(
            model,
            variables,
            conditional_rng,
            images,
            jnp.int32(start),
            jnp.float32(temperature),
            labels,
        )
    return _sample_conditional(
        model,
        variables,
        conditional_rng,
        images,
        jnp.asarray(rest),
        jnp.int32(np.searchsorted(rest, start)),
        jnp.float32(temperature),
        labels,
    )
