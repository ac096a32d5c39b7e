"""The benchmark library: timing, memory, FLOP accounting and the result writers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import scan as benchmarking


def test_timing_statistics_of_known_samples():
    timing = benchmarking.Timing.from_samples([0.5, 0.1, 0.3, 0.2, 0.4])
    assert (timing.min, timing.q25, timing.median, timing.q75, timing.max) == pytest.approx(
        (0.1, 0.2, 0.3, 0.4, 0.5)
    )
    assert timing.repeats == 5
    with pytest.raises(ValueError):
        benchmarking.Timing.from_samples([])


def test_time_calls_warms_up_then_times_every_repeat():
    calls = []

    def fn():
        calls.append(1)
        return jnp.ones(3) * len(calls)

    timing = benchmarking.time_calls(fn, repeats=4, warmup=2)
    assert len(calls) == 6
    assert timing.repeats == 4
    assert 0 < timing.min <= timing.q25 <= timing.median <= timing.q75 <= timing.max


def test_compile_timed_and_memory_stats_of_a_trivial_function():
    x = jnp.ones((256,), jnp.float32)
    compiled, seconds = benchmarking.compile_timed(jax.jit(lambda v: v * 2.0), x)
    assert seconds > 0
    np.testing.assert_array_equal(compiled(x), 2.0 * np.ones(256))
    stats = benchmarking.memory_stats(compiled)
    assert stats["argument_bytes"] == 256 * 4
    assert stats["output_bytes"] == 256 * 4
    assert stats["peak_bytes"] >= stats["argument_bytes"]


def test_xla_cost_analysis_counts_a_scan_body_once():
    """Why the benchmark computes FLOPs analytically: XLA ignores the trip count."""
    w, xs = jnp.ones((32, 32)), jnp.ones((8, 4, 32))

    def flops(unroll):
        def run(w, xs):
            step = lambda c, x: (c @ w + x, None)
            return jax.lax.scan(step, xs[0], xs, unroll=unroll)[0]

        return benchmarking.xla_flops(jax.jit(run).lower(w, xs).compile())

    matmul_flops = 8 * 2 * 4 * 32 * 32
    assert flops(True) >= matmul_flops  # fully unrolled: every step is counted
    assert flops(1) < matmul_flops / 4  # a while loop: its body once


def _config(name, **overrides):
    size = benchmarking.SizeSpec("test", 8, 1, 2, 2, 1, 1, 4, 1)
    config = benchmarking.model_config(name, size, 1)
    config.first_kernel_size = 3
    config.update(overrides)
    return config


def test_flop_count_of_a_tiny_row_lstm_matches_a_hand_count():
    # h=2, one layer, 3x3 mask-A first layer, greyscale, output_dim 4.
    # input conv 1->4, mask A: 3 taps above + 1 left = 4 taps x 1 x 4 = 16 MACs
    # input-to-state 1x3 4->8, mask B: left + centre taps = 2 x 4 x 8 = 64 MACs
    # state-to-state 3 x 2 -> 8 = 48; output 1x1 2->4 = 8; skip 1x1 4->4 = 16
    # output stack: 4->4 = 16, 4->1 = 4
    parts = benchmarking.model_flops_per_pixel(_config("row_lstm"))
    assert parts == {
        "input_conv": 2 * 16,
        "body": 2 * (64 + 48 + 8),
        "skips": 2 * 16,
        "output_stack": 2 * (16 + 4),
        "total": 2 * 172,
    }
    assert benchmarking.model_flops_per_image(_config("row_lstm"), 5, 6) == 2 * 172 * 30


def test_flop_count_of_a_tiny_diagonal_bilstm_and_pixelcnn():
    # Diagonal: 2 x (input 1x1 4->8 = 32, state 2x1: 4 -> 8 = 32) + output 8 = 136 MACs.
    assert benchmarking.model_flops_per_pixel(_config("diagonal_bilstm"))["body"] == 2 * 136
    # PixelCNN: 1x1 4->2 = 8, 3x3 mask B 2->2: 5 taps x 4 = 20, 1x1 2->4 = 8.
    assert benchmarking.model_flops_per_pixel(_config("pixelcnn"))["body"] == 2 * 36


def test_flop_count_agrees_with_xla_on_a_loop_free_model():
    """PixelCNN has no loop, so XLA's count (matmuls plus elementwise) bounds ours."""
    size = benchmarking.SizeSpec("test", 8, 1, 2, 16, 2, 2, 32, 2)
    row = benchmarking.benchmark_one("pixelcnn", size, 1, batch_size=2, repeats=1)
    config = benchmarking.model_config("pixelcnn", size, 1)
    analytic = benchmarking.model_flops_per_image(config, 8, 8)
    assert row["model_flops_per_image"] == analytic
    xla_forward = row["xla_train_flops_per_image"] / benchmarking.TRAIN_FLOPS_PER_FORWARD_FLOP
    assert 0.8 * analytic < xla_forward < 2.0 * analytic


def test_markdown_and_json_writers(tmp_path):
    timing = {"median": 0.1, "min": 0.09, "max": 0.12, "q25": 0.095, "q75": 0.11, "repeats": 3}
    row = {
        "model": "row_lstm",
        "size": 28,
        "schedule": "latency",
        "unroll": "4",
        "batch_size": 16,
        "loop_trips": 14,
        "loops": 2,
        "dependent_steps": 28,
        "train_compile_s": 3.25,
        "forward": timing,
        "train": timing,
        "train_images_per_s": 160.0,
        "train_memory": {"peak_bytes": 3 * 2**20},
        "model_flops_per_image": 1.2e8,
        "train_gflops": 57.6,
        "train_fraction_of_peak": 0.384,
    }
    skipped = {"model": "diagonal_bilstm", "size": 64, "unroll": "full", "skipped": "too big"}
    table = benchmarking.markdown_table([row, skipped]).splitlines()
    assert len(table) == 4
    assert table[2].split(" | ")[:5] == ["| row_lstm", "28x28", "latency", "4", "16"]
    assert "| 14 (2) | 28 |" in table[2]
    assert "100.0 (90-120)" in table[2] and "160.0" in table[2] and "38.4%" in table[2]
    assert "too big" in table[3]

    header = {"title": "T", "machine": {"device_kind": "cpu"}, "command": "python -m x"}
    benchmarking.write_json(tmp_path / "r.json", header, [row, skipped])
    benchmarking.write_markdown(tmp_path / "r.md", header, [row, skipped])
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["skipped"] == "too big"
    text = (tmp_path / "r.md").read_text()
    assert "Device kind: **cpu**" in text and "python -m x" in text and "| row_lstm |" in text


def test_unrolled_programs_past_the_cap_are_skipped_with_a_reason():
    size = benchmarking.SIZES[64]
    assert benchmarking.skip_reason("diagonal_bilstm", size, "full", 400).startswith("skipped")
    assert benchmarking.skip_reason("row_lstm", size, "python", 400).startswith("skipped")
    assert benchmarking.skip_reason("row_lstm", size, 8, 400) is None
    assert benchmarking.skip_reason("row_lstm", benchmarking.SIZES[28], "full", 400) is None


def test_markdown_header_names_the_environment_settings_that_change_step_times(tmp_path):
    path = tmp_path / "t.md"
    machine = {"xla_flags": "", "glibc_tunables": "glibc.malloc.hugetlb=1"}
    benchmarking.write_markdown(str(path), {"machine": machine, "title": "T"}, [])
    text = path.read_text()
    assert "- GLIBC_TUNABLES: `glibc.malloc.hugetlb=1`" in text and "XLA_FLAGS" not in text
