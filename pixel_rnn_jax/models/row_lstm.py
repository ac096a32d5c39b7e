"""Row LSTM: a recurrence over image rows with k x 1 convolutions along the row.

The context of a pixel is a triangle above it. Two schedules (`recurrence.resolve_schedule`)
compute the same function from the same parameters:
- 'throughput' (`RowLSTMLayer`): per layer, the input-to-state part, a 1 x k mask-B
  convolution, is computed for the whole map at once (on the rows-first layout the
  recurrence scans); only the state-to-state part, a 1 x k unmasked convolution of the
  previous row's hidden state, runs inside the recurrence, one sweep of H steps per layer
  with a hand-written backward sweep (`lstm_cell.lstm_sweep`): L x H steps each way.
- 'latency' (`stack_over_rows`): one scan over the rows runs every layer for that row, so
  a pass is H sequential steps whatever the depth (differentiated by autodiff of the scan).
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.models import residual
from pixel_rnn_jax.nn import incremental, layers, recurrence
from pixel_rnn_jax.nn.lstm_cell import NUM_GATES, lstm_cell, lstm_recurrence

KIND = "row_lstm"  # the model name in the registry and the prefix of its units' names
# Parameter names inside a RowLSTMLayer, shared by the layer and its cached body.
INPUT_TO_STATE = "input_to_state"  # 1 x k mask-B convolution to the 4h gates
STATE_TO_STATE = "state_to_state"  # [k * h, 4h] kernel of the previous row's hidden states
CONDITIONING = "conditioning"  # unmasked 1x1 of the conditioning map (multi-scale only)
CLASS_EMBEDDING = "class_embedding"  # [num_classes, 4h] per-class gate bias (conditional only)


def row_neighbourhood(row: jax.Array, kernel_width: int) -> jax.Array:
    """Stacks the `kernel_width` horizontal neighbours of every pixel of a row.

    Args:
      row: [batch, width, features].
      kernel_width: odd k; neighbours j - k//2 .. j + k//2, zero outside the row.

    Returns:
      [batch, width, kernel_width * features], neighbour-major.
    """
    half = kernel_width // 2
    width = row.shape[1]
    padded = jnp.pad(row, ((0, 0), (half, half), (0, 0)))
    return jnp.concatenate([padded[:, s : s + width] for s in range(kernel_width)], axis=-1)


def row_state_to_gates(state_kernel: jax.Array, hidden: jax.Array) -> jax.Array:
    """The state-to-state k x 1 convolution of one row as one matmul.

    Args:
      state_kernel: [k * hidden, 4 * hidden] (neighbour-major rows).
      hidden: [batch, width, hidden] hidden state of the previous row.

    Returns:
      [batch, width, 4 * hidden] state-to-state gate pre-activations.
    """
    kernel_width = state_kernel.shape[0] // hidden.shape[-1]
    return layers.matmul_2d(row_neighbourhood(hidden, kernel_width), state_kernel)


def row_lstm_step(
    state_kernel: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    input_gates: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Computes one row of the Row LSTM from the previous row's state.

    Args:
      state_kernel: [k * hidden, 4 * hidden] state-to-state kernel (neighbour-major rows).
      carry: (hidden, cell) of the previous row, each [batch, width, hidden].
      input_gates: [batch, width, 4 * hidden] input-to-state pre-activations of this row.

    Returns:
      ((hidden, cell), hidden) for this row, each [batch, width, hidden].
    """
    hidden, cell = carry
    hidden, cell = lstm_cell(input_gates + row_state_to_gates(state_kernel, hidden), cell)
    return (hidden, cell), hidden


def row_lstm(
    input_gates: jax.Array, state_kernel: jax.Array, unroll: recurrence.Unroll = 1
) -> jax.Array:
    """Runs the Row LSTM recurrence over all rows, from zero initial state.

    Args:
      input_gates: [batch, height, width, 4 * hidden] input-to-state pre-activations.
      state_kernel: [k * hidden, 4 * hidden].
      unroll: see `recurrence.parse_unroll`.

    Returns:
      hidden states [batch, height, width, hidden].
    """
    rows = jnp.moveaxis(input_gates, 1, 0)  # [height, batch, width, 4h]
    # `row_lstm_step` over the rows, with a hand-written backward sweep (see lstm_cell).
    hidden = lstm_recurrence(row_state_to_gates, state_kernel, rows, unroll)
    return jnp.moveaxis(hidden, 0, 1)


