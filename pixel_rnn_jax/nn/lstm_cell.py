"""The LSTM cell shared by the Row LSTM and the Diagonal LSTM (pure functions).

Gate pre-activations are laid out gate-major: `[..., 4 * hidden]` = o, f, i, g blocks.

`lstm_recurrence` / `lstm_sweep` run the cell over a sequence with a hand-written backward
sweep. Autodiff of `lax.scan` saves about fifteen per-step intermediates (every elementwise
result of the cell) and accumulates the state-to-state kernel gradient inside the reverse
loop; the custom VJP saves h, c and the four gate activations, and computes the kernel
gradient as one matmul after the sweep: less temporary memory at the same step time.
The per-step work is then written for XLA:CPU, where a sweep step is a handful of small
kernels: one activation expression for all four gates (`gate_activations`), and a backward
sweep that carries the cell state instead of reading a shifted copy of all cells. The
measured effect of each is in WORKSPACE_NOTES.md ("Scan vs unrolled benchmark").

Mixed precision: the state-to-state products run in the dtype of the kernel handed to the
sweep (bfloat16 when the layer casts it), the input gates may be bfloat16 too; the gate
pre-activations are summed, the gate nonlinearities and the cell and hidden states computed,
and the backward sweep's carried gradients accumulated, in float32 (a bfloat16 cell state
drifts over hundreds of steps).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from pixel_rnn_jax.nn import recurrence

NUM_GATES = 4

# (state_kernel, hidden [lead, ..., hidden]) -> [lead, ..., 4 * hidden]; linear in each
# argument, and it must treat the leading axis as a batch axis: applied to the states of
# T steps folded into it (`[T * lead, ...]`, time-major) it must give the T steps' results
# folded the same way, because `lstm_sweep`'s backward computes the kernel gradient in
# one call on all steps so folded (`_backward`). A function that mixes entries along that
# axis (as `stacked_state_to_gates` pairs the two directions on it) must pair them within
# each step's block only. tests/test_lstm_cell.py checks every state_to_gates the models
# hand to the sweep (`test_state_to_gates_treats_time_folded_into_the_batch_as_batch`).
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
    return _update_from_activations(gate_activations(gates), cell)


def _update_from_activations(acts: jax.Array, cell: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(hidden, cell) from `gate_activations` output [..., 4 * hidden] and the previous cell."""
    o, f, i, g = jnp.split(acts, NUM_GATES, axis=-1)
    cell = f * cell + i * g
    return o * jnp.tanh(cell), cell


