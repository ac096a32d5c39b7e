"""The LSTM cell shared by the Row LSTM and the Diagonal LSTM (pure functions).

Gate pre-activations are laid out gate-major: `[..., 4 * hidden]` = o, f, i, g blocks.

`lstm_recurrence` runs the cell over a sequence with a hand-written backward sweep. Autodiff
of `lax.scan` saves about fifteen per-step intermediates (every elementwise result of the
cell) and accumulates the state-to-state kernel gradient inside the reverse loop; the
custom VJP saves h, c and the four gate activations, and computes the kernel gradient as
one matmul after the sweep. Measured on CPU at the binarized-MNIST sizes (7 layers, h=16,
batch 16, unroll 1, same process): train-step temp memory 153 -> 126 MiB (Row LSTM) and
416 -> 298 MiB (Diagonal BiLSTM); step time unchanged within noise (233 vs 233 ms and
682 vs 685 ms). See WORKSPACE_NOTES.md, benchmark section.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pixel_rnn_jax import recurrence

NUM_GATES = 4

# (state_kernel, hidden [..., hidden]) -> [..., 4 * hidden]; linear in each argument.
StateToGates = Callable[[jax.Array, jax.Array], jax.Array]


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def lstm_recurrence(
    state_to_gates: StateToGates,
    state_kernel: jax.Array,
    input_gates: jax.Array,
    unroll: recurrence.Unroll = 1,
) -> jax.Array:
    """Runs `h_t, c_t = lstm_cell(x_t + state_to_gates(kernel, h_{t-1}), c_{t-1})`.

    The same function as `recurrence.run_recurrence` over `lstm_cell` from zero initial
    states, with a custom VJP: the forward sweep keeps only h, c and the gate activations,
    the backward sweep runs one fused elementwise update and one transposed state-to-state
    product per step, and the kernel gradient is a single matmul after the sweep.

    Args:
      state_to_gates: `(kernel, hidden) -> gates`, linear in each argument, a module-level
        function (it is a static argument); `hidden` is one step's `[..., hidden]` state.
      state_kernel: the kernel passed to `state_to_gates`.
      input_gates: [T, ..., 4 * hidden] input-to-state pre-activations, time first.
      unroll: see `recurrence.parse_unroll`; used by both sweeps.

    Returns:
      hidden states [T, ..., hidden].

    Reverse mode (grad, vjp, jacrev) works through it; forward mode (jvp, jacfwd) does not,
    as for any `jax.custom_vjp` function.
    """
    hiddens, _ = _forward(state_to_gates, state_kernel, input_gates, unroll)
    return hiddens


def _forward(state_to_gates, state_kernel, input_gates, unroll):
    """The forward sweep; returns (hiddens, residuals for `_backward`)."""
    hidden_dim = input_gates.shape[-1] // NUM_GATES
    zeros = jnp.zeros((*input_gates.shape[1:-1], hidden_dim), input_gates.dtype)

    def step(carry, x):
        hidden, cell = carry
        o, f, i, g = jnp.split(x + state_to_gates(state_kernel, hidden), NUM_GATES, axis=-1)
        o, f, i, g = jax.nn.sigmoid(o), jax.nn.sigmoid(f), jax.nn.sigmoid(i), jnp.tanh(g)
        cell = f * cell + i * g
        hidden = o * jnp.tanh(cell)
        return (hidden, cell), (hidden, cell, jnp.concatenate([o, f, i, g], axis=-1))

    _, (hiddens, cells, acts) = recurrence.run_recurrence(step, (zeros, zeros), input_gates, unroll)
    return hiddens, (state_kernel, hiddens, cells, acts)


def _backward(state_to_gates, unroll, residuals, d_hiddens):
    """Reverse sweep: (d state_kernel, d input_gates) from d hiddens `[T, ..., hidden]`."""
    state_kernel, hiddens, cells, acts = residuals
    zeros = jnp.zeros_like(hiddens[0])
    # The states that entered step t: zeros, then the outputs of step t - 1.
    prev_hiddens = jnp.concatenate([zeros[None], hiddens[:-1]])
    prev_cells = jnp.concatenate([zeros[None], cells[:-1]])
    transpose_state = jax.linear_transpose(functools.partial(state_to_gates, state_kernel), zeros)

    def step(carry, x):
        d_hidden, d_cell = carry  # gradients flowing back from step t + 1
        d_out, cell, prev_cell, act = x
        d_hidden = d_hidden + d_out
        o, f, i, g = jnp.split(act, NUM_GATES, axis=-1)
        tanh_cell = jnp.tanh(cell)
        d_cell = d_cell + d_hidden * o * (1.0 - tanh_cell**2)
        d_gates = jnp.concatenate(
            [
                d_hidden * tanh_cell * o * (1.0 - o),
                d_cell * prev_cell * f * (1.0 - f),
                d_cell * g * i * (1.0 - i),
                d_cell * i * (1.0 - g**2),
            ],
            axis=-1,
        )
        (d_prev_hidden,) = transpose_state(d_gates)
        return (d_prev_hidden, d_cell * f), d_gates

    xs = (d_hiddens, cells, prev_cells, acts)
    _, d_gates = recurrence.run_recurrence(step, (zeros, zeros), xs, unroll, reverse=True)
    # The kernel gradient needs no recurrence: one product over all steps at once.
    all_steps = jax.vmap(state_to_gates, in_axes=(None, 0))
    _, kernel_vjp = jax.vjp(lambda k: all_steps(k, prev_hiddens), state_kernel)
    (d_kernel,) = kernel_vjp(d_gates)
    return d_kernel, d_gates


lstm_recurrence.defvjp(_forward, _backward)
