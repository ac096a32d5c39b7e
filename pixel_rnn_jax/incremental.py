"""Incremental evaluation of the PixelRNN models one pixel at a time, for fast sampling.

`run_incremental` walks the positions of `[batch, height, width, channels]` images in
raster-then-R,G,B order and computes each position's logits from caches, doing only the work
that the new position changes, with the same parameters and the same pure math as the Linen
model (`masks.kernel_mask`, `lstm_cell`, `row_lstm.row_state_to_gates`,
`diagonal_lstm.diagonal_lstm_cell`). Work per position, for L layers with h hidden units:

- every model: the first k x k mask-A convolution on the image window above and left of
  the pixel, L skip 1x1s and the output stack at that pixel only.
- Row LSTM: per layer, the 1 x k mask-B input-to-state on the layer's input at columns
  j - k//2 .. j of the current row (cached), the LSTM cell, the 1x1 output; once per row,
  the state-to-state 1 x k convolution of the previous row's hidden states (O(1) per pixel).
- Diagonal BiLSTM: per layer, the left-to-right cell from the states at (i - 1, j) and
  (i, j - 1); once per completed row, a right-to-left sweep of that row for every layer,
  whose output is what the next row adds (the shift-down), O(1) per pixel amortised.
- PixelCNN: per block, the 1x1s at the pixel and the k x k mask-B convolution of a window of
  the block's cached activations (its k//2 rows above and the current row, the queues of
  Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models").

Features of a pixel depend on its own channels only through the colour masks and never on
its last channel, so each channel re-evaluates the pixel from the same caches (3 small
evaluations per RGB pixel); the last evaluation, which has seen every channel the features
can see, is the one written to the caches.

An optional conditioning map known in full (the multi-scale model's conditional network,
`PixelRNN.logits_from_inputs(inputs, conditioning)`) adds each unit's unmasked 1x1 of the
map at the pixel (and along the row, for the right-to-left sweep).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax import layers, masks
from pixel_rnn_jax.diagonal_lstm import diagonal_lstm_cell
from pixel_rnn_jax.lstm_cell import NUM_GATES, lstm_cell
from pixel_rnn_jax.row_lstm import row_state_to_gates

Params = Any  # a (nested) dict of arrays
Cache = dict[str, jax.Array]
# (position, logits of that sub-pixel [batch] or [batch, levels], current values [batch])
# -> the values [batch] to write at that position.
ChooseFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


# ---------------------------------------------------------------------------------------
# Masked kernels read back from the Linen parameters.


def causal_rows(kernel: jax.Array, mask_type: str, num_groups: int, num_gates: int = 1):
    """Masks a `[kh, kw, in, out]` kernel as `MaskedConv2D` does; keeps rows 0 .. kh//2.

    The rows below the centre are entirely masked, so a pixel's value only needs the
    `kh//2 + 1` rows of the map at and above it.
    """
    mask = masks.kernel_mask(kernel.shape, mask_type, num_groups, num_gates)
    return (kernel * jnp.asarray(mask))[: kernel.shape[0] // 2 + 1]


def masked_dense(params: Params, num_groups: int, num_gates: int = 1) -> Params:
    """A mask-B 1x1 convolution's parameters as a `[in, out]` matrix and its bias."""
    kernel = causal_rows(params["kernel"], "B", num_groups, num_gates)[0, 0]
    return {"kernel": kernel, "bias": params["bias"]}


def dense(params: Params, x: jax.Array) -> jax.Array:
    """`x [batch, in] @ kernel + bias` (a 1x1 convolution at one pixel)."""
    return x @ params["kernel"] + params["bias"]


def window_conv(window: jax.Array, kernel: jax.Array) -> jax.Array:
    """A convolution's value at one pixel from its causal window, without the bias.

    Args:
      window: [batch, kh//2 + 1, kw, in] map values at rows i - kh//2 .. i and columns
        j - kw//2 .. j + (kw - 1)//2 (those right of the centre on row i are masked).
      kernel: [kh//2 + 1, kw, in, out] from `causal_rows`.

    Returns:
      [batch, out].
    """
    # One matmul over the flattened window: an einsum with three contracted axes made XLA
    # transpose the window and the kernel at every pixel.
    return window.reshape(window.shape[0], -1) @ kernel.reshape(-1, kernel.shape[-1])


