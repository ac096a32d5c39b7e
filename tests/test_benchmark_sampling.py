"""The sampling benchmark's rows, on a tiny model (the real run is in WORKSPACE_NOTES.md)."""

import pytest

from experiments.benchmarks import sampling as sampling_benchmark
from experiments.benchmarks.sampling import SamplingCase

TINY = {"num_layers": 1, "hidden_dim": 4, "output_dim": 4}


def test_rows_time_both_methods_and_compare_them():
    cases = [SamplingCase("row_lstm", m, 3, 4, 1, 2, 2) for m in ("naive", "cached")]
    messages = []
    rows = sampling_benchmark.benchmark_sampling(
        cases=cases,
        repeats=2,
        model_overrides=TINY,
        log=lambda *args: messages.append(args),
        naive_full_budget_s=60.0,
    )
    assert [r["method"] for r in rows] == ["naive", "cached"]
    assert all(list(r) == list(rows[0]) for r in rows)  # one set of columns
    for row in rows:
        assert row["image"] == "3x4x1" and row["batch"] == 2 and row["repeats"] == 2
        assert row["compile_s"] > 0 and row["time_s"] > 0
        assert row["timed"] == "full"
        assert row["samples_per_s"] == pytest.approx(2 / row["time_s"], rel=1e-3)
        assert row["pixels_per_s"] == pytest.approx(2 * 12 / row["time_s"], rel=1e-3)
    assert rows[0]["speedup"] == "" and rows[1]["speedup"].endswith("x")
    assert len(messages) == 4


def test_slow_naive_rows_are_extrapolated_from_the_last_positions_and_say_so():
    case = SamplingCase("pixelcnn", "naive", 2, 3, 3, 256, 1)
    row = sampling_benchmark.benchmark_case(
        case, repeats=1, naive_positions=5, naive_full_budget_s=0.0, model_overrides=TINY
    )
    assert row["timed"] == "last 5 of 18 positions, x3.6"
    assert row["time_s"] > 0


def test_default_cases_cover_the_issues_table():
    cases = sampling_benchmark.default_cases()
    keys = {(c.model, c.method, c.height, c.channels, c.levels, c.batch) for c in cases}
    for model in sampling_benchmark.MODEL_NAMES:
        for method in ("naive", "cached"):
            for size, channels, levels in ((28, 1, 2), (32, 3, 256)):
                for batch in (1, 64):
                    assert (model, method, size, channels, levels, batch) in keys
        for size in (16, 32, 64):
            assert (model, "cached", size, 1, 2, 64) in keys
    quick = sampling_benchmark.default_cases(quick=True)
    assert {c.height for c in quick} == {28}
