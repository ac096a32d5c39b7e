"""`pixel_rnn_jax.profiling`: self times from nested trace events, and a real CPU trace."""

import pathlib
import subprocess
import sys

import pytest

from experiments.benchmarks import profiling


def test_self_time_takes_nested_events_off_their_innermost_parent():
    thread_a = [
        ("while.1", 0, 100),
        ("fusion.1", 10, 20),  # inside the loop
        ("dot.2", 15, 5),  # inside fusion.1 (as a loop body's kernel would be)
        ("fusion.1", 40, 20),
        ("copy.3", 200, 7),
    ]
    thread_b = [("fusion.1", 0, 30)]
    ops = {op.name: op for op in profiling.self_times([thread_a, thread_b])}
    assert ops["while.1"].self_ns == 100 - 20 - 20
    assert ops["fusion.1"].self_ns == 20 - 5 + 20 + 30 and ops["fusion.1"].count == 3
    assert ops["dot.2"].self_ns == 5 and ops["copy.3"].self_ns == 7
    assert ops["fusion.1"].kind == "fusion"


def test_scope_folds_layer_numbers_and_tells_backward_from_forward():
    forward = "jit(step)/jvp(PixelRNN)/PixelRNN.logits_from_inputs/row_lstm_3/RowLSTMLayer_3/add"
    backward = "jit(step)/transpose(jvp(PixelRNN))/PixelRNN.logits_from_inputs/skip_12/dot_general"
    assert profiling.scope_of(forward) == ("forward", "row_lstm_N/RowLSTMLayer_N/add")
    assert profiling.scope_of(backward) == ("backward", "skip_N/dot_general")


def test_summary_puts_ops_run_more_than_once_per_call_inside_loops():
    ops = [
        profiling.OpTime("fusion.1", 6_000_000, 2 * 10),  # 10 loop steps per call
        profiling.OpTime("dot.1", 4_000_000, 2),
        profiling.OpTime("while.1", 1_000_000, 2),
    ]
    summary = profiling.summarize(ops, calls=2, scopes={"dot.1": "jit(step)/jvp(M)/skip_0/dot"})
    assert summary["in_loop_ms"] == pytest.approx(3.0)
    assert summary["outside_loop_ms"] == pytest.approx(2.0)
    assert summary["runtime_overhead_ms"] == pytest.approx(0.5)
    assert summary["total_ms"] == pytest.approx(5.5)
    assert dict(summary["by_scope"])["forward skip_N/dot"] == pytest.approx(2.0)


def test_profiles_a_real_train_step():
    summary = profiling.profile_train_step("row_lstm", image_size=8, calls=2)
    assert summary["in_loop_ms"] > 0  # the row recurrence's body kernels
    assert summary["outside_loop_ms"] > 0
    scopes = " ".join(label for label, _ in summary["by_scope"])
    assert "row_lstm_N/layer" in scopes and "backward" in scopes
    table = profiling.format_summary(summary)
    assert table.startswith("## row_lstm 8x8, batch 2") and "| operation kind | ms |" in table


def test_cli_writes_the_tables_and_refuses_unknown_models(tmp_path):
    repo = pathlib.Path(__file__).resolve().parents[1]
    output = tmp_path / "profile.md"
    command = [sys.executable, "-m", "experiments.profile_step", "--size=8", "--calls=1"]
    result = subprocess.run(
        [*command, "--models=pixelcnn", f"--output={output}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = output.read_text()
    assert text.startswith("# Train-step profiles") and "## pixelcnn 8x8, batch 2" in text
    refused = subprocess.run([*command, "--models=gru"], cwd=repo, capture_output=True, text=True)
    assert refused.returncode != 0 and "Unknown models ['gru']" in refused.stderr


def test_summary_splits_time_by_direction_and_ranks_the_backward_kinds():
    ops = [
        profiling.OpTime("dot.1", 4_000_000, 2),
        profiling.OpTime("dot.2", 6_000_000, 2),
        profiling.OpTime("copy.3", 2_000_000, 2),
    ]
    scopes = {
        "dot.1": "jit(step)/jvp(M)/skip_0/dot",
        "dot.2": "jit(step)/transpose(jvp(M))/skip_0/dot",
        "copy.3": "jit(step)/transpose(jvp(M))/row_lstm_0/layer/copy",
    }
    summary = profiling.summarize(ops, calls=2, scopes=scopes)
    assert dict(summary["by_direction"]) == pytest.approx({"forward": 2.0, "backward": 4.0})
    assert summary["backward_by_kind"] == [
        ("dot", pytest.approx(3.0)),
        ("copy", pytest.approx(1.0)),
    ]
    table = profiling.format_summary({**summary, "model": "m", "image_size": 8, "batch_size": 2})
    assert "| operation kind, backward pass only | ms |" in table and "| dot | 3.00 |" in table
