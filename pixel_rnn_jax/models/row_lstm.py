"""Row LSTM: a recurrence over image rows with k x 1 convolutions along the row, and the
machinery any cell of that shape shares (`RowCell`).

The context of a pixel is a triangle above it. A Row unit is defined once: its parameter
names (`unpack`), its cell (`RowCell.update`, for the LSTM `lstm_update`) and its
state-to-state product (`row_state_to_gates`) are what all three ways of running it call:
- 'throughput' (`RowLayer`): per layer, the input-to-state part, a 1 x k mask-B
  convolution, is computed for the whole map at once (on the rows-first layout the
  recurrence scans); only the state-to-state part, a 1 x k unmasked convolution of the
  previous row's hidden state, runs inside the recurrence, one sweep of H steps per layer
  (for the LSTM with a hand-written backward sweep, `lstm_cell.lstm_sweep`): L x H steps.
- 'latency' (`stack_over_rows`): one scan over the rows runs every layer for that row, so
  a pass is H sequential steps whatever the depth (differentiated by autodiff of the scan).
- the cached body (`cached_body`): one pixel at a time, for the cached sampler and coder.
`row_body(kind, cell)` bundles the three as a `residual.Body`; `BODY` is the Row LSTM's.
A new cell is a `RowCell` and a registry entry (tests/test_unit_extension.py adds a GRU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax.models import residual
from pixel_rnn_jax.nn import incremental, layers, recurrence
from pixel_rnn_jax.nn.lstm_cell import NUM_GATES, lstm_cell, lstm_recurrence

KIND = "row_lstm"  # the model name in the registry and the prefix of its units' names
# Parameter names inside a RowLayer: `RowLayer` creates them, `unpack` reads them back.
INPUT_TO_STATE = "input_to_state"  # 1 x k mask-B convolution to the gates
STATE_TO_STATE = "state_to_state"  # [k * h, gates] kernel of the previous row's hidden states
CONDITIONING = "conditioning"  # unmasked 1x1 of the conditioning map (multi-scale only)
CLASS_EMBEDDING = "class_embedding"  # [num_classes, gates] per-class gate bias (conditional)

# A Row cell's state at one pixel: `num_states` float32 arrays [..., h], the hidden state
# (the layer's output) first.
State = tuple[jax.Array, ...]


class RowCell(NamedTuple):
    """A recurrent cell run over image rows: all that `RowLayer`, `stack_over_rows` and the
    cached body need to know of it.

    Every Row unit has a 1 x k mask-B input-to-state convolution and a 1 x k state-to-state
    product of the previous row's hidden state (`row_state_to_gates`), each to
    `num_gates * h` pre-activations (gate-major, each block split into colour groups as
    `masks.gate_feature_groups` says); the cell combines them with its state at the pixel
    above. Colour causality needs the update to keep hidden unit u's features within u's
    colour group (elementwise over units, as the LSTM and a GRU are; a normalisation over
    all h units would let a channel see a later one). tests/test_unit_extension.py shows
    the probes a new cell must pass.
    """

    num_gates: int  # blocks of h features in the pre-activations (the LSTM: o, f, i, g)
    num_states: int  # arrays in the cell's `State` (the LSTM: hidden and cell)
    # (input_gates [..., num_gates * h] and state_gates [..., num_gates * h], both in the
    #  compute dtype, state: the `State` at the pixel above) -> the `State` at the pixel.
    # Pure; elementwise over the leading axes.
    update: Callable[[jax.Array, jax.Array, State], State]
    # Optional: the 'throughput' sweep, the same function as `sweep_rows(cell, ...)` run
    # another way: (state_kernel [k * h, num_gates * h] in the compute dtype, input gates
    # [height, batch, width, num_gates * h], unroll) -> float32 hidden states
    # [height, batch, width, h], from zero state. None: `sweep_rows` (autodiff of the scan).
    sweep: Callable[[jax.Array, jax.Array, recurrence.Unroll], jax.Array] | None = None


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

    Reads only the width axis (1), so a leading `[time * batch]` axis is batch, as
    `lstm_cell.lstm_sweep`'s backward needs (its `StateToGates` contract).

    Args:
      state_kernel: [k * hidden, gates] (neighbour-major rows).
      hidden: [batch, width, hidden] hidden state of the previous row.

    Returns:
      [batch, width, gates] state-to-state gate pre-activations.
    """
    kernel_width = state_kernel.shape[0] // hidden.shape[-1]
    return layers.matmul_2d(row_neighbourhood(hidden, kernel_width), state_kernel)