def _at_column(x: jax.Array, column: jax.Array, axis: int) -> jax.Array:
    return jax.lax.dynamic_index_in_dim(x, column, axis=axis, keepdims=False)


def _write_column(x: jax.Array, update: jax.Array, column: jax.Array, axis: int) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(x, update, column, axis)


def _recurrent_layer_params(params: Params, unit_name: str, index: int):
    """Parameters of the LSTM layer inside residual unit `index` (`row_lstm_0/layer`)."""
    return params[f"{unit_name}_{index}"]["layer"]


class CachedBody(NamedTuple):
    """The model-specific part of incremental evaluation: the body's units at one pixel.

    All functions are pure and take the model (static configuration) first. A pixel is
    evaluated from the caches and returns its `column_state` (small `[layers, batch, ...]`
    arrays), which `write` adds to the caches afterwards; so the channels of a pixel are all
    evaluated from the same caches. Within a row every row-sized cache is either only read
    or only written, and values read back within the row live in small carries: XLA then
    updates the caches in place instead of copying them at every pixel.
    """

    # (model, params) -> body parameters (masked kernels), read from variables['params'].
    prepare: Callable[[nn.Module, Params], Params]
    # (model, batch, width) -> caches for the top row.
    init: Callable[[nn.Module, int, int], Cache]
    # (model, body parameters, caches) -> caches, before the pixels of a row.
    start_row: Callable[[nn.Module, Params, Cache], Cache]
    # (model, body parameters, caches, first-layer features [batch, 2h], column,
    #  conditioning [batch, c] at the pixel or None)
    #   -> (column_state, the output [batch, 2h] of every unit).
    pixel: Callable[..., tuple[Cache, list[jax.Array]]]
    # (model, caches, column_state, column) -> caches.
    write: Callable[[nn.Module, Cache, Cache, jax.Array], Cache]
    # (model, body parameters, caches, image row [batch, width, channels] in [-1, 1],
    #  conditioning row [batch, width, c] or None) -> caches, after the last pixel of a row.
    end_row: Callable[..., Cache]


def _no_row_work(model: nn.Module, body_params: Params, cache: Cache, *unused) -> Cache:
    del model, body_params, unused
    return cache