class RowLSTMLayer(nn.Module):
    """One Row LSTM layer: [batch, height, width, features] -> [..., hidden_dim]."""

    hidden_dim: int  # h, hidden units of the LSTM
    num_groups: int = 1  # colour groups (3 for RGB)
    kernel_width: int = 3  # k of the k x 1 input-to-state and state-to-state convolutions
    unroll: recurrence.Unroll = 1  # lax.scan unroll factor, 'full' or 'python'
    dtype: Any = jnp.float32  # compute dtype of the convolutions and the state-to-state product

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
        labels_one_hot: jax.Array | None = None,
    ) -> jax.Array:
        """Args: x [batch, height, width, features]; conditioning: optional
        [batch, height, width, c] map known in full (multi-scale), added to the gates;
        labels_one_hot: optional [batch, num_classes] class codes, whose learned embedding
        is added to the gates at every pixel."""
        del context  # the Row LSTM has no use for the full-context image
        # Rows first ([height, batch, width, features]), the layout the recurrence scans
        # over: the 1 x k convolutions only look along the width, so they run on this layout
        # as they are, and moving the 2h-feature input is half the copy of moving 4h gates.
        rows = jnp.swapaxes(x, 0, 1)
        input_gates = layers.MaskedConv2D(
            NUM_GATES * self.hidden_dim,
            (1, self.kernel_width),
            "B",
            num_groups=self.num_groups,
            num_gates=NUM_GATES,
            dtype=self.dtype,
            name=INPUT_TO_STATE,
        )(rows)
        if conditioning is not None:
            # Unmasked 1x1: the conditioning map holds no pixel of x, nothing can leak.
            input_gates = input_gates + nn.Dense(
                NUM_GATES * self.hidden_dim, use_bias=False, dtype=self.dtype, name=CONDITIONING
            )(jnp.swapaxes(conditioning, 0, 1))
        if labels_one_hot is not None:
            # The same at every pixel: it holds no pixel of x, nothing can leak.
            class_gates = nn.Dense(
                NUM_GATES * self.hidden_dim, use_bias=False, dtype=self.dtype, name=CLASS_EMBEDDING
            )(labels_one_hot)
            input_gates = input_gates + class_gates[None, :, None]  # rows-first layout
        state_kernel = self.param(
            STATE_TO_STATE,
            layers.default_kernel_init,
            (self.kernel_width * self.hidden_dim, NUM_GATES * self.hidden_dim),
            jnp.float32,
        )
        # The kernel in the compute dtype: the sweep's state-to-state products run in it.
        hidden_rows = lstm_recurrence(
            row_state_to_gates, state_kernel.astype(self.dtype), input_gates, self.unroll
        )
        hidden = jnp.swapaxes(hidden_rows, 0, 1)
        chex.assert_shape(hidden, (*x.shape[:3], self.hidden_dim))
        return hidden


