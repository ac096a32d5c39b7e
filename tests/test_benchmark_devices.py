"""`pixel_rnn_jax.device_scaling`: one child process per measurement, tiny model, 2 devices."""

import re

import pytest

from experiments.benchmarks import devices as device_scaling
from experiments.benchmarks import scan as benchmarking

TINY = {
    "num_layers": 1,
    "hidden_dim": 4,
    "output_dim": 8,
    "first_kernel_size": 3,
    "image_size": 8,
    "repeats": 3,
    "warmup": 1,
}


def test_two_host_devices_are_measured_in_child_processes():
    # shard_map and pmap on 2 forced host devices, global batch 4: two child processes.
    lines = []
    result = device_scaling.benchmark_devices(
        [2], [4], device_scaling.METHODS, log=lines.append, timeout_s=300, **TINY
    )
    assert [(r["method"], r["num_devices"]) for r in result] == [("shard_map", 2), ("pmap", 2)]
    for row in result:
        assert "error" not in row, row.get("error")
        assert row["visible_devices"] == 2  # the child was started with 2 host devices
        assert row["platform"] == "cpu"
        assert row["step_s"]["repeats"] == 3
        assert row["step_s"]["min"] <= row["step_s"]["median"] <= row["step_s"]["max"]
        assert row["images_per_s"] == pytest.approx(4 / row["step_s"]["median"])
        assert row["first_step_s"] >= row["step_s"]["min"]  # the first step compiles
        assert row["speedup_vs_1"] == 1.0  # alone in its group
    # The same per-device step under jit(shard_map) and pmap: the same loss.
    shard_map_row, pmap_row = result
    assert shard_map_row["loss"] == pytest.approx(pmap_row["loss"], rel=1e-6)
    assert len(lines) == 2 and "images/s" in lines[0]
    # The rows render in experiments/benchmark.py's Markdown table.
    table = benchmarking.markdown_table(result, device_scaling.COLUMNS)
    lines = table.splitlines()
    assert len(lines) == 2 + len(result)
    assert lines[2].startswith("| row_lstm | 2 | 4 | 2 | shard_map |")


def test_child_environment_sets_the_device_count_before_jax_starts():
    base = {"XLA_FLAGS": "--xla_force_host_platform_device_count=3 --xla_foo=1"}
    env = device_scaling.child_env(device_scaling.Case(8, 16), base)
    assert env["XLA_FLAGS"].split() == ["--xla_foo=1", "--xla_force_host_platform_device_count=8"]
    assert env["JAX_PLATFORMS"] == "cpu"
    real = device_scaling.child_env(device_scaling.Case(1, 16, host_devices=False), base)
    assert real["XLA_FLAGS"] == "--xla_foo=1" and "JAX_PLATFORMS" not in real


def test_a_batch_that_does_not_split_fails_before_starting_a_process():
    with pytest.raises(ValueError, match="batch_size=6 must be a positive multiple of"):
        device_scaling.measure(device_scaling.Case(4, 6))
    with pytest.raises(ValueError, match="method must be one of"):
        device_scaling.measure(device_scaling.Case(1, 4, method="vmap"))


def test_a_failing_child_gives_an_error_row_with_its_reason():
    # Real (not forced) devices: no test machine has 64 of them.
    case = device_scaling.Case(64, 64, host_devices=False, **TINY)
    row = device_scaling.measure(case, timeout_s=300)
    assert re.search(r"64 device\(s\) requested, \d+ \w+ device\(s\) visible", row["error"])
    assert row["num_devices"] == 64 and "images_per_s" not in row
