"""Data parallelism: the 8-device train/eval steps equal the 1-device ones on the same batch.

JAX fixes its device count when it is first imported, and the other tests need the default
single CPU device, so the 8-device checks run in a subprocess (this file run as a script)
with XLA_FLAGS=--xla_force_host_platform_device_count=8.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from pixel_rnn_jax import parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_DEVICES = 8


def _run_checks() -> dict:
    """Runs in the 8-device subprocess; returns the measured differences as a dict."""
    import functools

    import jax
    import numpy as np
    import optax

    from experiments import configs
    from pixel_rnn_jax import data, models, parallel, train

    assert jax.device_count() == NUM_DEVICES, jax.devices()
    config = configs.get_config("row_lstm_mnist_smoke")
    model = models.build_model(config.model)
    tx = train.make_optimizer(config.train)
    image_shape = (8, 8, 1)
    init = functools.partial(train.init_train_state, model=model, tx=tx, image_shape=image_shape)
    host_state = jax.device_get(jax.jit(init)(jax.random.PRNGKey(0)))
    rng = np.random.default_rng(0)
    batches = [{"image": rng.integers(0, 2, (NUM_DEVICES, *image_shape))} for _ in range(2)]
    key = jax.random.PRNGKey(1)

    def run(mesh):
        step = train.make_train_step(model, tx, 2, mesh)
        state, losses, grad_norms = parallel.replicate(host_state, mesh), [], []
        for batch in batches:
            state, metrics = step(state, parallel.shard_batch(batch, mesh), key)
            losses.append(float(metrics["loss"]))
            grad_norms.append(float(metrics["grad_norm"]))
        return jax.device_get(state.params), losses, grad_norms

    mesh1 = parallel.make_mesh(jax.devices()[:1])
    mesh8 = parallel.make_mesh()
    params1, losses1, norms1 = run(mesh1)
    params8, losses8, norms8 = run(mesh8)

    # Reference without shard_map: plain autodiff of the global-batch mean NLL.
    def loss_fn(params, images):
        nll = train.nll_per_image(params, images, model=model, num_levels=2)
        return nll.mean()

    params, opt_state, ref_norms = host_state.params, host_state.opt_state, []
    for batch in batches:
        grads = jax.jit(jax.grad(loss_fn))(params, batch["image"])
        ref_norms.append(float(optax.tree.norm(grads)))
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)

    def max_diff(a, b):
        return max(
            float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
            for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
        )

    # Eval: 8 devices with some padded (masked) rows sum the same NLL as 1 device.
    eval_batch = {
        "image": rng.integers(0, 2, (NUM_DEVICES, *image_shape)),
        "mask": np.arange(NUM_DEVICES) < 5,
    }
    evals = []
    for mesh in (mesh1, mesh8):
        out = train.make_eval_step(model, 2, mesh)(
            parallel.replicate(params1, mesh), parallel.shard_batch(eval_batch, mesh)
        )
        evals.append({k: float(v) for k, v in jax.device_get(out).items()})

    try:
        data.check_global_batch(12, mesh8.devices.size, 1, what="train.batch_size")
        batch_error = ""
    except ValueError as error:
        batch_error = str(error)
    return {
        "params_1_vs_8": max_diff(params1, params8),
        "params_1_vs_reference": max_diff(params1, params),
        "param_scale": max(float(np.max(np.abs(x))) for x in jax.tree.leaves(params1)),
        "losses": [losses1, losses8],
        "grad_norms": [norms1, norms8, ref_norms],
        "evals": evals,
        "batch_error": batch_error,
        "num_devices": jax.device_count(),
    }


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={NUM_DEVICES}"
    )
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, __file__],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runs_on_eight_devices(results):
    assert results["num_devices"] == NUM_DEVICES


def test_gradients_are_averaged_not_summed(results):
    norms1, norms8, reference = results["grad_norms"]
    # A pmean of already-summed gradients (the check_vma pitfall) would give 8x.
    for a, b, c in zip(norms1, norms8, reference, strict=True):
        assert a == pytest.approx(c, rel=1e-4)
        assert b == pytest.approx(c, rel=1e-4)


def test_one_and_eight_devices_train_to_the_same_parameters(results):
    assert results["params_1_vs_reference"] <= 1e-5 * max(1.0, results["param_scale"])
    assert results["params_1_vs_8"] <= 1e-5 * max(1.0, results["param_scale"])
    losses1, losses8 = results["losses"]
    assert losses1 == pytest.approx(losses8, rel=1e-5)


def test_eval_sums_only_real_images_on_any_device_count(results):
    one, eight = results["evals"]
    assert one["count"] == eight["count"] == 5
    assert one["nll_sum"] == pytest.approx(eight["nll_sum"], rel=1e-5)


def test_batch_not_divisible_by_devices_is_a_clear_error(results):
    assert "train.batch_size=12" in results["batch_error"]
    assert "multiple of 8" in results["batch_error"]
    assert "(nearest: 8 or 16)" in results["batch_error"]


# --- Multi-process setup checks that need no second process (tests/test_multiprocess.py
# runs the real two-process cases).


def test_coordinator_address_must_be_host_and_port():
    assert parallel.split_address("10.0.0.1:1234") == ("10.0.0.1", 1234)
    assert parallel.split_address("[::1]:80") == ("::1", 80)
    for bad in ("10.0.0.1", "host:", ":1234", "host:http", "host:70000"):
        with pytest.raises(parallel.DistributedSetupError, match="is not HOST:PORT"):
            parallel.split_address(bad)


def test_waiting_for_a_coordinator_nobody_serves_ends_with_what_to_check():
    with socket.socket() as s:  # a port that was free a moment ago; nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(parallel.DistributedSetupError) as error:
        parallel.wait_for_coordinator(f"127.0.0.1:{port}", timeout_s=1.0, process_id=3)
    assert time.monotonic() - start < 5
    message = str(error.value)
    assert f"Process 3 could not reach the JAX coordinator at 127.0.0.1:{port} within 1 s" in (
        message
    )
    assert "Check that process 0 is running" in message and "--distributed_timeout" in message


def test_waiting_for_a_listening_coordinator_returns():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert parallel.wait_for_coordinator(address, timeout_s=5.0) < 5


def test_bad_distributed_settings_fail_before_jax_is_touched(monkeypatch):
    parallel.maybe_initialize_distributed(False, "nonsense")  # not enabled: nothing happens
    with pytest.raises(parallel.DistributedSetupError, match=r"process_id=2 must be in \[0, "):
        parallel.maybe_initialize_distributed(True, "127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(parallel.DistributedSetupError, match="JAX_NUM_PROCESSES='two'"):
        parallel.maybe_initialize_distributed(True, "127.0.0.1:1234", process_id=1)
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    with pytest.raises(parallel.DistributedSetupError, match="is not HOST:PORT"):
        parallel.maybe_initialize_distributed(True, "127.0.0.1", 2, 1)


if __name__ == "__main__":
    print(json.dumps(_run_checks()))


def test_cpu_programs_get_their_compiler_options_and_keep_their_numbers(monkeypatch):
    """The runner's CPU options (LLVM -O1) reach the jitted step and change no result."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from pixel_rnn_jax.nn import lstm_cell
    from pixel_rnn_jax.nn.lstm_cell import NUM_GATES

    assert parallel.compiler_options("cpu") == {"xla_backend_optimization_level": 1}
    assert parallel.compiler_options("gpu") is None and parallel.compiler_options("tpu") is None

    def state_to_gates(kernel, hidden):
        return hidden @ kernel

    def loss_and_grad(kernel, gates):
        def loss(kernel, gates):
            hidden = lstm_cell.lstm_recurrence(state_to_gates, kernel, gates)
            return jnp.sum(jnp.tanh(hidden) ** 2)

        return jax.value_and_grad(loss, argnums=(0, 1))(kernel, gates)

    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.normal(size=(8, NUM_GATES * 8)), jnp.float32)
    gates = jnp.asarray(rng.normal(size=(12, 4, NUM_GATES * 8)), jnp.float32)
    mesh = parallel.make_mesh(jax.devices()[:1])
    jit_options = []
    real_jit = jax.jit

    def recording_jit(fn, **kwargs):
        jit_options.append(kwargs.get("compiler_options"))
        return real_jit(fn, **kwargs)

    monkeypatch.setattr(jax, "jit", recording_jit)
    stepped = parallel.data_parallel(
        loss_and_grad, mesh, in_specs=(P(), P(None, parallel.DATA_AXIS)), out_specs=P()
    )
    monkeypatch.undo()
    assert jit_options == [{"xla_backend_optimization_level": 1}]
    (value, grads), (plain_value, plain_grads) = (
        stepped(kernel, gates),
        jax.jit(loss_and_grad)(kernel, gates),
    )
    np.testing.assert_allclose(value, plain_value, rtol=1e-6)
    for got, want in zip(grads, plain_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
