"""The targets suite: which rows it compiles, one row per platform compiled for real, and the
fastest estimated setting picked per target, model, size and dtype."""

import math

import pytest

from experiments.benchmarks import targets


def test_the_rows_answer_the_schedule_and_unroll_question_within_reason():
    specs = targets.row_specs()
    recurrent_28 = [s for s in specs if s.size == 28 and s.model == "row_lstm"]
    assert {(s.schedule, s.unroll) for s in recurrent_28 if s.dtype == "float32"} == {
        (schedule, unroll)
        for schedule in ("throughput", "latency")
        for unroll in (1, 2, 4, 8, "full")
    }
    # 'full' only where it compiles in reason; bfloat16 at unroll 1; PixelCNN has no loop.
    assert {(s.model, s.size) for s in specs if s.unroll == "full"} == {("row_lstm", 28)}
    assert {s.unroll for s in specs if s.dtype == "bfloat16"} == {1}
    assert {(s.schedule, s.unroll) for s in specs if s.model == "pixelcnn"} == {("throughput", 1)}
    assert len(specs) == len(set(specs))


# One TPU row (the GPU compile of this paper-sized step takes half a minute; the GPU path of
# `compiled.analyse` is covered on the smoke config in test_targets_compiled.py).
@pytest.mark.parametrize("target_name", ["v5e-1"])
def test_a_row_is_the_runners_train_step_compiled_for_the_target(target_name, tmp_path):
    spec = targets.RowSpec("row_lstm", 28, "latency", 2, "float32")
    row = targets.run_row(spec, targets.catalog.parse(target_name), per_chip_batch=1,
                          cache_dir=tmp_path)  # fmt: skip
    assert row["target"] == target_name and row["unroll"] == "2"
    assert row["loop_trips"] == row["hlo_loop_trips"] == 2 * 28 // 2  # 7 layers in one loop
    assert row["dependent_steps"] == 2 * 28
    assert row["peak_bytes"] > 0 and row["fits"]
    assert math.isfinite(row["estimated_seconds"]) and row["estimated_seconds"] > 0
    cells = [cell(row) for _, cell in targets.COLUMNS]
    assert cells[:6] == [target_name, "row_lstm", "28x28", "latency", "2", "float32"]


def test_the_fastest_estimate_is_picked_per_target_model_size_and_dtype():
    def row(schedule, unroll, seconds, dtype="float32"):
        return {"target": "v5e-8", "model": "row_lstm", "size": 28, "dtype": dtype,
                "schedule": schedule, "unroll": unroll, "estimated_seconds": seconds}  # fmt: skip

    rows = [row("throughput", "1", 3e-3), row("latency", "8", 1e-3), row("latency", "1", 2e-3),
            row("latency", "1", 5e-3, "bfloat16"), row("latency", "2", math.nan)]  # fmt: skip
    assert targets.best_rows(rows) == {
        "v5e-8 row_lstm 28 float32": "latency unroll=8 (1.00 ms)",
        "v5e-8 row_lstm 28 bfloat16": "latency unroll=1 (5.00 ms)",
    }