def lstm_update(input_gates: jax.Array, state_gates: jax.Array, state: State) -> State:
    """The Row LSTM's `RowCell.update`: `lstm_cell` of the summed gates and the cell above."""
    _, cell = state
    # Summed in float32, the product in the compute dtype, as in the sweep (`lstm_cell`).
    return lstm_cell(input_gates.astype(jnp.float32) + state_gates.astype(jnp.float32), cell)


# The Row LSTM's cell; its 'throughput' sweep has the hand-written backward of `lstm_cell`.
LSTM = RowCell(NUM_GATES, 2, lstm_update, functools.partial(lstm_recurrence, row_state_to_gates))


def row_step(cell: RowCell, state_kernel: jax.Array, state: State, input_gates: jax.Array) -> State:
    """One row of a Row unit from the previous row's state.

    Args:
      cell: the unit's cell.
      state_kernel: [k * h, num_gates * h] in the compute dtype (the product runs in it).
      state: the previous row's `State`, each [batch, width, h].
      input_gates: [batch, width, num_gates * h] input-to-state pre-activations of this row.

    Returns:
      this row's `State`.
    """
    state_gates = row_state_to_gates(state_kernel, state[0].astype(state_kernel.dtype))
    return cell.update(input_gates, state_gates, state)


def zero_state(cell: RowCell, shape: tuple[int, ...]) -> State:
    """The state entering the top row: `cell.num_states` float32 zeros of `shape` [..., h]."""
    return (jnp.zeros(shape, jnp.float32),) * cell.num_states


def sweep_rows(
    cell: RowCell, state_kernel: jax.Array, rows: jax.Array, unroll: recurrence.Unroll = 1
) -> jax.Array:
    """`row_step` over the rows from zero state, differentiated by autodiff of the scan.

    Args:
      cell: the unit's cell.
      state_kernel: [k * h, num_gates * h].
      rows: [height, batch, width, num_gates * h] input-to-state pre-activations.
      unroll: see `recurrence.parse_unroll`.

    Returns:
      float32 hidden states [height, batch, width, h].
    """

    def step(state, input_gates):
        state = row_step(cell, state_kernel, state, input_gates)
        return state, state[0]

    hidden_dim = rows.shape[-1] // cell.num_gates
    start = zero_state(cell, (*rows.shape[1:-1], hidden_dim))
    return recurrence.run_recurrence(step, start, rows, unroll)[1]


def throughput_sweep(
    cell: RowCell,
) -> Callable[[jax.Array, jax.Array, recurrence.Unroll], jax.Array]:
    """The cell's 'throughput' sweep: its own (`RowCell.sweep`) or `sweep_rows`."""
    return cell.sweep or functools.partial(sweep_rows, cell)


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
    hidden = LSTM.sweep(state_kernel, rows, unroll)
    return jnp.moveaxis(hidden, 0, 1)


