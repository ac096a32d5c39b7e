"""Diagonal BiLSTM: two Diagonal LSTMs sweeping the skewed image, one per direction.

The input map is skewed (row r shifted right by r, `[H, W] -> [H, W + H - 1]`) so that each
skewed column is one anti-diagonal of the image; a 2 x 1 state-to-state convolution over the
previous skewed column reads the pixel to the left (row r) and the pixel above (row r - 1).
The right-to-left direction runs on the mirrored map; its output is mirrored back and
shifted down one row before it is added, so it only ever carries completed rows.

The unit is defined once: its parameter names (`unpack`), its cell at one position
(`diagonal_lstm_cell`, from the state above, `row_above`, and the state to the left) and
the unit's output (`residual.unit_output`) are what the layer's sweeps and the cached
one-pixel body call.

The layer skews its 2h-feature input and computes the gates in the skewed frame. How the
sweeps run is the model's schedule (`recurrence.resolve_schedule`), the parameters and the
function being the same under both:
- 'throughput' (XLA:CPU's fastest, WORKSPACE_NOTES.md): the two directions are independent
  loops, and each runs in phases that skip the rows of a column that hold no pixel
  (`sweep_columns`): 2 x phases loops of W + H - 1 steps in all, forward and backward.
- 'latency' (the fewest sequential steps): both directions in one loop, their states and
  kernels stacked on a leading axis, over every row (`sweep_stacked`): one loop of
  W + H - 1 steps forward and one backward.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from pixel_rnn_jax.models import residual
from pixel_rnn_jax.nn import incremental, layers, recurrence
from pixel_rnn_jax.nn.lstm_cell import NUM_GATES, lstm_cell, lstm_sweep

KIND = "diagonal_bilstm"  # the model name in the registry and the prefix of its units' names
# Parameter names inside a DiagonalBiLSTMLayer: the layer creates them, `unpack` reads them.
LEFT_INPUT = "left_to_right_input"  # mask-B 1x1 input-to-state, left-to-right direction
RIGHT_INPUT = "right_to_left_input"  # the same for the right-to-left direction
RIGHT_CONTEXT = "right_to_left_context"  # full_context only: unmasked 1x1 of the image
LEFT_CONDITIONING = "left_to_right_conditioning"  # multi-scale only: unmasked 1x1s of the
RIGHT_CONDITIONING = "right_to_left_conditioning"  # conditioning map, one per direction
LEFT_CLASS_EMBEDDING = "left_to_right_class_embedding"  # conditional only: [num_classes, 4h]
RIGHT_CLASS_EMBEDDING = "right_to_left_class_embedding"  # per-class gate biases, per direction
STATE_TO_STATE = "state_to_state"  # [2, 2h, 4h]: the 2 x 1 column kernels, left then right


def skew(x: jax.Array) -> jax.Array:
    """Shifts row r of `[batch, height, width, features]` right by r.

    Returns:
      [batch, height, width + height - 1, features], zero outside the shifted rows.
    """
    batch, height, width, features = x.shape
    # Rows of length M = width + height read as rows of length M - 1 move each row r
    # right by r; the trailing `height` padding zeros of the last row are dropped.
    padded = jnp.pad(x, ((0, 0), (0, 0), (0, height), (0, 0)))
    flat = padded.reshape(batch, height * (width + height), features)
    flat = flat[:, : height * (width + height - 1)]
    return flat.reshape(batch, height, width + height - 1, features)


def unskew(x: jax.Array, width: int) -> jax.Array:
    """Inverse of `skew`: `[batch, height, width + height - 1, f] -> [batch, height, width, f]`."""
    batch, height, skewed_width, features = x.shape
    chex.assert_equal(skewed_width, width + height - 1)
    flat = x.reshape(batch, height * skewed_width, features)
    flat = jnp.pad(flat, ((0, 0), (0, height), (0, 0)))
    return flat.reshape(batch, height, width + height, features)[:, :, :width]


def shift_down(x: jax.Array, axis: int = 1) -> jax.Array:
    """Moves `x` down one row along its rows `axis`: row r gets row r - 1, row 0 zeros.

    The one shift of the Diagonal BiLSTM: the right-to-left output, `[batch, height, width,
    f]` (axis 1), reaches row r from row r - 1; and a sweep's "above" state (`row_above`).
    """
    pad = [(0, 0)] * x.ndim
    pad[axis] = (1, 0)
    return jax.lax.slice_in_dim(jnp.pad(x, pad), 0, x.shape[axis], axis=axis)


def to_columns(x: jax.Array) -> jax.Array:
    """Skews `[..., height, width, f]` and puts the skewed columns first (time-major).

    Returns:
      [width + height - 1, ..., height, f]: column t holds anti-diagonal t (pixel (r, t - r)
      in row r), zero where t - r is outside the image.
    """
    *lead, height, width, features = x.shape
    skewed = skew(x.reshape(-1, height, width, features))
    skewed = skewed.reshape(*lead, height, width + height - 1, features)
    return jnp.moveaxis(skewed, -2, 0)


def from_columns(columns: jax.Array, width: int) -> jax.Array:
    """Inverse of `to_columns`: [width + height - 1, ..., height, f] -> [..., height, width, f]."""
    skewed = jnp.moveaxis(columns, 0, -2)
    *lead, height, skewed_width, features = skewed.shape
    image = unskew(skewed.reshape(-1, height, skewed_width, features), width)
    return image.reshape(*lead, height, width, features)


def row_above(hidden: jax.Array) -> jax.Array:
    """The state of row r - 1 at row r: `[..., height, features]` shifted down one row.

    The 2 x 1 state-to-state convolution reads, from the previous skewed column, row r
    (the pixel to the left) and row r - 1 (the pixel above); it must not read row r + 1,
    a future pixel, so "above" is the previous column shifted down, zeros entering at the
    top. Rows are the second-to-last axis in every layout the sweeps use.
    """
    return shift_down(hidden, axis=hidden.ndim - 2)


def diagonal_state(state_kernel: jax.Array, above: jax.Array, left: jax.Array) -> jax.Array:
    """The state-to-state 2 x 1 convolution at a position, as one matmul.

    Args:
      state_kernel: [2 * hidden, 4 * hidden]; the first `hidden` rows read the hidden state
        above, the last `hidden` rows the one to the left.
      above: [..., hidden] hidden state at (i - 1, j) (`row_above` in the skewed frame).
      left: [..., hidden] hidden state at (i, j - 1) (the same row of the previous column).

    Returns:
      [..., 4 * hidden] state-to-state gate pre-activations, in the kernel's dtype.
    """
    return layers.matmul_2d(jnp.concatenate([above, left], axis=-1), state_kernel)


def diagonal_lstm_cell(
    state_kernel: jax.Array,
    above: jax.Array,
    left: jax.Array,
    left_cell: jax.Array,
    input_gates: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """The Diagonal LSTM at one position, in image coordinates.

    Args:
      state_kernel: [2 * hidden, 4 * hidden] (see `diagonal_state`).
      above: [..., hidden] hidden state at (i - 1, j), zeros on the top row.
      left: [..., hidden] hidden state at (i, j - 1), zeros in the first column.
      left_cell: [..., hidden] cell state at (i, j - 1), zeros in the first column.
      input_gates: [..., 4 * hidden] input-to-state pre-activations at (i, j).

    Returns:
      (hidden, cell) at (i, j), each [..., hidden].
    """
    state = diagonal_state(state_kernel, above, left)
    # Summed in float32 whatever the compute dtype, as in the sweep (see `lstm_cell`).
    return lstm_cell(input_gates.astype(jnp.float32) + state.astype(jnp.float32), left_cell)


def diagonal_state_to_gates(state_kernel: jax.Array, hidden: jax.Array) -> jax.Array:
    """`diagonal_state` of a whole skewed column from the previous one (the sweeps' form).

    Reads only the rows axis, so a leading `[time * batch]` axis is batch, as
    `lstm_cell.lstm_sweep`'s backward needs (its `StateToGates` contract).

    Args:
      state_kernel: [2 * hidden, 4 * hidden]; the first `hidden` rows read row r - 1, the
        last `hidden` rows row r, both in the previous column.
      hidden: [batch, height, hidden] hidden state of the previous skewed column.

    Returns:
      [batch, height, 4 * hidden] state-to-state gate pre-activations.
    """
    # In the skewed frame the previous column's row r is the pixel to the left.
    return diagonal_state(state_kernel, row_above(hidden), hidden)


def diagonal_lstm_step(
    state_kernel: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    input_gates: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Computes one skewed column from the previous one: `diagonal_lstm_cell` at every row.

    Args:
      state_kernel: [2 * hidden, 4 * hidden] (see `diagonal_state_to_gates`).
      carry: (hidden, cell) of the previous skewed column, each [batch, height, hidden].
      input_gates: [batch, height, 4 * hidden] input-to-state pre-activations.

    Returns:
      ((hidden, cell), hidden) for this column, each [batch, height, hidden].
    """
    hidden, cell = carry
    hidden, cell = diagonal_lstm_cell(state_kernel, row_above(hidden), hidden, cell, input_gates)
    return (hidden, cell), hidden


def diagonal_lstm(
    input_gates: jax.Array, state_kernel: jax.Array, unroll: recurrence.Unroll = 1
) -> jax.Array:
    """One left-to-right Diagonal LSTM over an unskewed map, from zero initial state.

    Args:
      input_gates: [batch, height, width, 4 * hidden] input-to-state pre-activations.
      state_kernel: [2 * hidden, 4 * hidden].
      unroll: see `recurrence.parse_unroll`.

    Returns:
      hidden states [batch, height, width, hidden].
    """
    columns = to_columns(input_gates)  # [width + height - 1, batch, height, 4h]
    # `diagonal_lstm_step` over the columns, with a hand-written backward sweep (lstm_cell).
    hidden = sweep_columns(columns, state_kernel, input_gates.shape[2], unroll)
    return from_columns(hidden, input_gates.shape[2])  # [batch, height, width, hidden]


def valid_columns(height: int, width: int) -> np.ndarray:
    """Where `to_columns` puts image pixels: [width + height - 1, 1, height, 1] booleans.

    Column t, row r holds pixel (r, t - r), which exists when 0 <= t - r < width.
    """
    t = np.arange(width + height - 1)[:, None]
    r = np.arange(height)[None, :]
    return ((t - r >= 0) & (t - r < width))[:, None, :, None]


# `sweep_columns`' default phases: at most MAX_PHASES, each at least MIN_PHASE_STEPS columns
# long (every phase is one more loop to compile; more phases skip more empty rows). The
# trade-off was measured at the MNIST size (WORKSPACE_NOTES.md, "Scan vs unrolled
# benchmark"): beyond 6 phases the step got no faster while compile time kept growing.
MAX_PHASES = 6
MIN_PHASE_STEPS = 8


def default_num_phases(height: int, width: int, unroll: recurrence.Unroll = 1) -> int:
    """The number of phases `sweep_columns` uses by default for a height x width image.

    A scan unrolled k times compiles k steps per loop, so with an integer unroll k the
    phases are divided by k: phases times unroll would multiply the program (a 32x32
    Diagonal BiLSTM at unroll 8 with 6 phases took minutes to compile; WORKSPACE_NOTES.md).
    A full unroll or a
    Python loop compiles every step once however the steps are grouped.
    """
    phases = max(1, min(MAX_PHASES, (width + height - 1) // MIN_PHASE_STEPS))
    setting = recurrence.parse_unroll(unroll)
    if isinstance(setting, int) and not isinstance(setting, bool):
        phases = max(1, phases // setting)
    return phases


class Phase(NamedTuple):
    """Steps [start, stop) of a column sweep, computing rows [row_start, row_stop) only."""

    start: int
    stop: int
    row_start: int
    row_stop: int


def column_phases(height: int, width: int, num_phases: int) -> list[Phase]:
    """Splits the skewed columns into runs of steps that each need only a band of rows.

    Column t holds image pixels in rows max(0, t - width + 1) .. min(t, height - 1) only;
    the other rows of the column are padding, so a sweep over all rows at every step does
    up to twice the work it needs (at 28x28, 1540 row-steps for 784 pixels). A phase covers
    consecutive columns and the rows any of them holds, plus the row above the first such
    row: at the phase's first step that row's carried-in state is the "above" input of the
    row below it (rows further up, and their states, are never read again).

    Returns:
      `num_phases` (or fewer) `Phase`s in order, covering columns 0 .. width + height - 2.
    """
    num_columns = width + height - 1
    num_phases = max(1, min(num_phases, num_columns))
    bounds = np.linspace(0, num_columns, num_phases + 1).round().astype(int)
    phases = []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        first_row = max(0, int(start) - width + 1)
        last_row = min(int(stop) - 1, height - 1)
        phases.append(Phase(int(start), int(stop), max(0, first_row - 1), last_row + 1))
    return phases


def sweep_columns(
    columns: jax.Array,
    state_kernel: jax.Array,
    width: int,
    unroll: recurrence.Unroll = 1,
    num_phases: int | None = None,
) -> jax.Array:
    """One Diagonal LSTM over skewed columns, computing only the rows that hold pixels.

    Args:
      columns: [width + height - 1, batch, height, 4h] input-to-state pre-activations in
        `to_columns` layout; values off the image are ignored (treated as zero).
      state_kernel: [2h, 4h] (see `diagonal_state_to_gates`).
      width: image width.
      unroll: see `recurrence.parse_unroll`.
      num_phases: see `column_phases` (default: `default_num_phases`); the result does not
        depend on it.

    Returns:
      hidden states [width + height - 1, batch, height, h]; off the image they are
      unspecified (`from_columns` drops them).
    """
    num_columns, batch, height, four_h = columns.shape
    chex.assert_equal(num_columns, width + height - 1)
    hidden_dim = four_h // NUM_GATES
    valid = valid_columns(height, width)
    hidden = cell = jnp.zeros((batch, height, hidden_dim), jnp.float32)  # see lstm_cell
    outputs = []
    if num_phases is None:
        num_phases = default_num_phases(height, width, unroll)
    phases = column_phases(height, width, num_phases)
    # Split along time (its gradient is one concatenation), then take each phase's rows: a
    # plain slice per phase would make the gradient a sum of full-size padded copies.
    pieces = jnp.split(columns, [phase.start for phase in phases[1:]], axis=0)
    for phase, piece in zip(phases, pieces, strict=True):
        rows = slice(phase.row_start, phase.row_stop)
        band, band_hidden, band_cell = lstm_sweep(
            diagonal_state_to_gates,
            state_kernel,
            piece[:, :, rows],
            hidden[:, rows],
            cell[:, rows],
            unroll,
            jnp.asarray(valid[phase.start : phase.stop, :, rows]),
        )
        pad = ((0, 0), (0, 0), (phase.row_start, height - phase.row_stop), (0, 0))
        outputs.append(jnp.pad(band, pad))
        hidden = hidden.at[:, rows].set(band_hidden)
        cell = cell.at[:, rows].set(band_cell)
    return jnp.concatenate(outputs) if len(outputs) > 1 else outputs[0]


def diagonal_bilstm(
    left_gates: jax.Array,
    right_gates: jax.Array,
    state_kernels: jax.Array,
    unroll: recurrence.Unroll = 1,
) -> jax.Array:
    """Both directions of the Diagonal BiLSTM from input-to-state maps in image order.

    Args:
      left_gates: [batch, height, width, 4h] input-to-state of the left-to-right direction.
      right_gates: the same for the right-to-left direction, in image (unmirrored) order.
      state_kernels: [2, 2h, 4h], left-to-right then right-to-left.
      unroll: see `recurrence.parse_unroll`.

    Returns:
      [batch, height, width, h]: the left-to-right output plus the right-to-left output
      shifted down one row.
    """
    return bilstm_over_columns(
        to_columns(left_gates),
        to_columns(right_gates[:, :, ::-1]),
        state_kernels,
        left_gates.shape[2],
        unroll,
    )


def stacked_state_to_gates(state_kernels: jax.Array, hidden: jax.Array) -> jax.Array:
    """`diagonal_state_to_gates` of both directions at once, each with its own kernel.

    The leading axis holds the directions interleaved, direction fastest: one step's state is
    [2, ...] (left-to-right, right-to-left), and the backward sweep of `lstm_sweep` folds the
    time axis into it ([T * 2, ...], time-major) for the kernel gradient, which this reads
    the same way.

    Args:
      state_kernels: [2, 2 * hidden, 4 * hidden], left-to-right then right-to-left.
      hidden: [n * 2, batch, height, hidden] hidden states of previous skewed columns.

    Returns:
      [n * 2, batch, height, 4 * hidden] state-to-state gate pre-activations.
    """
    lead, *rest = hidden.shape
    paired = hidden.reshape(lead // 2, 2, *rest)  # [n, direction, batch, height, h]
    inputs = jnp.concatenate([row_above(paired), paired], axis=-1).astype(state_kernels.dtype)
    gates = jnp.einsum("ndbrk,dkg->ndbrg", inputs, state_kernels)
    return gates.reshape(lead, *gates.shape[2:])


def sweep_stacked(
    columns: jax.Array,
    state_kernels: jax.Array,
    width: int,
    unroll: recurrence.Unroll = 1,
) -> jax.Array:
    """Both directions' Diagonal LSTMs as one loop over the skewed columns (all rows).

    Args:
      columns: [width + height - 1, 2, batch, height, 4h]: each direction's input-to-state
        pre-activations in `to_columns` layout (the right-to-left one of the mirrored map);
        values off the image are ignored (treated as zero).
      state_kernels: [2, 2h, 4h].
      width: image width.
      unroll: see `recurrence.parse_unroll`.

    Returns:
      hidden states [width + height - 1, 2, batch, height, h]; off the image they are
      unspecified (`from_columns` drops them).
    """
    num_columns, directions, batch, height, four_h = columns.shape
    chex.assert_equal(num_columns, width + height - 1)
    zeros = jnp.zeros((directions, batch, height, four_h // NUM_GATES), jnp.float32)
    valid = jnp.asarray(valid_columns(height, width)[:, None])  # [T, 1, 1, height, 1]
    hidden, _, _ = lstm_sweep(
        stacked_state_to_gates, state_kernels, columns, zeros, zeros, unroll, valid
    )
    return hidden


def bilstm_over_columns(
    left_columns: jax.Array,
    right_columns: jax.Array,
    state_kernels: jax.Array,
    width: int,
    unroll: recurrence.Unroll = 1,
    schedule: str = "throughput",
) -> jax.Array:
    """`diagonal_bilstm` from both directions' gates already in column form.

    Args:
      left_columns: [width + height - 1, batch, height, 4h], `to_columns` of the
        left-to-right input-to-state map (values off the image are ignored).
      right_columns: the same for the right-to-left direction, of the mirrored map.
      state_kernels: [2, 2h, 4h].
      width: image width.
      unroll: see `recurrence.parse_unroll`.
      schedule: 'throughput' (two loops, each in phases) or 'latency' (one loop of both).

    Returns:
      [batch, height, width, h], as `diagonal_bilstm`.
    """
    if schedule == "latency":
        # One loop: the directions stacked on the axis after time, each with its own kernel.
        stacked = jnp.stack([left_columns, right_columns], axis=1)
        hidden = sweep_stacked(stacked, state_kernels, width, unroll)
        left, right = (from_columns(hidden[:, d], width) for d in range(2))
        return left + shift_down(right[:, :, ::-1])
    # Two independent recurrences rather than one vmapped over the direction: vmap turns the
    # sweeps' matmuls into batched dots with transposes and needs the directions' inputs
    # stacked (two loops were faster on XLA:CPU; measured in WORKSPACE_NOTES.md).
    left, right = (
        from_columns(sweep_columns(columns, kernel, width, unroll), width)
        for kernel, columns in ((state_kernels[0], left_columns), (state_kernels[1], right_columns))
    )
    return left + shift_down(right[:, :, ::-1])


class DiagonalBiLSTMLayer(nn.Module):
    """One Diagonal BiLSTM layer: [batch, height, width, features] -> [..., hidden_dim].

    With `full_context`, the right-to-left direction also receives an unmasked 1x1
    projection of the image itself. Its output is shifted down a row, so this stays causal,
    and it closes the faithful design's gap: without it the last pixel of the previous row
    never reaches outputs more than a few columns to its left (see WORKSPACE_NOTES.md).
    """

    hidden_dim: int  # h, hidden units per direction
    num_groups: int = 1  # colour groups (3 for RGB)
    unroll: recurrence.Unroll = 1  # lax.scan unroll factor, 'full' or 'python'
    full_context: bool = False  # right-to-left direction also sees the image (see above)
    dtype: Any = jnp.float32  # compute dtype of the convolutions and the state-to-state product
    schedule: str = "throughput"  # 'throughput' or 'latency' (module docstring)

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
        labels_one_hot: jax.Array | None = None,
    ) -> jax.Array:
        """Args: x [batch, height, width, features]; context: the image in [-1, 1];
        conditioning: optional [batch, height, width, c] map known in full (multi-scale),
        added to the gates of both directions; labels_one_hot: optional
        [batch, num_classes] class codes, whose learned embedding (one per direction) is
        added to the gates at every pixel."""
        _, height, width, _ = x.shape
        # The input-to-state 1x1 convolutions run on the skewed input (2h features, time
        # first) rather than skewing their 4h outputs: half the data to skew and unskew,
        # and the gates come out already in the layout the recurrence scans over.
        left_columns = to_columns(x)  # [width + height - 1, batch, height, features]
        right_columns = to_columns(x[:, :, ::-1])  # the mirrored image, for right-to-left
        input_to_state = functools.partial(
            layers.MaskedConv2D,
            NUM_GATES * self.hidden_dim,
            (1, 1),
            "B",
            num_groups=self.num_groups,
            num_gates=NUM_GATES,
            dtype=self.dtype,
        )
        left_gates = input_to_state(name=LEFT_INPUT)(left_columns)
        right_gates = input_to_state(name=RIGHT_INPUT)(right_columns)
        if self.full_context:
            if context is None:
                raise ValueError("full_context=True needs the image as `context`.")
            right_gates = right_gates + nn.Dense(
                NUM_GATES * self.hidden_dim, use_bias=False, dtype=self.dtype, name=RIGHT_CONTEXT
            )(to_columns(context[:, :, ::-1]))
        if conditioning is not None:
            # Unmasked 1x1s: the map holds no pixel of x.
            conditioning_1x1 = functools.partial(
                nn.Dense, NUM_GATES * self.hidden_dim, use_bias=False, dtype=self.dtype
            )
            left_gates = left_gates + conditioning_1x1(name=LEFT_CONDITIONING)(
                to_columns(conditioning)
            )
            right_gates = right_gates + conditioning_1x1(name=RIGHT_CONDITIONING)(
                to_columns(conditioning[:, :, ::-1])
            )
        if labels_one_hot is not None:
            # The same at every pixel. Off the image the skewed gates then hold more than
            # the bias, which `sweep_columns` ignores all the same.
            class_1x1 = functools.partial(
                nn.Dense, NUM_GATES * self.hidden_dim, use_bias=False, dtype=self.dtype
            )
            left_class = class_1x1(name=LEFT_CLASS_EMBEDDING)(labels_one_hot)  # [batch, 4h]
            right_class = class_1x1(name=RIGHT_CLASS_EMBEDDING)(labels_one_hot)
            left_gates = left_gates + left_class[None, :, None]  # [columns, batch, height, 4h]
            right_gates = right_gates + right_class[None, :, None]
        # Off the image the skewed input is zero but the bias is not: `sweep_columns` treats
        # those gates as zero, so that states there stay zero (the first column reads its
        # left neighbour from them).
        state_kernels = self.param(
            STATE_TO_STATE,
            nn.initializers.lecun_normal(batch_axis=(0,)),  # one kernel per direction
            (2, 2 * self.hidden_dim, NUM_GATES * self.hidden_dim),
            jnp.float32,
        )
        # The kernels in the compute dtype: the sweeps' state-to-state products run in it.
        hidden = bilstm_over_columns(
            left_gates,
            right_gates,
            state_kernels.astype(self.dtype),
            width,
            self.unroll,
            self.schedule,
        )
        chex.assert_shape(hidden, (*x.shape[:3], self.hidden_dim))
        return hidden


def make_unit(model: nn.Module, index: int) -> nn.Module:
    """Residual unit `index` of a Diagonal BiLSTM `PixelRNN` (`diagonal_bilstm_<index>`)."""
    layer = DiagonalBiLSTMLayer(
        model.hidden_dim,
        num_groups=model.num_channels,
        unroll=model.unroll,
        full_context=model.full_context,
        dtype=model.dtype,
        schedule=model.schedule,
        parent=None,
    )
    return residual.recurrent_unit(model, KIND, index, layer)


# ---------------------------------------------------------------------------------------
# The cached body: the same layer one pixel at a time (see `sampling.cached`). Per layer and
# pixel: the left-to-right cell from the states at (i - 1, j) and (i, j - 1); once per
# completed row, a right-to-left sweep of that row for every layer, whose output is what
# the next row adds (the shift-down), O(1) per pixel amortised.


class DirectionParams(NamedTuple):
    """One direction's parameters in a Diagonal BiLSTM unit (h hidden units, c features)."""

    input_kernel: jax.Array  # [1, 1, 2h, 4h] the mask-B 1x1 input-to-state (unmasked)
    input_bias: jax.Array  # [4h]
    state_kernel: jax.Array  # [2h, 4h] (see `diagonal_state`)
    conditioning: jax.Array | None  # [c, 4h] (multi-scale only)
    class_embedding: jax.Array | None  # [num_classes, 4h] (class-conditional only)


class DiagonalParams(NamedTuple):
    """One Diagonal BiLSTM unit's parameters by role, as the layer and its unit create them."""

    left: DirectionParams  # the left-to-right direction
    right: DirectionParams  # the right-to-left direction (run on the mirrored map)
    # [channels, 4h], full_context only: the right-to-left direction's unmasked 1x1 of the
    # image (unmasked since its output moves a row down).
    right_context: jax.Array | None
    output: incremental.Params  # the unit's masked 1x1 back to 2h (`residual.output_dense`)


def unpack(unit: incremental.Params, num_groups: int) -> DiagonalParams:
    """A Diagonal BiLSTM unit's parameters (`params[residual.unit_name(KIND, i)]`) by role.

    The one reader of the names `DiagonalBiLSTMLayer` gives its parameters.
    """
    layer = unit[residual.LAYER]
    state_kernels = layer[STATE_TO_STATE]  # [2, 2h, 4h], left then right

    def direction(index, input_name, conditioning_name, class_name):
        return DirectionParams(
            input_kernel=layer[input_name]["kernel"],
            input_bias=layer[input_name]["bias"],
            state_kernel=state_kernels[index],
            conditioning=incremental.optional_kernel(layer, conditioning_name),
            class_embedding=incremental.optional_kernel(layer, class_name),
        )

    return DiagonalParams(
        left=direction(0, LEFT_INPUT, LEFT_CONDITIONING, LEFT_CLASS_EMBEDDING),
        right=direction(1, RIGHT_INPUT, RIGHT_CONDITIONING, RIGHT_CLASS_EMBEDDING),
        right_context=incremental.optional_kernel(layer, RIGHT_CONTEXT),
        output=residual.output_dense(unit, num_groups),
    )


def _prepare(
    model: nn.Module, params: incremental.Params, labels_one_hot: jax.Array | None = None
) -> incremental.Params:
    groups = model.num_channels

    def direction(params: DirectionParams):
        kernel = incremental.causal_rows(params.input_kernel, "B", groups, NUM_GATES)[0, 0]
        return {
            "input": {
                "kernel": kernel,  # [2h, 4h]
                # [4h], or [batch, 4h] with the class embedding of each image's label.
                "bias": incremental.add_class_embedding(
                    params.input_bias, params.class_embedding, labels_one_hot
                ),
            },
            "state_kernel": params.state_kernel,  # [2h, 4h]
        }

    body = []
    for unit in residual.unit_params(params, KIND, model.num_layers):
        unit = unpack(unit, groups)
        body.append(
            {
                "left": direction(unit.left),
                "right": direction(unit.right),
                # [c, 4h] or None; top-level keys naming "conditioning", where
                # `sampling.cached` looks for them.
                "left_conditioning": unit.left.conditioning,
                "right_conditioning": unit.right.conditioning,
                "right_context": unit.right_context,
                "output": unit.output,
            }
        )
    return body


def _init(model: nn.Module, batch: int, width: int) -> incremental.Cache:
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
        "inputs": jnp.zeros((num_layers, batch, width, 2 * h), model.dtype),
    }


def _start_row(model: nn.Module, body_params, cache: incremental.Cache) -> incremental.Cache:
    del model, body_params
    zeros = jnp.zeros_like(cache["left_hidden"])
    return {**cache, "hidden_above": cache["hidden"], "left_hidden": zeros, "left_cell": zeros}


def _pixel(model, body_params, cache, x, column, conditioning):
    above = incremental.at_column(cache["hidden_above"], column, axis=2)  # (i - 1, j)
    right = incremental.at_column(cache["right_hidden"], column, axis=2)  # R-to-L at (i - 1, j)
    hiddens, cells, inputs, outputs = [], [], [], []
    for index, layer in enumerate(body_params):
        left = layer["left"]
        input_gates = incremental.dense(left["input"], x)
        input_gates = incremental.add_conditioning(
            input_gates, conditioning, layer["left_conditioning"]
        )
        hidden, cell = diagonal_lstm_cell(
            left["state_kernel"],
            above[index],
            cache["left_hidden"][index],
            cache["left_cell"][index],
            input_gates,
        )
        hiddens.append(hidden)
        cells.append(cell)
        inputs.append(x)
        # The right-to-left output reaches row i from row i - 1 (`shift_down`).
        x = residual.unit_output(model, x, hidden + right[index], layer["output"])
        outputs.append(x)
    return incremental.stack_layers(hidden=hiddens, cell=cells, inputs=inputs), outputs


def _write(model: nn.Module, cache, column_state, column: jax.Array) -> incremental.Cache:
    del model
    return {
        **cache,
        "hidden": incremental.write_column(cache["hidden"], column_state["hidden"], column, 2),
        "left_hidden": column_state["hidden"],
        "left_cell": column_state["cell"],
        "inputs": incremental.write_column(cache["inputs"], column_state["inputs"], column, 2),
    }


def _end_row(model, body_params, cache, image_row, conditioning_row):
    """Sweeps the completed row right to left for every layer at once.

    In image coordinates the right-to-left state at (i, j) reads (i - 1, j) above and
    (i, j + 1) to its right, which is `diagonal_lstm_cell` on the mirrored row.
    """
    stack = lambda fn: jnp.stack([fn(layer) for layer in body_params])
    gates = jnp.einsum(
        "lbwi,lio->lbwo", cache["inputs"], stack(lambda p: p["right"]["input"]["kernel"])
    )
    bias = stack(lambda p: p["right"]["input"]["bias"])  # [L, 4h], or [L, batch, 4h] (labels)
    gates = gates + (bias[:, None, None] if bias.ndim == 2 else bias[:, :, None])
    if model.full_context:
        context = stack(lambda p: p["right_context"])  # [L, channels, 4h]
        gates = gates + jnp.einsum("bwc,lco->lbwo", image_row.astype(context.dtype), context)
    if conditioning_row is not None:
        kernels = stack(lambda p: p["right_conditioning"])  # [L, c, 4h]
        conditioning_row = conditioning_row.astype(kernels.dtype)
        gates = gates + jnp.einsum("bwc,lco->lbwo", conditioning_row, kernels)
    state_kernels = stack(lambda p: p["right"]["state_kernel"])  # [L, 2h, 4h]
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


CACHED_BODY = incremental.CachedBody(
    prepare=_prepare,
    init=_init,
    start_row=_start_row,
    pixel=_pixel,
    write=_write,
    end_row=_end_row,
)
