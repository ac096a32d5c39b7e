"""Row LSTM: a recurrence over image rows with k x 1 convolutions along the row.

The input-to-state part is a 1 x k mask-B convolution computed for the whole map at once
(on the rows-first layout the recurrence scans); only the state-to-state part, a 1 x k
unmasked convolution of the previous row's hidden state, runs inside the recurrence. The
context of a pixel is a triangle above it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from flax import linen as nn

from pixel_rnn_jax import layers, recurrence
from pixel_rnn_jax.lstm_cell import NUM_GATES, lstm_cell, lstm_recurrence


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

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        context: jax.Array | None = None,
        conditioning: jax.Array | None = None,
    ) -> jax.Array:
        """Args: x [batch, height, width, features]; conditioning: optional
        [batch, height, width, c] map known in full (multi-scale), added to the gates."""
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
            name="input_to_state",
        )(rows)
        if conditioning is not None:
            # Unmasked 1x1: the conditioning map holds no pixel of x, nothing can leak.
            input_gates = input_gates + nn.Dense(
                NUM_GATES * self.hidden_dim, use_bias=False, name="conditioning"
            )(jnp.swapaxes(conditioning, 0, 1))
        state_kernel = self.param(
            "state_to_state",
            layers.default_kernel_init,
            (self.kernel_width * self.hidden_dim, NUM_GATES * self.hidden_dim),
            jnp.float32,
        )
        hidden_rows = lstm_recurrence(row_state_to_gates, state_kernel, input_gates, self.unroll)
        hidden = jnp.swapaxes(hidden_rows, 0, 1)
        chex.assert_shape(hidden, (*x.shape[:3], self.hidden_dim))
        return hidden