class RowLayer(nn.Module):
    """One Row layer: [batch, height, width, features] -> [..., hidden_dim].

    The Row LSTM by default; any `RowCell` otherwise, with the same parameter names.
    """

    hidden_dim: int  # h, hidden units of the cell
    num_groups: int = 1  # colour groups (3 for RGB)
    kernel_width: int = 3  # k of the k x 1 input-to-state and state-to-state convolutions
    unroll: recurrence.Unroll = 1  # lax.scan unroll factor, 'full' or 'python'
    dtype: Any = jnp.float32  # compute dtype of the convolutions and the state-to-state product
    cell: RowCell = LSTM  # the recurrent cell

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
        del context  # a Row unit has no use for the full-context image
        num_gates = self.cell.num_gates
        # Rows first ([height, batch, width, features]), the layout the recurrence scans
        # over: the 1 x k convolutions only look along the width, so they run on this layout
        # as they are, and moving the 2h-feature input is half the copy of moving 4h gates.
        rows = jnp.swapaxes(x, 0, 1)
        input_gates = layers.MaskedConv2D(
            num_gates * self.hidden_dim,
            (1, self.kernel_width),
            "B",
            num_groups=self.num_groups,
            num_gates=num_gates,
            dtype=self.dtype,
            name=INPUT_TO_STATE,
        )(rows)
        if conditioning is not None:
            # Unmasked 1x1: the conditioning map holds no pixel of x, nothing can leak.
            input_gates = input_gates + nn.Dense(
                num_gates * self.hidden_dim, use_bias=False, dtype=self.dtype, name=CONDITIONING
            )(jnp.swapaxes(conditioning, 0, 1))
        if labels_one_hot is not None:
            # The same at every pixel: it holds no pixel of x, nothing can leak.
            class_gates = nn.Dense(
                num_gates * self.hidden_dim, use_bias=False, dtype=self.dtype, name=CLASS_EMBEDDING
            )(labels_one_hot)
            input_gates = input_gates + class_gates[None, :, None]  # rows-first layout
        state_kernel = self.param(
            STATE_TO_STATE,
            layers.default_kernel_init,
            (self.kernel_width * self.hidden_dim, num_gates * self.hidden_dim),
            jnp.float32,
        )
        # The kernel in the compute dtype: the sweep's state-to-state products run in it.
        hidden_rows = throughput_sweep(self.cell)(
            state_kernel.astype(self.dtype), input_gates, self.unroll
        )
        hidden = jnp.swapaxes(hidden_rows, 0, 1)
        chex.assert_shape(hidden, (*x.shape[:3], self.hidden_dim))
        return hidden


class RowParams(NamedTuple):
    """One Row unit's parameters by role, as `RowLayer` and its residual unit create them.

    Shapes for h hidden units, G = num_gates, k = kernel width, c conditioning features.
    """

    input_kernel: jax.Array  # [1, k, 2h, G h] the input-to-state convolution (unmasked)
    input_bias: jax.Array  # [G h]
    state_kernel: jax.Array  # [k * h, G h]
    conditioning: jax.Array | None  # [c, G h] (multi-scale only)
    class_embedding: jax.Array | None  # [num_classes, G h] (class-conditional only)
    output: incremental.Params  # the unit's masked 1x1 back to 2h (`residual.output_dense`)


def unpack(unit: incremental.Params, num_groups: int) -> RowParams:
    """A Row unit's parameters (`params[residual.unit_name(kind, index)]`) by role.

    The one reader of the names `RowLayer` gives its parameters: the 'latency' driver and
    the cached body take them from here.
    """
    layer = unit[residual.LAYER]
    return RowParams(
        input_kernel=layer[INPUT_TO_STATE]["kernel"],
        input_bias=layer[INPUT_TO_STATE]["bias"],
        state_kernel=layer[STATE_TO_STATE],
        conditioning=incremental.optional_kernel(layer, CONDITIONING),
        class_embedding=incremental.optional_kernel(layer, CLASS_EMBEDDING),
        output=residual.output_dense(unit, num_groups),
    )


