"""The LSTM cell shared by the Row LSTM and the Diagonal LSTM (pure functions).

Gate pre-activations are laid out gate-major: `[..., 4 * hidden]` = o, f, i, g blocks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NUM_GATES = 4


def lstm_cell(gates: jax.Array, cell: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One LSTM update from summed gate pre-activations.

    o, f, i use the sigmoid and g the tanh; c = f * c_prev + i * g; h = o * tanh(c).

    Args:
      gates: [..., 4 * hidden] pre-activations (input-to-state + state-to-state).
      cell: [..., hidden] previous cell state.

    Returns:
      (hidden, cell), each [..., hidden].
    """
    o, f, i, g = jnp.split(gates, NUM_GATES, axis=-1)
    cell = jax.nn.sigmoid(f) * cell + jax.nn.sigmoid(i) * jnp.tanh(g)
    hidden = jax.nn.sigmoid(o) * jnp.tanh(cell)
    return hidden, cell