def stack_over_rows(
    model: nn.Module,
    params: incremental.Params,
    x: jax.Array,
    conditioning: jax.Array | None = None,
    labels_one_hot: jax.Array | None = None,
) -> list[jax.Array]:
    """Every Row LSTM unit of `model` in ONE scan over rows: the 'latency' schedule.

    Row i of every layer depends only on row i of the layer below and row i - 1 of its own
    states, so step i runs, for each layer in turn, the 1 x k mask-B input-to-state
    convolution of row i, the state-to-state product of row i - 1, the cell, the unit's
    output 1x1 and the residual: H sequential steps a pass instead of L x H. What holds no
    pixel of the input (conditioning and class embeddings) is computed whole-image before
    the scan. Differentiated by autodiff of the scan (one reverse loop of H steps); with
    `model.remat` the step is rematerialised (only the carried states and the rows are kept).

    Args:
      model: the `PixelRNN` (its layers, sizes, dtype, unroll, remat and residual fields).
      params: its parameters; the units are read by their names (`residual.unit_params`),
        the same tree `RowLSTMLayer` units create.
      x: [batch, height, width, 2h] output of the mask-A input convolution.
      conditioning: optional [batch, height, width, c] map known in full (multi-scale).
      labels_one_hot: optional [batch, num_classes] class codes.

    Returns:
      The units' outputs, `num_layers` arrays [batch, height, width, 2h]: what the units
      of the 'throughput' schedule return.
    """
    dtype, groups = model.dtype, model.num_channels
    units = residual.unit_params(params, KIND, model.num_layers)

    def masked(conv, num_gates=1):
        kernel, taps = layers.masked_kernel(conv["kernel"], "B", groups, num_gates)
        return kernel.astype(dtype), taps, conv["bias"].astype(dtype)

    inputs = [masked(unit[residual.LAYER][INPUT_TO_STATE], NUM_GATES) for unit in units]
    outputs = [masked(unit[residual.OUTPUT]) for unit in units]
    state_kernels = [unit[residual.LAYER][STATE_TO_STATE].astype(dtype) for unit in units]
    rows_of = lambda image: jnp.swapaxes(image, 0, 1)  # [height, batch, width, features]
    conditioning_rows = None
    if conditioning is not None:
        # [height, layers, batch, width, 4h]: scanned over with the rows.
        conditioning_rows = jnp.stack(
            [
                layers.matmul_2d(
                    rows_of(conditioning),
                    unit[residual.LAYER][CONDITIONING]["kernel"].astype(dtype),
                )
                for unit in units
            ],
            axis=1,
        )
    class_gates = None
    if labels_one_hot is not None:
        class_gates = [  # [batch, 4h] per layer, the same on every row
            layers.matmul_2d(
                labels_one_hot, unit[residual.LAYER][CLASS_EMBEDDING]["kernel"].astype(dtype)
            )
            for unit in units
        ]

    def step(carry, row_inputs):
        hiddens, cells = carry  # per layer, float32 [batch, width, h] of the row above
        row, conditioning_row = row_inputs  # [batch, width, 2h], [layers, batch, width, 4h]
        new_hiddens, new_cells, row_outputs = [], [], []
        for index in range(model.num_layers):
            kernel, taps, bias = inputs[index]
            gates = layers.conv_as_matmul(row[:, None], kernel, taps, out_dtype=dtype)[:, 0]
            gates = gates + bias
            if conditioning_row is not None:
                gates = gates + conditioning_row[index]
            if class_gates is not None:
                gates = gates + class_gates[index][:, None]
            # Summed in float32, the product in the compute dtype, as in the sweep.
            state = row_state_to_gates(state_kernels[index], hiddens[index].astype(dtype))
            hidden, cell = lstm_cell(
                gates.astype(jnp.float32) + state.astype(jnp.float32), cells[index]
            )
            new_hiddens.append(hidden)
            new_cells.append(cell)
            out_kernel, _, out_bias = outputs[index]
            row = residual.residual(
                model, row, layers.matmul_2d(hidden, out_kernel[0, 0]) + out_bias
            )
            row_outputs.append(row)
        return (new_hiddens, new_cells), jnp.stack(row_outputs)

    batch, _, width, _ = x.shape
    zeros = [jnp.zeros((batch, width, model.hidden_dim), jnp.float32)] * model.num_layers
    if model.remat:
        step = jax.checkpoint(step)
    _, rows = recurrence.run_recurrence(
        step, (zeros, zeros), (rows_of(x), conditioning_rows), model.unroll
    )  # [height, layers, batch, width, 2h]
    stacked = jnp.transpose(rows, (1, 2, 0, 3, 4))  # [layers, batch, height, width, 2h]
    return list(stacked)


def make_unit(model: nn.Module, index: int) -> nn.Module:
    """Residual unit `index` of a Row LSTM `PixelRNN` (`row_lstm_<index>`)."""
    layer = RowLSTMLayer(
        model.hidden_dim,
        num_groups=model.num_channels,
        kernel_width=model.recurrent_kernel_size,
        unroll=model.unroll,
        dtype=model.dtype,
        parent=None,
    )
    return residual.recurrent_unit(model, KIND, index, layer)


# ---------------------------------------------------------------------------------------
# The cached body: the same layer one pixel at a time (see `sampling.cached`). Per layer and
# pixel: the 1 x k mask-B input-to-state on the layer's input at columns j - k//2 .. j of
# the current row (cached), the LSTM cell, the 1x1 output; once per row, the state-to-state
# 1 x k convolution of the previous row's hidden states (O(1) per pixel).


