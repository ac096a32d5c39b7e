"""The estimated time of a compiled program: the compiler's estimates plus the assumed costs
per launch and loop trip, for any executable (the accelerator suite's measured rows too)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from experiments.targets import catalog, devices, estimate, hlo


def scan_of_matmuls(target_name):
    """A 7-step `lax.scan` of [8, 64] x [64, 64] products, lowered for one chip of a target."""
    device = devices.target_devices(catalog.parse(target_name))[0]
    mesh = jax.sharding.Mesh(np.asarray([device]), ("data",))
    spec = jax.ShapeDtypeStruct((8, 64), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))

    def run(x):
        return jax.lax.scan(lambda c, _: (jnp.tanh(c @ c[:, :64].T @ c), None), x, None, 7)[0]

    return jax.jit(run).lower(spec), device


def test_a_tpu_executable_is_estimated_from_its_cycles_plus_the_assumed_costs():
    lowered, device = scan_of_matmuls("v5e-1")
    executable = lowered.compile()
    parts = estimate.executable_estimate(executable, device)
    chip = catalog.chip_for_device_kind(device.device_kind)
    assert chip is catalog.CHIPS["v5e"]
    summary = hlo.summarize(executable.as_text(), platform="tpu", clock_hz=chip.clock_hz)
    assert parts["compiler_s"] == summary.estimated_seconds > 0
    assert (parts["launched_ops"], parts["loop_trips"]) == (summary.launched_ops, 7)
    assert parts["estimated_s"] == pytest.approx(
        summary.estimated_seconds
        + summary.launched_ops * estimate.OVERHEAD_S["tpu"]["launch"]
        + summary.loop_trips * estimate.OVERHEAD_S["tpu"]["trip"]
    )


def test_a_gpu_executable_has_estimates_only_when_compiled_for_them():
    lowered, device = scan_of_matmuls("h100")
    assert estimate.executable_estimate(lowered.compile(), device) is None
    with_stats = lowered.compile(estimate.GPU_COMPILER_OPTIONS)
    assert estimate.executable_estimate(with_stats, device)["estimated_s"] > 0


def test_nothing_is_estimated_on_a_cpu():
    executable = jax.jit(lambda x: x @ x).lower(jnp.ones((4, 4))).compile()
    assert estimate.executable_estimate(executable, jax.devices()[0]) is None