def _residual(model: nn.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return x + y if model.use_residual else y


def _conditioning_kernel(layer: Params, name: str) -> jax.Array | None:
    """The unmasked 1x1 (Dense) `[c, features]` of the conditioning map, if the layer has one."""
    return layer[name]["kernel"] if name in layer else None


def _add_conditioning(pre_activation, conditioning, kernel):
    """Adds `conditioning @ kernel` as the layers' `nn.Dense(use_bias=False)` does."""
    if conditioning is None:
        return pre_activation
    return pre_activation + conditioning @ kernel


def _shift_in(register: jax.Array, value: jax.Array, axis: int) -> jax.Array:
    """Drops the oldest entry of a shift register along `axis` and appends `value` there."""
    value = jnp.expand_dims(value, axis)
    return jax.lax.slice_in_dim(jnp.concatenate([register, value], axis), 1, None, axis=axis)


# ---------------------------------------------------------------------------------------
# Row LSTM.


def _row_lstm_prepare(model: nn.Module, params: Params) -> Params:
    groups, half = model.num_channels, model.recurrent_kernel_size // 2
    body = []
    for index in range(model.num_layers):
        layer = _recurrent_layer_params(params, "row_lstm", index)
        kernel = causal_rows(layer["input_to_state"]["kernel"], "B", groups, NUM_GATES)
        body.append(
            {
                # [k//2 + 1, 2h, 4h]: the causal columns j - k//2 .. j of the 1 x k kernel.
                "input_kernel": kernel[0, : half + 1],
                "input_bias": layer["input_to_state"]["bias"],
                "state_kernel": layer["state_to_state"],  # [k * h, 4h]
                "conditioning": _conditioning_kernel(layer, "conditioning"),  # [c, 4h]
                "output": masked_dense(params[f"row_lstm_{index}"]["output"], groups),
            }
        )
    return body


def _row_lstm_init(model: nn.Module, batch: int, width: int) -> Cache:
    num_layers, h = model.num_layers, model.hidden_dim
    half = model.recurrent_kernel_size // 2
    zeros = lambda *shape: jnp.zeros((num_layers, batch, *shape), jnp.float32)
    return {
        # Written along the current row; read (as the previous row) by `start_row`.
        "hidden": zeros(width, h),
        "cell": zeros(width, h),
        # Read along the current row: the previous row's cells and the state-to-state
        # pre-activations computed from its hidden states.
        "cell_above": zeros(width, h),
        "state_gates": zeros(width, NUM_GATES * h),
        # Each layer's input at the k//2 pixels left of the current one (zeros off the image).
        "left_inputs": zeros(half, 2 * h),
    }


def _row_lstm_start_row(model: nn.Module, body_params: Params, cache: Cache) -> Cache:
    # Row i's state-to-state part reads only row i - 1, which is complete: one matmul per
    # layer and row, as in `row_lstm.row_lstm_step`.
    del model
    state_gates = [
        row_state_to_gates(layer["state_kernel"], hidden)
        for hidden, layer in zip(cache["hidden"], body_params, strict=True)
    ]
    return {
        **cache,
        "cell_above": cache["cell"],
        "state_gates": jnp.stack(state_gates),
        "left_inputs": jnp.zeros_like(cache["left_inputs"]),
    }


def _row_lstm_pixel(model, body_params, cache, x, column, conditioning):
    state_gates = _at_column(cache["state_gates"], column, axis=2)  # [L, batch, 4h]
    cell_above = _at_column(cache["cell_above"], column, axis=2)  # [L, batch, h]
    hiddens, cells, inputs, outputs = [], [], [], []
    for index, layer in enumerate(body_params):
        # The layer's input at columns j - k//2 .. j: [batch, k//2 + 1, 2h].
        window = jnp.concatenate([cache["left_inputs"][index], x[:, None]], axis=1)
        input_gates = window_conv(window[:, None], layer["input_kernel"][None])
        input_gates = input_gates + layer["input_bias"]
        input_gates = _add_conditioning(input_gates, conditioning, layer["conditioning"])
        gates = input_gates + state_gates[index]
        hidden, cell = lstm_cell(gates, cell_above[index])
        hiddens.append(hidden)
        cells.append(cell)
        inputs.append(x)
        x = _residual(model, x, dense(layer["output"], hidden))
        outputs.append(x)
    column_state = {
        "hidden": jnp.stack(hiddens),
        "cell": jnp.stack(cells),
        "inputs": jnp.stack(inputs),
    }
    return column_state, outputs


def _row_lstm_write(model: nn.Module, cache: Cache, column_state: Cache, column: jax.Array):
    del model
    return {
        **cache,
        "hidden": _write_column(cache["hidden"], column_state["hidden"], column, 2),
        "cell": _write_column(cache["cell"], column_state["cell"], column, 2),
        "left_inputs": _shift_in(cache["left_inputs"], column_state["inputs"], axis=2),
    }


ROW_LSTM = CachedBody(
    prepare=_row_lstm_prepare,
    init=_row_lstm_init,
    start_row=_row_lstm_start_row,
    pixel=_row_lstm_pixel,
    write=_row_lstm_write,
    end_row=_no_row_work,
)


# ---------------------------------------------------------------------------------------
# Diagonal BiLSTM.


def _diagonal_prepare(model: nn.Module, params: Params) -> Params:
    groups = model.num_channels
    body = []
    for index in range(model.num_layers):
        layer = _recurrent_layer_params(params, "diagonal_bilstm", index)
        context = layer.get("right_to_left_context")
        body.append(
            {
                "left_input": masked_dense(layer["left_to_right_input"], groups, NUM_GATES),
                "right_input": masked_dense(layer["right_to_left_input"], groups, NUM_GATES),
                # [channels, 4h], full_context only: unmasked, since its output moves a row down.
                "right_context": None if context is None else context["kernel"],
                "left_conditioning": _conditioning_kernel(layer, "left_to_right_conditioning"),
                "right_conditioning": _conditioning_kernel(layer, "right_to_left_conditioning"),
                "state_kernels": layer["state_to_state"],  # [2, 2h, 4h], left then right
                "output": masked_dense(params[f"diagonal_bilstm_{index}"]["output"], groups),
            }
        )
    return body


def _diagonal_init(model: nn.Module, batch: int, width: int) -> Cache:
    num_layers, h = model.num_layers, model.hidden_dim
    zeros = lambda *shape: jnp.zeros((num_layers, batch, *shape), jnp.float32)
    return {
        # Left-to-right hidden states: written along the current row, read (as "above")
        # along the next one.
        "hidden": zeros(width, h),
        "hidden_above": zeros(width, h),
        # Left-to-right states at (i, j - 1): zeros left of the image.
        "left_hidden": zeros(h),
        "left_cell": zeros(h),
        # Right-to-left hidden states of the previous row: added to the current row's output
        # (the shift-down) and read as "above" by the next right-to-left sweep.
        "right_hidden": zeros(width, h),
        # Each layer's input along the current row, for the right-to-left sweep at its end.
        "inputs": zeros(width, 2 * h),
    }


def _diagonal_start_row(model: nn.Module, body_params: Params, cache: Cache) -> Cache:
    del model, body_params
    zeros = jnp.zeros_like(cache["left_hidden"])
    return {**cache, "hidden_above": cache["hidden"], "left_hidden": zeros, "left_cell": zeros}


def _diagonal_pixel(model, body_params, cache, x, column, conditioning):
    above = _at_column(cache["hidden_above"], column, axis=2)  # (i - 1, j): [L, batch, h]
    right = _at_column(cache["right_hidden"], column, axis=2)  # right-to-left at (i - 1, j)
    hiddens, cells, inputs, outputs = [], [], [], []
    for index, layer in enumerate(body_params):
        input_gates = dense(layer["left_input"], x)
        input_gates = _add_conditioning(input_gates, conditioning, layer["left_conditioning"])
        hidden, cell = diagonal_lstm_cell(
            layer["state_kernels"][0],
            above[index],
            cache["left_hidden"][index],
            cache["left_cell"][index],
            input_gates,
        )
        hiddens.append(hidden)
        cells.append(cell)
        inputs.append(x)
        x = _residual(model, x, dense(layer["output"], hidden + right[index]))
        outputs.append(x)
    column_state = {
        "hidden": jnp.stack(hiddens),
        "cell": jnp.stack(cells),
        "inputs": jnp.stack(inputs),
    }
    return column_state, outputs


def _diagonal_write(model: nn.Module, cache: Cache, column_state: Cache, column: jax.Array):
    del model
    return {
        **cache,
        "hidden": _write_column(cache["hidden"], column_state["hidden"], column, 2),
        "left_hidden": column_state["hidden"],
        "left_cell": column_state["cell"],
        "inputs": _write_column(cache["inputs"], column_state["inputs"], column, 2),
    }


def _diagonal_end_row(model, body_params, cache, image_row, conditioning_row):
    """Sweeps the completed row right to left for every layer at once.

    In image coordinates the right-to-left state at (i, j) reads (i - 1, j) above and
    (i, j + 1) to its right, which is `diagonal_lstm_cell` on the mirrored row.
    """
    stack = lambda fn: jnp.stack([fn(layer) for layer in body_params])
    gates = jnp.einsum(
        "lbwi,lio->lbwo", cache["inputs"], stack(lambda p: p["right_input"]["kernel"])
    )
    gates = gates + stack(lambda p: p["right_input"]["bias"])[:, None, None]
    if model.full_context:
        context = stack(lambda p: p["right_context"])  # [L, channels, 4h]
        gates = gates + jnp.einsum("bwc,lco->lbwo", image_row, context)
    if conditioning_row is not None:
        kernels = stack(lambda p: p["right_conditioning"])  # [L, c, 4h]
        gates = gates + jnp.einsum("bwc,lco->lbwo", conditioning_row, kernels)
    state_kernels = stack(lambda p: p["state_kernels"][1])  # [L, 2h, 4h]
    cell_fn = jax.vmap(diagonal_lstm_cell)  # over layers

    def step(carry, column_inputs):
        right_hidden, right_cell = carry  # the states at (i, j + 1): [L, batch, h]
        above, column_gates = column_inputs
        hidden, cell = cell_fn(state_kernels, above, right_hidden, right_cell, column_gates)
        return (hidden, cell), hidden

    zeros = jnp.zeros_like(cache["right_hidden"][:, :, 0])
    columns = (jnp.moveaxis(cache["right_hidden"], 2, 0), jnp.moveaxis(gates, 2, 0))
    _, hidden = jax.lax.scan(step, (zeros, zeros), columns, reverse=True)  # right to left
    return {**cache, "right_hidden": jnp.moveaxis(hidden, 0, 2)}


DIAGONAL_BILSTM = CachedBody(
    prepare=_diagonal_prepare,
    init=_diagonal_init,
    start_row=_diagonal_start_row,
    pixel=_diagonal_pixel,
    write=_diagonal_write,
    end_row=_diagonal_end_row,
)


# ---------------------------------------------------------------------------------------
# PixelCNN.


def _pixelcnn_prepare(model: nn.Module, params: Params) -> Params:
    groups = model.num_channels
    body = []
    for index in range(model.num_layers):
        block = params[f"pixelcnn_{index}"]
        body.append(
            {
                "reduce": masked_dense(block["reduce"], groups),
                "conv_kernel": causal_rows(block["conv"]["kernel"], "B", groups),
                "conv_bias": block["conv"]["bias"],
                "conditioning": _conditioning_kernel(block, "conditioning"),  # [c, h]
                "expand": masked_dense(block["expand"], groups),
            }
        )
    return body


def _pixelcnn_init(model: nn.Module, batch: int, width: int) -> Cache:
    k, h = model.recurrent_kernel_size, model.hidden_dim
    zeros = lambda *shape: jnp.zeros((model.num_layers, batch, *shape), jnp.float32)
    padded_width = k // 2 + width + (k - 1) // 2  # the k x k convolution's zero columns
    # Each block's k x k convolution input, relu(reduce(relu(x))), as in Ramachandran et
    # al.'s queues: the k//2 rows above (read along the row), the current row (written),
    # and its k//2 values left of the pixel (a small carry).
    return {
        "rows_above": zeros(k // 2, padded_width, h),
        "row": zeros(padded_width, h),
        "left": zeros(k // 2, h),
    }


def _pixelcnn_start_row(model: nn.Module, body_params: Params, cache: Cache) -> Cache:
    del model, body_params
    return {
        "rows_above": _shift_in(cache["rows_above"], cache["row"], axis=2),
        "row": cache["row"],  # every column is rewritten before it is read again
        "left": jnp.zeros_like(cache["left"]),
    }


def _pixelcnn_pixel(model, body_params, cache, x, column, conditioning):
    k = model.recurrent_kernel_size
    num_layers, batch, half, _, h = cache["rows_above"].shape
    above = jax.lax.dynamic_slice(
        cache["rows_above"], (0, 0, 0, column, 0), (num_layers, batch, half, k, h)
    )  # rows i - k//2 .. i - 1, columns j - k//2 .. j + (k - 1)//2
    right = jnp.zeros((batch, k - half - 1, h), jnp.float32)  # masked: never read
    reduced_states, outputs = [], []
    for index, block in enumerate(body_params):
        reduced = nn.relu(dense(block["reduce"], nn.relu(x)))
        reduced_states.append(reduced)
        row = jnp.concatenate([cache["left"][index], reduced[:, None], right], axis=1)
        window = jnp.concatenate([above[index], row[:, None]], axis=1)  # [b, k//2 + 1, k, h]
        y = window_conv(window, block["conv_kernel"]) + block["conv_bias"]
        y = _add_conditioning(y, conditioning, block["conditioning"])
        x = _residual(model, x, dense(block["expand"], nn.relu(y)))
        outputs.append(x)
    return {"reduced": jnp.stack(reduced_states)}, outputs


def _pixelcnn_write(model: nn.Module, cache: Cache, column_state: Cache, column: jax.Array):
    reduced = column_state["reduced"]  # [L, batch, h]
    padded_column = column + model.recurrent_kernel_size // 2
    return {
        **cache,
        "row": _write_column(cache["row"], reduced, padded_column, 2),
        "left": _shift_in(cache["left"], reduced, axis=2),
    }


PIXELCNN = CachedBody(
    prepare=_pixelcnn_prepare,
    init=_pixelcnn_init,
    start_row=_pixelcnn_start_row,
    pixel=_pixelcnn_pixel,
    write=_pixelcnn_write,
    end_row=_no_row_work,
)

# Incremental bodies by model name (the keys of models.MODEL_REGISTRY).
CACHED_BODIES: dict[str, CachedBody] = {
    "row_lstm": ROW_LSTM,
    "diagonal_bilstm": DIAGONAL_BILSTM,
    "pixelcnn": PIXELCNN,
}


# ---------------------------------------------------------------------------------------
# The model around the body, and the walk over positions.


def _prepare_shell(model: nn.Module, params: Params) -> Params:
    groups = model.num_channels
    return {
        "input_kernel": causal_rows(params["input_conv"]["kernel"], "A", groups),
        "input_bias": params["input_conv"]["bias"],
        "skips": [
            masked_dense(params[f"skip_{index}"], groups) for index in range(model.num_layers)
        ]
        if model.use_skip
        else None,
        "hidden": masked_dense(params["output_stack"]["hidden"], groups),
        "logits": masked_dense(params["output_stack"]["logits"], groups),
    }


def _pixel_logits(model, shell, body, body_params, cache, window, column, conditioning):
    """Evaluates one pixel from the caches and its first-layer window of the image.

    Args:
      window: [batch, k//2 + 1, k, channels], the image in [-1, 1] around the pixel, as
        read by the first k x k convolution (positions it masks may hold anything finite).
      conditioning: the conditioning map's `[batch, c]` value at the pixel, or None.

    Returns:
      (column_state, logits [batch, channels] or [batch, channels, levels]).
    """
    x = window_conv(window, shell["input_kernel"]) + shell["input_bias"]
    column_state, outputs = body.pixel(model, body_params, cache, x, column, conditioning)
    if model.use_skip:
        features = layers.sum_features(
            [dense(skip, out) for skip, out in zip(shell["skips"], outputs, strict=True)]
        )
    else:
        features = outputs[-1]
    hidden = dense(shell["hidden"], nn.relu(features))
    logits = dense(shell["logits"], nn.relu(hidden))
    if model.num_levels != 2:
        logits = logits.reshape(window.shape[0], window.shape[-1], model.num_levels)
    return column_state, logits


def run_incremental(
    model: nn.Module,
    variables: Params,
    images: jax.Array,
    choose: ChooseFn,
    *,
    conditioning: jax.Array | None = None,
    collect_logits: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """Walks every position in raster-then-channel order, choosing its value from its logits.

    Pure and traceable; jit it from the caller (`sampling.sample` does). The compiled program
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
      collect_logits: also return the logits of every position (for tests; costs memory).

    Returns:
      (images with every position's chosen value, logits shaped like `model.apply`'s
      output or None).
    """
    params = variables["params"]
    body = CACHED_BODIES[model.name_in_registry]
    shell = _prepare_shell(model, params)
    body_params = body.prepare(model, params)
    batch, height, width, channels = images.shape
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
        recent = _shift_in(recent, jnp.zeros((batch, channels), jnp.float32), axis=1)
        above = jax.lax.dynamic_slice(rows, (0, row, column, 0), (batch, half, k, channels))
        pixel_conditioning = None if conditioning is None else conditioning[:, row, column]

        def channel_step(channel, carry):
            # Every channel is evaluated from the same caches; the returned column state of
            # the last one, which has seen every channel the features can see, is kept.
            out, recent, _, all_logits = carry
            current_row = jnp.concatenate([recent, right_of_pixel], axis=1)
            window = jnp.concatenate([above, current_row[:, None]], axis=1)
            column_state, logits = _pixel_logits(
                model, shell, body, body_params, cache, window, column, pixel_conditioning
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