def _prepare(
    model: nn.Module, params: incremental.Params, labels_one_hot: jax.Array | None = None
) -> incremental.Params:
    groups, half = model.num_channels, model.recurrent_kernel_size // 2
    body = []
    for unit in residual.unit_params(params, KIND, model.num_layers):
        layer = unit[residual.LAYER]
        kernel = incremental.causal_rows(layer[INPUT_TO_STATE]["kernel"], "B", groups, NUM_GATES)
        body.append(
            {
                # [k//2 + 1, 2h, 4h]: the causal columns j - k//2 .. j of the 1 x k kernel.
                "input_kernel": kernel[0, : half + 1],
                # [4h], or [batch, 4h] with the class embedding of each image's label.
                "input_bias": incremental.add_class_embedding(
                    layer[INPUT_TO_STATE]["bias"], layer, CLASS_EMBEDDING, labels_one_hot
                ),
                "state_kernel": layer[STATE_TO_STATE],  # [k * h, 4h]
                "conditioning": incremental.conditioning_kernel(layer, CONDITIONING),  # [c, 4h]
                "output": incremental.masked_dense(unit[residual.OUTPUT], groups),
            }
        )
    return body


def _init(model: nn.Module, batch: int, width: int) -> incremental.Cache:
    num_layers, h = model.num_layers, model.hidden_dim
    half = model.recurrent_kernel_size // 2
    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((num_layers, batch, *shape), dtype)
    return {
        # Written along the current row; read (as the previous row) by `start_row`.
        "hidden": zeros(width, h),
        "cell": zeros(width, h),
        # Read along the current row: the previous row's cells and the state-to-state
        # pre-activations computed from its hidden states.
        "cell_above": zeros(width, h),
        "state_gates": zeros(width, NUM_GATES * h, dtype=model.dtype),
        # Each layer's input at the k//2 pixels left of the current one (zeros off the image).
        "left_inputs": zeros(half, 2 * h, dtype=model.dtype),
    }


def _start_row(model: nn.Module, body_params, cache: incremental.Cache) -> incremental.Cache:
    # Row i's state-to-state part reads only row i - 1, which is complete: one matmul per
    # layer and row, as in `row_lstm_step`.
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


def _pixel(model, body_params, cache, x, column, conditioning):
    state_gates = incremental.at_column(cache["state_gates"], column, axis=2)  # [L, batch, 4h]
    cell_above = incremental.at_column(cache["cell_above"], column, axis=2)  # [L, batch, h]
    hiddens, cells, inputs, outputs = [], [], [], []
    for index, layer in enumerate(body_params):
        # The layer's input at columns j - k//2 .. j: [batch, k//2 + 1, 2h].
        window = jnp.concatenate([cache["left_inputs"][index], x[:, None]], axis=1)
        input_gates = incremental.window_conv(window[:, None], layer["input_kernel"][None])
        input_gates = input_gates + layer["input_bias"]
        input_gates = incremental.add_conditioning(input_gates, conditioning, layer["conditioning"])
        # Summed in float32, as in the sweep (`lstm_cell` module docstring).
        gates = input_gates.astype(jnp.float32) + state_gates[index].astype(jnp.float32)
        hidden, cell = lstm_cell(gates, cell_above[index])
        hiddens.append(hidden)
        cells.append(cell)
        inputs.append(x)
        x = residual.residual(model, x, incremental.dense(layer["output"], hidden))
        outputs.append(x)
    return incremental.stack_layers(hidden=hiddens, cell=cells, inputs=inputs), outputs


def _write(model: nn.Module, cache, column_state, column: jax.Array) -> incremental.Cache:
    del model
    return {
        **cache,
        "hidden": incremental.write_column(cache["hidden"], column_state["hidden"], column, 2),
        "cell": incremental.write_column(cache["cell"], column_state["cell"], column, 2),
        "left_inputs": incremental.shift_in(cache["left_inputs"], column_state["inputs"], axis=2),
    }


CACHED_BODY = incremental.CachedBody(
    prepare=_prepare,
    init=_init,
    start_row=_start_row,
    pixel=_pixel,
    write=_write,
    end_row=incremental.no_row_work,
)
