"""Incremental evaluation of the PixelRNN models one pixel at a time, for fast sampling.

`run_incremental` walks the positions of `[batch, height, width, channels]` images in
raster-then-R,G,B order and computes each position's logits from caches, doing only the work
that the new position changes, with the same parameters and the same pure math as the Linen
model. The walk is generic; what a body does at a pixel is its `CachedBody`, defined beside
its layer (`models.row_lstm`, `models.diagonal_lstm`, `models.pixelcnn`), and the stack
around it (first k x k mask-A convolution on the image window above and left of the pixel,
L skip 1x1s and the output stack at that pixel only) is `models.pixel_rnn.pixel_logits`.

Features of a pixel depend on its own channels only through the colour masks and never on
its last channel, so each channel re-evaluates the pixel from the same caches (3 small
evaluations per RGB pixel); the last evaluation, which has seen every channel the features
can see, is the one written to the caches.

An optional conditioning map known in full (the multi-scale model's conditional network,
`PixelRNN.logits_from_inputs(inputs, conditioning)`) adds each unit's unmasked 1x1 of the
map at the pixel (and along the row, for the right-to-left sweep). A class-conditional
model's labels add the same vector at every pixel, so each body's `prepare` folds every
unit's class embedding into that unit's bias once per sample (`[batch, features]` biases).

"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pixel_rnn_jax.models import pixel_rnn
from pixel_rnn_jax.nn import incremental, layers
from pixel_rnn_jax.sampling import common

# (position, logits of that sub-pixel [batch] or [batch, levels], current values [batch])
# -> the values [batch] to write at that position.
ChooseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

# The body kinds by model name, each with its cached body (`Body.cached`): the registry
# itself, so that a kind registered later (`models.registered_body`) is found too.
CACHED_BODIES: dict[str, pixel_rnn.Body] = pixel_rnn.BODIES


def run_incremental(
    model: pixel_rnn.PixelRNN,
    variables: incremental.Params,
    images: jax.Array,
    choose: ChooseFn,
    *,
    conditioning: jax.Array | None = None,
    labels: jax.Array | None = None,
    collect_logits: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Walks every position in raster-then-channel order, choosing its value from its logits.

    Pure and traceable; jit it from the caller (`sample_cached` does). The compiled program
    is one loop over rows and one over columns, so it does not grow with the image size.

    Args:
      model: a model from `models.build_model` whose name is in `CACHED_BODIES`.
      variables: its variables; only `variables['params']` is read.
      images: int32 [batch, height, width, channels] in [0, num_levels): the starting values.
      choose: `(position, logits, current) -> values`; `logits` are the model's logits of
        that sub-pixel given all earlier positions ([batch] Bernoulli logits or
        [batch, levels]), `current` the value in `images` there ([batch]); the returned
        int32 [batch] values are written and seen by all later positions.
      conditioning: optional [batch, height, width, c] map known in full, as passed to
        `model.logits_from_inputs` (the multi-scale model's conditional network); the model's
        variables must then hold the layers' conditioning 1x1s.
      labels: integer `[batch]` in `[0, model.num_classes)` for a class-conditional model
        (required there, refused otherwise); each unit's class embedding is folded into
        its bias once, by the body's `prepare`.
      collect_logits: also return the logits of every position (for tests; costs memory).

    Returns:
      (images with every position's chosen value, logits shaped like `model.apply`'s
      output or None).
    """
    params = variables["params"]
    body = CACHED_BODIES[model.name_in_registry].cached
    # The walk computes in the model's dtype, as the Linen model does (states, logits float32).
    shell = incremental.in_compute_dtype(pixel_rnn.prepare_shell(model, params), model.dtype)
    batch, height, width, channels = images.shape
    layers.validate_labels(labels, batch, model.num_classes)
    body_params = incremental.in_compute_dtype(
        body.prepare(model, params, layers.one_hot_labels(labels, model.num_classes)), model.dtype
    )
    if conditioning is not None:
        if conditioning.shape[:3] != (batch, height, width):
            raise ValueError(
                f"conditioning must be [batch, height, width, c] = [{batch}, {height}, "
                f"{width}, c] like the images; got {conditioning.shape}."
            )
        kernels = [v for layer in body_params for k, v in layer.items() if "conditioning" in k]
        if any(kernel is None for kernel in kernels):
            raise ValueError(
                "conditioning was given but the variables hold no conditioning 1x1s; "
                "initialise the model with a conditioning map."
            )
    k = model.first_kernel_size
    half = k // 2
    encode = lambda values: layers.preprocess_images(values, model.num_levels)
    # The completed rows in [-1, 1] between the first convolution's zero padding, pixel
    # (i, j) at (i + k//2, j + k//2); updated once per row, read-only along a row.
    pad = ((0, 0), (half, 0), (half, (k - 1) // 2), (0, 0))
    rows = jnp.pad(encode(images), pad)
    logits_shape = (batch, height, width, channels)
    if model.num_levels != 2:
        logits_shape += (model.num_levels,)
    all_logits = jnp.zeros(logits_shape, jnp.float32) if collect_logits else None
    right_of_pixel = jnp.zeros((batch, k - half - 1, channels), jnp.float32)  # masked

    def pixel_step(row, rows, column, carry):
        # `recent`: the current row's pixels j - k//2 .. j in [-1, 1], pixel j's channels
        # filled in as they are drawn (the rest masked). `current` values come from the
        # untouched input `images`, not the carry: reading and writing one buffer in a loop
        # step makes XLA copy it at every step.
        out, recent, cache, all_logits = carry
        recent = incremental.shift_in(recent, jnp.zeros((batch, channels), jnp.float32), axis=1)
        above = jax.lax.dynamic_slice(rows, (0, row, column, 0), (batch, half, k, channels))
        pixel_conditioning = None if conditioning is None else conditioning[:, row, column]

        def channel_step(channel, carry):
            # Every channel is evaluated from the same caches; the returned column state of
            # the last one, which has seen every channel the features can see, is kept.
            out, recent, _, all_logits = carry
            current_row = jnp.concatenate([recent, right_of_pixel], axis=1)
            window = jnp.concatenate([above, current_row[:, None]], axis=1)
            column_state, logits = pixel_rnn.pixel_logits(
                model, shell, body_params, cache, window, column, pixel_conditioning
            )
            logits = jax.lax.dynamic_index_in_dim(logits, channel, axis=1, keepdims=False)
            position = (row * width + column) * channels + channel
            value = choose(position, logits, images[:, row, column, channel])
            value = value.astype(out.dtype)
            out = out.at[:, row, column, channel].set(value)
            recent = recent.at[:, half, channel].set(encode(value))
            if collect_logits:
                all_logits = all_logits.at[:, row, column, channel].set(logits)
            return out, recent, column_state, all_logits

        if channels == 1:
            carry = channel_step(0, (out, recent, None, all_logits))
        else:  # a loop, not 3 copies of the pixel: a third of the compile time
            state_shape = jax.eval_shape(channel_step, 0, (out, recent, None, all_logits))[2]
            no_state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state_shape)
            carry = jax.lax.fori_loop(
                0, channels, channel_step, (out, recent, no_state, all_logits)
            )
        out, recent, column_state, all_logits = carry
        cache = body.write(model, cache, column_state, column)
        return out, recent, cache, all_logits

    def row_step(row, carry):
        out, rows, cache, all_logits = carry
        cache = body.start_row(model, body_params, cache)
        recent = jnp.zeros((batch, half + 1, channels), jnp.float32)
        out, _, cache, all_logits = jax.lax.fori_loop(
            0,
            width,
            lambda column, c: pixel_step(row, rows, column, c),
            (out, recent, cache, all_logits),
        )
        image_row = encode(jax.lax.dynamic_index_in_dim(out, row, axis=1, keepdims=False))
        rows = jax.lax.dynamic_update_slice(rows, image_row[:, None], (0, row + half, half, 0))
        conditioning_row = None
        if conditioning is not None:
            conditioning_row = jax.lax.dynamic_index_in_dim(conditioning, row, 1, keepdims=False)
        cache = body.end_row(model, body_params, cache, image_row, conditioning_row)
        return out, rows, cache, all_logits

    cache = body.init(model, batch, width)
    out, _, _, all_logits = jax.lax.fori_loop(
        0, height, row_step, (images, rows, cache, all_logits)
    )
    return out, all_logits


# `start` and `temperature` are traced so that completions of any length and any
# temperature reuse one compiled sampler per model and image shape.
@functools.partial(jax.jit, static_argnames=("model",))
def sample_cached(
    model: pixel_rnn.PixelRNN, variables, rng, images, start, temperature, labels=None
):
    """Draws positions >= `start` by `run_incremental`, position p with `fold_in(rng, p)`."""

    def choose(position, logits, current):
        # Positions before `start` are walked too (that fills the caches with the given
        # context) but keep their values.
        value = common.draw(
            jax.random.fold_in(rng, position), logits, model.num_levels, temperature
        )
        return jnp.where(position >= start, value, current)

    images, _ = run_incremental(model, variables, images, choose, labels=labels)
    return images