def lstm_recurrence(
    state_to_gates: StateToGates,
    state_kernel: jax.Array,
    input_gates: jax.Array,
    unroll: recurrence.Unroll = 1,
) -> jax.Array:
    """Runs `h_t, c_t = lstm_cell(x_t + state_to_gates(kernel, h_{t-1}), c_{t-1})`.

    The same function as `recurrence.run_recurrence` over `lstm_cell` from zero initial
    states; `lstm_sweep` (which this calls) says how it is differentiated.

    Args:
      state_to_gates: `(kernel, hidden) -> gates`, a `StateToGates` (linear in each
        argument, the leading axis a batch axis: see there), a module-level function (it
        is a static argument); `hidden` is one step's `[..., hidden]` state.
      state_kernel: the kernel passed to `state_to_gates`.
      input_gates: [T, ..., 4 * hidden] input-to-state pre-activations, time first.
      unroll: see `recurrence.parse_unroll`; used by both sweeps.

    Returns:
      float32 hidden states [T, ..., hidden].
    """
    hidden_dim = input_gates.shape[-1] // NUM_GATES
    zeros = jnp.zeros((*input_gates.shape[1:-1], hidden_dim), jnp.float32)
    hiddens, _, _ = lstm_sweep(state_to_gates, state_kernel, input_gates, zeros, zeros, unroll)
    return hiddens


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 5))
def lstm_sweep(
    state_to_gates: StateToGates,
    state_kernel: jax.Array,
    input_gates: jax.Array,
    initial_hidden: jax.Array,
    initial_cell: jax.Array,
    unroll: recurrence.Unroll = 1,
    input_mask: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`lstm_recurrence` from given initial states, returning the final states too.

    A custom VJP: the forward sweep keeps only h, c and the gate activations, the backward
    sweep runs one fused elementwise update and one transposed state-to-state product per
    step, and the kernel gradient is a single matmul after the sweep. Reverse mode (grad,
    vjp, jacrev) works through it; forward mode (jvp, jacfwd) does not, as for any
    `jax.custom_vjp` function.

    Args:
      state_to_gates: as in `lstm_recurrence` (static).
      state_kernel: the kernel passed to `state_to_gates`; its dtype is the compute dtype of
        the state-to-state products (the hidden states are cast to it for them).
      input_gates: [T, ..., 4 * hidden] input-to-state pre-activations, time first (any
        float dtype; their gradient comes back in it).
      initial_hidden: float32 [..., hidden], the state that enters step 0.
      initial_cell: float32 [..., hidden].
      unroll: see `recurrence.parse_unroll`; used by both sweeps (static).
      input_mask: optional booleans broadcastable to `input_gates`; where False the input
        gates count as zero (and get zero gradient). The forward sweep applies it to each
        step's inputs, fused with the gate arithmetic, instead of a pass over all the gates
        before the sweep; the gradient is masked once after the backward sweep.

    Returns:
      (hidden states [T, ..., hidden], final hidden [..., hidden], final cell [..., hidden]).
    """
    (hiddens, final_hidden, final_cell), _ = _forward(
        state_to_gates, state_kernel, input_gates, initial_hidden, initial_cell, unroll, input_mask
    )
    return hiddens, final_hidden, final_cell


def gate_activations(gates: jax.Array) -> jax.Array:
    """sigmoid(o), sigmoid(f), sigmoid(i), tanh(g) of `[..., 4 * hidden]`, as one expression.

    sigmoid(x) = 0.5 tanh(0.5 x) + 0.5, so every gate is `a * tanh(a * x) + 1 - a` with
    a = 0.5 for o, f, i and a = 1 for g: one elementwise pass over all gates instead of four,
    which XLA:CPU fuses into fewer kernels per recurrence step (and tanh ran faster than
    the exp-and-divide sigmoid there). Its derivative, in terms of the output y, is
    `(1 - y) * (y + 2a - 1)`.
    """
    slope = _gate_slope(gates.shape[-1] // NUM_GATES)
    return slope * jnp.tanh(slope * gates) + (1.0 - slope)


def _gate_slope(hidden_dim: int) -> jax.Array:
    """[4 * hidden]: a = 0.5 for o, f, i and 1 for g (see `gate_activations`)."""
    return jnp.repeat(jnp.array([0.5, 0.5, 0.5, 1.0], jnp.float32), hidden_dim)


def _pre_activations(state_to_gates, state_kernel, x, hidden):
    """float32 `x + state_to_gates(kernel, hidden)`, the product in the kernel's dtype."""
    state = state_to_gates(state_kernel, hidden.astype(state_kernel.dtype))
    return x.astype(jnp.float32) + state.astype(jnp.float32)


def _forward(state_to_gates, state_kernel, input_gates, hidden0, cell0, unroll, input_mask):
    """The forward sweep; returns (outputs, residuals for `_backward`)."""
    xs = input_gates if input_mask is None else (input_gates, input_mask)

    def step(carry, x):
        hidden, cell = carry
        if input_mask is not None:
            x, mask = x
            x = jnp.where(mask, x, 0.0)
        acts = gate_activations(_pre_activations(state_to_gates, state_kernel, x, hidden))
        hidden, new_cell = _update_from_activations(acts, cell)
        # The cell that entered the step is what the backward sweep needs for d f.
        return (hidden, new_cell), (hidden, cell, acts)

    (last_hidden, last_cell), (hiddens, prev_cells, acts) = recurrence.run_recurrence(
        step, (hidden0, cell0), xs, unroll
    )
    # A scalar of the input gates' dtype: their gradient is returned in it.
    input_dtype = jnp.zeros((), input_gates.dtype)
    residuals = (state_kernel, hidden0, hiddens, prev_cells, acts, last_cell, input_mask)
    return (hiddens, last_hidden, last_cell), (*residuals, input_dtype)


def _backward(state_to_gates, unroll, residuals, cotangents):
    """Reverse sweep: cotangents of (kernel, input gates, initial hidden, initial cell, mask)."""
    state_kernel, hidden0, hiddens, prev_cells, acts, last_cell, input_mask, input_dtype = residuals
    d_hiddens, d_last_hidden, d_last_cell = cotangents
    slope = _gate_slope(hidden0.shape[-1])
    # The products of the sweep run in the kernel's (compute) dtype, the carries in float32.
    compute = state_kernel.dtype
    transpose_state = jax.linear_transpose(
        functools.partial(state_to_gates, state_kernel), hidden0.astype(compute)
    )

    def step(carry, x):
        # Gradients flowing back from step t + 1, and the cell state step t produced (the
        # cell that entered step t + 1), carried so that it is stored only once.
        d_hidden, d_cell, cell = carry
        d_out, prev_cell, act = x
        d_hidden = d_hidden + d_out
        o, f, i, g = jnp.split(act, NUM_GATES, axis=-1)
        tanh_cell = jnp.tanh(cell)
        d_cell = d_cell + d_hidden * o * (1.0 - tanh_cell**2)
        d_acts = jnp.concatenate(
            [d_hidden * tanh_cell, d_cell * prev_cell, d_cell * g, d_cell * i], axis=-1
        )
        # The derivative of `gate_activations`, from its output (see there).
        d_gates = (d_acts * (1.0 - act) * (act + 2.0 * slope - 1.0)).astype(compute)
        (d_prev_hidden,) = transpose_state(d_gates)
        return (d_prev_hidden.astype(d_hidden.dtype), d_cell * f, prev_cell), d_gates

    xs = (d_hiddens, prev_cells, acts)
    (d_hidden0, d_cell0, _), d_gates = recurrence.run_recurrence(
        step, (d_last_hidden, d_last_cell, last_cell), xs, unroll, reverse=True
    )
    # The kernel gradient needs no recurrence: one product over all steps at once, with the
    # steps folded into the batch axis so that it is a single two-dimensional matmul. This
    # is where the `StateToGates` contract is relied on: `state_to_gates` sees
    # `[T * lead, ...]` and must treat it as T steps' batches.
    prev_hiddens = jnp.concatenate([hidden0[None], hiddens[:-1]]).astype(compute)
    folded = prev_hiddens.reshape(-1, *prev_hiddens.shape[2:])
    _, kernel_vjp = jax.vjp(lambda k: state_to_gates(k, folded), state_kernel)
    (d_kernel,) = kernel_vjp(d_gates.reshape(-1, *d_gates.shape[2:]))
    d_input = d_gates if input_mask is None else jnp.where(input_mask, d_gates, 0.0)
    return d_kernel, d_input.astype(input_dtype.dtype), d_hidden0, d_cell0, None


lstm_sweep.defvjp(_forward, _backward)