def stack_over_rows(
    kind: str,
    cell: RowCell,
    model: nn.Module,
    params: incremental.Params,
    x: jax.Array,
    conditioning: jax.Array | None = None,
    labels_one_hot: jax.Array | None = None,
) -> list[jax.Array]:
    """Every Row unit of `model` in ONE scan over rows: the 'latency' schedule.

    Row i of every layer depends only on row i of the layer below and row i - 1 of its own
    states, so step i runs, for each layer in turn, the 1 x k mask-B input-to-state
    convolution of row i, `row_step` (the state-to-state product of row i - 1 and the
    cell), the unit's output 1x1 and the residual: H sequential steps a pass instead of
    L x H. What holds no pixel of the input (conditioning and class embeddings) is computed
    whole-image before the scan. Differentiated by autodiff of the scan (one reverse loop
    of H steps); with `model.remat` the step is rematerialised (only the carried states and
    the rows are kept).

    Args:
      kind: the units' name prefix (`KIND` for the Row LSTM).
      cell: their cell.
      model: the `PixelRNN` (its layers, sizes, dtype, unroll, remat and residual fields).
      params: its parameters; the units are read by `unpack`, the same tree `RowLayer`
        units create.
      x: [batch, height, width, 2h] output of the mask-A input convolution.
      conditioning: optional [batch, height, width, c] map known in full (multi-scale).
      labels_one_hot: optional [batch, num_classes] class codes.

    Returns:
      The units' outputs, `num_layers` arrays [batch, height, width, 2h]: what the units
      of the 'throughput' schedule return.
    """
    dtype, groups = model.dtype, model.num_channels
    units = [unpack(unit, groups) for unit in residual.unit_params(params, kind, model.num_layers)]

    def masked(unit):
        kernel, taps = layers.masked_kernel(unit.input_kernel, "B", groups, cell.num_gates)
        return kernel.astype(dtype), taps, unit.input_bias.astype(dtype)

    inputs = [masked(unit) for unit in units]
    outputs = [incremental.in_compute_dtype(unit.output, dtype) for unit in units]
    state_kernels = [unit.state_kernel.astype(dtype) for unit in units]
    rows_of = lambda image: jnp.swapaxes(image, 0, 1)  # [height, batch, width, features]
    conditioning_rows = None
    if conditioning is not None:
        # [height, layers, batch, width, gates]: scanned over with the rows.
        conditioning_rows = jnp.stack(
            [
                layers.matmul_2d(rows_of(conditioning), unit.conditioning.astype(dtype))
                for unit in units
            ],
            axis=1,
        )
    class_gates = None
    if labels_one_hot is not None:
        class_gates = [  # [batch, gates] per layer, the same on every row
            layers.matmul_2d(labels_one_hot, unit.class_embedding.astype(dtype)) for unit in units
        ]

    def step(states, row_inputs):
        # states: per layer, the `State` of the row above (float32 [batch, width, h] each).
        row, conditioning_row = row_inputs  # [batch, width, 2h], [layers, batch, width, gates]
        new_states, row_outputs = [], []
        for index in range(model.num_layers):
            kernel, taps, bias = inputs[index]
            gates = layers.conv_as_matmul(row[:, None], kernel, taps, out_dtype=dtype)[:, 0]
            gates = gates + bias
            if conditioning_row is not None:
                gates = gates + conditioning_row[index]
            if class_gates is not None:
                gates = gates + class_gates[index][:, None]
            state = row_step(cell, state_kernels[index], states[index], gates)
            new_states.append(state)
            row = residual.unit_output(model, row, state[0], outputs[index])
            row_outputs.append(row)
        return new_states, jnp.stack(row_outputs)

    batch, _, width, _ = x.shape
    start = [zero_state(cell, (batch, width, model.hidden_dim))] * model.num_layers
    if model.remat:
        step = jax.checkpoint(step)
    _, rows = recurrence.run_recurrence(
        step, start, (rows_of(x), conditioning_rows), model.unroll
    )  # [height, layers, batch, width, 2h]
    stacked = jnp.transpose(rows, (1, 2, 0, 3, 4))  # [layers, batch, height, width, 2h]
    return list(stacked)


def make_unit(kind: str, cell: RowCell, model: nn.Module, index: int) -> nn.Module:
    """Residual unit `index` of a Row `PixelRNN` with `cell` (`<kind>_<index>`)."""
    layer = RowLayer(
        model.hidden_dim,
        num_groups=model.num_channels,
        kernel_width=model.recurrent_kernel_size,
        unroll=model.unroll,
        dtype=model.dtype,
        cell=cell,
        parent=None,
    )
    return residual.recurrent_unit(model, kind, index, layer)


# ---------------------------------------------------------------------------------------
# The cached body: the same units one pixel at a time (see `sampling.cached`). Per layer and
# pixel: the 1 x k mask-B input-to-state on the layer's input at columns j - k//2 .. j of
# the current row (cached), the cell, the 1x1 output; once per row, the state-to-state
# 1 x k convolution of the previous row's hidden states (O(1) per pixel).


def _prepare(
    kind: str,
    cell: RowCell,
    model: nn.Module,
    params: incremental.Params,
    labels_one_hot: jax.Array | None = None,
) -> incremental.Params:
    groups, half = model.num_channels, model.recurrent_kernel_size // 2
    body = []
    for unit in residual.unit_params(params, kind, model.num_layers):
        unit = unpack(unit, groups)
        kernel = incremental.causal_rows(unit.input_kernel, "B", groups, cell.num_gates)
        body.append(
            {
                # [k//2 + 1, 2h, gates]: the causal columns j - k//2 .. j of the 1 x k kernel.
                "input_kernel": kernel[0, : half + 1],
                # [gates], or [batch, gates] with the class embedding of each image's label.
                "input_bias": incremental.add_class_embedding(
                    unit.input_bias, unit.class_embedding, labels_one_hot
                ),
                "state_kernel": unit.state_kernel,  # [k * h, gates]
                "conditioning": unit.conditioning,  # [c, gates] or None
                "output": unit.output,
            }
        )
    return body


