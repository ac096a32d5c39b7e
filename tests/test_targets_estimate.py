"""The estimated time of a compiled program: the compiler's estimates plus the assumed costs
per launch and loop trip, for any executable (the accelerator suite's measured rows too)."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from experiments import configs
from experiments.targets import catalog, devices, estimate, hlo, programs


def smoke_train_step(target_name):
    config = ml_collections.ConfigDict(configs.get_config("row_lstm_mnist_smoke").to_dict())
    target = catalog.parse(target_name)
    found = devices.target_devices(target)
    (program,) = programs.build(config, target, found, 1, which=["train_step"])
    return program.fn.lower(*program.args), found[0]


def test_a_tpu_executable_is_estimated_from_its_cycles_plus_the_assumed_costs():
    lowered, device = smoke_train_step("v5e-1")
    executable = lowered.compile()
    parts = estimate.executable_estimate(executable, device)
    chip = catalog.chip_for_device_kind(device.device_kind)
    assert chip is catalog.CHIPS["v5e"]
    summary = hlo.summarize(executable.as_text(), platform="tpu", clock_hz=chip.clock_hz)
    assert parts["compiler_s"] == summary.estimated_seconds > 0
    assert (parts["launched_ops"], parts["loop_trips"]) == (summary.launched_ops, 56)
    assert parts["estimated_s"] == pytest.approx(
        summary.estimated_seconds
        + summary.launched_ops * estimate.OVERHEAD_S["tpu"]["launch"]
        + summary.loop_trips * estimate.OVERHEAD_S["tpu"]["trip"]
    )


def test_a_gpu_executable_has_estimates_only_when_compiled_for_them():
    lowered, device = smoke_train_step("h100")
    assert estimate.executable_estimate(lowered.compile(), device) is None
    with_stats = lowered.compile(estimate.GPU_COMPILER_OPTIONS)
    assert estimate.executable_estimate(with_stats, device)["estimated_s"] > 0


def test_nothing_is_estimated_on_a_cpu():
    executable = jax.jit(lambda x: x @ x).lower(jnp.ones((4, 4))).compile()
    assert estimate.executable_estimate(executable, jax.devices()[0]) is None
