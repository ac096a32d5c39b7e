"""Diagonal BiLSTM: two Diagonal LSTMs sweeping the skewed image, one per direction.

The input map is skewed (row r shifted right by r, `[H, W] -> [H, W + H - 1]`) so that each
skewed column is one anti-diagonal of the image; a 2 x 1 state-to-state convolution over the
previous skewed column reads the pixel to the left (row r) and the pixel above (row r - 1).
The right-to-left direction runs on the mirrored map; its output is mirrored back and
shifted down one row before it is added, so it only ever carries completed rows.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax import layers, recurrence
from pixel_rnn_jax.lstm_cell import NUM_GATES, lstm_cell


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


def shift_down(x: jax.Array) -> jax.Array:
    """Moves `[batch, height, width, f]` down one row; the top row becomes zeros."""
    return jnp.pad(x, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


def diagonal_lstm_step(
    state_kernel: jax.Array,
    carry: tuple[jax.Array, jax.Array],
    input_gates: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """Computes one skewed column from the previous one.

    Args:
      state_kernel: [2 * hidden, 4 * hidden]; the first `hidden` rows read the row above
        (r - 1), the last `hidden` rows the same row (r), both in the previous column.
      carry: (hidden, cell) of the previous skewed column, each [batch, height, hidden].
      input_gates: [batch, height, 4 * hidden] input-to-state pre-activations.

    Returns:
      ((hidden, cell), hidden) for this column, each [batch, height, hidden].
    """
    hidden, cell = carry
    # The 2 x 1 convolution must not read row r + 1 (that would be a future pixel), so the
    # "above" input is the previous column shifted down, with zeros entering at the top.
    above = jnp.pad(hidden, ((0, 0), (1, 0), (0, 0)))[:, :-1]
    gates = input_gates + jnp.concatenate([above, hidden], axis=-1) @ state_kernel
    hidden, cell = lstm_cell(gates, cell)
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
    batch, height, width, four_hidden = input_gates.shape
    hidden_dim = four_hidden // NUM_GATES
    columns = jnp.moveaxis(skew(input_gates), 2, 0)  # [width + height - 1, batch, height, 4h]
    zeros = jnp.zeros((batch, height, hidden_dim), input_gates.dtype)
    _, hidden = recurrence.run_recurrence(
        lambda c, x: diagonal_lstm_step(state_kernel, c, x), (zeros, zeros), columns, unroll
    )
    return unskew(jnp.moveaxis(hidden, 0, 2), width)  # [batch, height, width, hidden]


def diagonal_bilstm(
    left_gates: jax.Array,
    right_gates: jax.Array,
    state_kernels: jax.Array,
    unroll: recurrence.Unroll = 1,
) -> jax.Array:
    """Both directions of the Diagonal BiLSTM, run as one batched recurrence.

    Args:
      left_gates: [batch, height, width, 4h] input-to-state of the left-to-right direction.
      right_gates: the same for the right-to-left direction, in image (unmirrored) order.
      state_kernels: [2, 2h, 4h], left-to-right then right-to-left.
      unroll: see `recurrence.parse_unroll`.

    Returns:
      [batch, height, width, h]: the left-to-right output plus the right-to-left output
      shifted down one row.
    """
    gates = jnp.stack([left_gates, right_gates[:, :, ::-1]])  # [2, batch, height, width, 4h]
    # vmap over the direction axis turns the two sweeps into one scan of batched steps.
    run = jax.vmap(functools.partial(diagonal_lstm, unroll=unroll))
    hidden = run(gates, state_kernels)  # [2, batch, height, width, h]
    return hidden[0] + shift_down(hidden[1][:, :, ::-1])


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

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Args: x [batch, height, width, features]; context: the image in [-1, 1]."""
        input_to_state = functools.partial(
            layers.MaskedConv2D,
            NUM_GATES * self.hidden_dim,
            (1, 1),
            "B",
            num_groups=self.num_groups,
            num_gates=NUM_GATES,
        )
        left_gates = input_to_state(name="left_to_right_input")(x)
        right_gates = input_to_state(name="right_to_left_input")(x)
        if self.full_context:
            if context is None:
                raise ValueError("full_context=True needs the image as `context`.")
            right_gates = right_gates + nn.Dense(
                NUM_GATES * self.hidden_dim, use_bias=False, name="right_to_left_context"
            )(context)
        state_kernels = self.param(
            "state_to_state",
            nn.initializers.lecun_normal(batch_axis=(0,)),  # one kernel per direction
            (2, 2 * self.hidden_dim, NUM_GATES * self.hidden_dim),
            jnp.float32,
        )
        hidden = diagonal_bilstm(left_gates, right_gates, state_kernels, self.unroll)
        chex.assert_shape(hidden, (*x.shape[:3], self.hidden_dim))
        return hidden