def _init(cell: RowCell, model: nn.Module, batch: int, width: int) -> incremental.Cache:
    num_layers, h = model.num_layers, model.hidden_dim
    half = model.recurrent_kernel_size // 2
    zeros = lambda *shape, dtype=jnp.float32: jnp.zeros((num_layers, batch, *shape), dtype)
    state = zero_state(cell, (num_layers, batch, width, h))
    return {
        # Written along the current row; read (as the previous row) by `start_row`.
        "state": state,
        # Read along the current row: the previous row's states and the state-to-state
        # pre-activations computed from its hidden states.
        "state_above": state,
        "state_gates": zeros(width, cell.num_gates * h, dtype=model.dtype),
        # Each layer's input at the k//2 pixels left of the current one (zeros off the image).
        "left_inputs": zeros(half, 2 * h, dtype=model.dtype),
    }


def _start_row(model: nn.Module, body_params, cache: incremental.Cache) -> incremental.Cache:
    # Row i's state-to-state part reads only row i - 1, which is complete: one matmul per
    # layer and row, as in `row_step`.
    del model
    state_gates = [
        row_state_to_gates(layer["state_kernel"], hidden)
        for hidden, layer in zip(cache["state"][0], body_params, strict=True)
    ]
    return {
        **cache,
        "state_above": cache["state"],
        "state_gates": jnp.stack(state_gates),
        "left_inputs": jnp.zeros_like(cache["left_inputs"]),
    }


def _pixel(cell: RowCell, model, body_params, cache, x, column, conditioning):
    state_gates = incremental.at_column(cache["state_gates"], column, axis=2)  # [L, batch, G h]
    above = [incremental.at_column(s, column, axis=2) for s in cache["state_above"]]
    states, inputs, outputs = [], [], []
    for index, layer in enumerate(body_params):
        # The layer's input at columns j - k//2 .. j: [batch, k//2 + 1, 2h].
        window = jnp.concatenate([cache["left_inputs"][index], x[:, None]], axis=1)
        input_gates = incremental.window_conv(window[:, None], layer["input_kernel"][None])
        input_gates = input_gates + layer["input_bias"]
        input_gates = incremental.add_conditioning(input_gates, conditioning, layer["conditioning"])
        state = cell.update(input_gates, state_gates[index], tuple(s[index] for s in above))
        states.append(state)
        inputs.append(x)
        x = residual.unit_output(model, x, state[0], layer["output"])
        outputs.append(x)
    column_state = {
        "state": tuple(jnp.stack(per_layer) for per_layer in zip(*states, strict=True)),
        "inputs": jnp.stack(inputs),
    }
    return column_state, outputs


def _write(model: nn.Module, cache, column_state, column: jax.Array) -> incremental.Cache:
    del model
    state = tuple(
        incremental.write_column(old, new, column, 2)
        for old, new in zip(cache["state"], column_state["state"], strict=True)
    )
    return {
        **cache,
        "state": state,
        "left_inputs": incremental.shift_in(cache["left_inputs"], column_state["inputs"], axis=2),
    }


def cached_body(kind: str, cell: RowCell) -> incremental.CachedBody:
    """The cached one-pixel body of the Row units named `kind` with `cell`."""
    return incremental.CachedBody(
        prepare=functools.partial(_prepare, kind, cell),
        init=functools.partial(_init, cell),
        start_row=_start_row,
        pixel=functools.partial(_pixel, cell),
        write=_write,
        end_row=incremental.no_row_work,
    )


def row_body(kind: str, cell: RowCell) -> residual.Body:
    """The body kind `kind` of Row units with `cell`: its layer, cached body and 'latency' stack."""
    return residual.Body(
        make_unit=functools.partial(make_unit, kind, cell),
        cached=cached_body(kind, cell),
        latency_stack=functools.partial(stack_over_rows, kind, cell),
    )


BODY = row_body(KIND, LSTM)  # the Row LSTM
