"""The recurrence driver: every unroll setting computes the same function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pixel_rnn_jax.nn import recurrence


def step(carry, x):
    carry = jnp.tanh(carry * 0.9 + x)
    return carry, carry.sum(-1)


@pytest.mark.parametrize("unroll", [1, 2, 3, 7, "full", "python", "4"])
def test_all_settings_match_a_reference_loop(unroll):
    xs = jax.random.normal(jax.random.PRNGKey(0), (7, 2, 3))
    carry, ys = recurrence.run_recurrence(step, jnp.zeros((2, 3)), xs, unroll)
    ref_carry, ref_ys = np.zeros((2, 3)), []
    for x in np.asarray(xs):
        ref_carry = np.tanh(ref_carry * 0.9 + x)
        ref_ys.append(ref_carry.sum(-1))
    np.testing.assert_allclose(carry, ref_carry, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ys, np.stack(ref_ys), rtol=1e-5, atol=1e-6)


def test_pytree_carries_and_outputs_in_the_python_loop():
    xs = {"a": jnp.arange(4.0), "b": jnp.ones((4, 2))}
    carry, ys = recurrence.run_recurrence(
        lambda c, x: (c + x["a"], (x["b"] * c, c)), jnp.array(0.0), xs, "python"
    )
    assert float(carry) == 6.0
    assert ys[0].shape == (4, 2) and ys[1].shape == (4,)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "fast", True, None])
def test_bad_unroll_settings(bad):
    with pytest.raises(ValueError, match="unroll must be"):
        recurrence.parse_unroll(bad)


def test_auto_schedule_per_backend_and_model_kind():
    for kind in ("row_lstm", "diagonal_bilstm", None):
        assert recurrence.resolve_schedule("auto", "cpu", kind) == "throughput"
    assert recurrence.resolve_schedule("auto", "tpu", "row_lstm") == "throughput"
    assert recurrence.resolve_schedule("auto", "gpu", "diagonal_bilstm") == "latency"
    # On a TPU the Diagonal BiLSTM's choice turns on its width h.
    assert recurrence.resolve_schedule("auto", "tpu", "diagonal_bilstm", 64) == "latency"
    assert recurrence.resolve_schedule("auto", "tpu", "diagonal_bilstm", 128) == "throughput"
    with pytest.raises(ValueError, match="pass hidden_dim"):
        recurrence.resolve_schedule("auto", "tpu", "diagonal_bilstm")
    assert recurrence.resolve_schedule("auto", "cuda", "row_lstm") == (
        recurrence.resolve_schedule("auto", "gpu", "row_lstm")
    )
    assert recurrence.resolve_schedule("auto", "some_new_backend", "row_lstm") == "throughput"
    assert recurrence.resolve_schedule("auto") == recurrence.resolve_schedule(
        "auto", jax.default_backend()
    )
    for schedule in recurrence.SCHEDULES:
        assert recurrence.resolve_schedule(schedule, "gpu") == schedule
    with pytest.raises(ValueError, match="model.schedule must be"):
        recurrence.resolve_schedule("fast")
