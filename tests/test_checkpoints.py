"""Checkpoint retention (last N + best), corrupt/unfinished checkpoints, and resume."""

import json
import logging
import os
import pathlib
import shutil

import jax
import jax.numpy as jnp
import mutations
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pixel_rnn_jax import checkpoints


def _state(value: float):
    return {"step": jnp.int32(value), "w": jnp.full((3, 4), value, jnp.float32)}


def _abstract():
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _state(0))


def _save_steps(workdir, steps, nll=None, keep_last=2):
    manager = checkpoints.CheckpointManager(str(workdir), keep_last=keep_last)
    for step in steps:
        metrics = {"eval/nll": nll[step]} if nll and step in nll else None
        manager.save(step, _state(step), {"next_batch": step}, metrics=metrics)
    manager.wait_until_finished()
    return manager


def test_round_trip_with_data_state(tmp_path):
    manager = _save_steps(tmp_path, [3])
    restored = manager.restore_latest(_abstract())
    manager.close()
    assert restored.step == 3
    assert restored.data_state == {"next_batch": 3}
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 4), 3.0))
    assert restored.skipped_steps == ()


def test_relative_workdir_round_trips(tmp_path, monkeypatch):
    # The runner's default workdir is relative (./workdirs/<config>); Orbax restores only
    # from absolute paths.
    monkeypatch.chdir(tmp_path)
    manager = _save_steps("workdirs/run", [5])
    restored = manager.restore_latest(_abstract())
    manager.close()
    assert restored.step == 5
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 4), 5.0))


def test_no_checkpoint_returns_none(tmp_path):
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=2)
    assert manager.restore_latest(_abstract()) is None
    manager.close()


def test_keeps_last_n_plus_best(tmp_path):
    # The best (lowest NLL) is old; the newest has a bad NLL: both must survive.
    nll = {2: 90.0, 4: 80.0, 6: 85.0, 8: 95.0}
    manager = _save_steps(tmp_path, range(1, 9), nll=nll, keep_last=2)
    assert manager.all_steps() == [4, 7, 8]
    assert manager.best_step() == 4
    assert manager.latest_step() == 8
    restored = manager.restore_latest(_abstract(), which="best")
    assert restored.step == 4
    manager.close()


def test_latest_that_is_also_best_is_kept_once(tmp_path):
    manager = _save_steps(tmp_path, [1, 2, 3], nll={1: 90.0, 3: 70.0}, keep_last=2)
    assert manager.all_steps() == [2, 3]
    assert manager.best_step() == 3
    manager.close()


def test_best_step_is_none_without_metrics(tmp_path):
    manager = _save_steps(tmp_path, [1, 2])
    assert manager.best_step() is None
    assert manager.restore_latest(_abstract(), which="best").step == 2  # falls back to latest
    manager.close()


def _corrupt(step_dir: pathlib.Path):
    """Truncates every file of the saved train state (what a disk-full copy leaves)."""
    for path in (step_dir / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0")


def test_corrupt_latest_resumes_from_newest_good_one(tmp_path, caplog):
    _save_steps(tmp_path, [1, 2, 3], keep_last=3).close()
    _corrupt(tmp_path / "checkpoints" / "3")
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3)
    with caplog.at_level(logging.WARNING):
        restored = manager.restore_latest(_abstract())
    assert restored.step == 2
    assert restored.skipped_steps == (3,)
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 4), 2.0))
    assert "Checkpoint at step 3" in caplog.text and "cannot be restored" in caplog.text
    assert "Resumed from step 2" in caplog.text
    # Good checkpoints stay; the bad one is moved aside, not deleted.
    assert manager.all_steps() == [1, 2]
    moved = os.listdir(tmp_path / checkpoints.QUARANTINE_SUBDIR)
    assert len(moved) == 1 and moved[0].startswith("3-")
    # The resumed run can save step 3 again.
    assert manager.save(3, _state(30), {"next_batch": 30})
    manager.wait_until_finished()
    assert manager.restore_latest(_abstract()).data_state == {"next_batch": 30}
    manager.close()


def test_missing_item_counts_as_corrupt(tmp_path, caplog):
    _save_steps(tmp_path, [1, 2], keep_last=3).close()
    shutil.rmtree(tmp_path / "checkpoints" / "2" / "data")
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3)
    with caplog.at_level(logging.ERROR):
        assert manager.restore_latest(_abstract()).step == 1
    assert "step 2" in caplog.text
    manager.close()


def test_unfinished_save_is_reported_and_ignored(tmp_path, caplog):
    _save_steps(tmp_path, [1, 2], keep_last=3).close()
    # What a process killed during an Orbax save leaves behind.
    shutil.copytree(
        tmp_path / "checkpoints" / "2", tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-9"
    )
    with caplog.at_level(logging.WARNING):
        manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3)
    assert "unfinished checkpoint save" in caplog.text
    assert manager.restore_latest(_abstract()).step == 2
    manager.close()
    # Moved aside, never deleted (Orbax's own clean-up would delete it).
    assert not (tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-9").exists()
    moved = os.listdir(tmp_path / checkpoints.QUARANTINE_SUBDIR)
    assert len(moved) == 1 and moved[0].startswith("3.orbax-checkpoint-tmp-9-")


def test_all_corrupt_raises_and_moves_nothing(tmp_path):
    _save_steps(tmp_path, [1, 2], keep_last=3).close()
    for step in (1, 2):
        _corrupt(tmp_path / "checkpoints" / str(step))
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3)
    with pytest.raises(checkpoints.CheckpointError, match="None of the checkpoints"):
        manager.restore_latest(_abstract())
    assert manager.all_steps() == [1, 2]
    assert not (tmp_path / checkpoints.QUARANTINE_SUBDIR).exists()
    manager.close()


def test_read_only_changes_nothing(tmp_path):
    _save_steps(tmp_path, [1, 2], keep_last=3).close()
    _corrupt(tmp_path / "checkpoints" / "2")
    unfinished = tmp_path / "checkpoints" / "3.orbax-checkpoint-tmp-9"
    unfinished.mkdir()
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3, read_only=True)
    assert manager.restore_latest(_abstract()).step == 1
    manager.close()
    assert (tmp_path / "checkpoints" / "2").exists()
    assert unfinished.exists()
    assert not (tmp_path / checkpoints.QUARANTINE_SUBDIR).exists()


def test_existing_step_is_not_overwritten(tmp_path):
    manager = _save_steps(tmp_path, [1], keep_last=3)
    assert not manager.save(1, _state(99), {"next_batch": 99})
    manager.wait_until_finished()
    assert manager.restore_latest(_abstract()).data_state == {"next_batch": 1}
    manager.close()


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="keep_checkpoints"):
        checkpoints.CheckpointManager(str(tmp_path), keep_last=0)


def test_data_states_are_picked_by_process_index():
    tagged = [{"process_index": 1, "state": "b"}, {"process_index": 0, "state": "a"}]
    assert checkpoints._own_data_state(tagged, step=5) == "a"  # this test is process 0
    with pytest.raises(ValueError, match="0 data-iterator states for process 0"):
        checkpoints._own_data_state([{"process_index": 1, "state": "b"}], step=5)
    # Checkpoints written before the entries were tagged: by gather (process) order.
    assert checkpoints._own_data_state([{"next_batch": 3}], step=5) == {"next_batch": 3}


@pytest.mark.parametrize("garbage", [b"\x88\xd6\xff random bytes \x00\x9c", b""])
def test_unreadable_metrics_of_the_newest_checkpoint_do_not_stop_the_next_run(
    tmp_path, garbage, caplog
):
    # Issue 16: random bytes in the newest checkpoint's metrics/metrics file made every later
    # run die in Orbax's CheckpointManager (listing the steps) with a UnicodeDecodeError.
    _save_steps(tmp_path, [1, 2, 3], nll={1: 90.0, 2: 80.0, 3: 70.0}, keep_last=3).close()
    metrics_file = tmp_path / "checkpoints" / "3" / "metrics" / "metrics"
    metrics_file.write_bytes(garbage)
    with caplog.at_level(logging.WARNING):
        manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3)
    restored = manager.restore_latest(_abstract())
    # Decision: unreadable metrics mean "no metrics"; the intact state is still resumed from.
    assert restored.step == 3 and restored.skipped_steps == ()
    np.testing.assert_array_equal(restored.state["w"], np.full((3, 4), 3.0))
    assert manager.metrics(3) is None
    assert manager.best_step() == 2  # the best among the readable ones
    # The bad item was moved aside (not deleted), with a message saying what and where.
    moved = list((tmp_path / checkpoints.QUARANTINE_SUBDIR).iterdir())
    assert [p.name.split("-")[:2] for p in moved] == [["3", "metrics"]]
    assert (moved[0] / "metrics").read_bytes() == garbage
    assert "unreadable metrics of checkpoint 3" in caplog.text and str(moved[0]) in caplog.text
    manager.close()


def test_read_only_manager_reads_unreadable_metrics_as_none_and_moves_nothing(tmp_path):
    # Evaluation next to a live run may not move anything: Orbax must still list the steps.
    _save_steps(tmp_path, [1, 2], nll={1: 90.0, 2: 80.0}, keep_last=3).close()
    (tmp_path / "checkpoints" / "2" / "metrics" / "metrics").write_bytes(b"\xff\xfe\x00")
    manager = checkpoints.CheckpointManager(str(tmp_path), keep_last=3, read_only=True)
    assert manager.all_steps() == [1, 2]
    assert manager.metrics(2) is None and manager.best_step() == 1
    assert manager.restore_latest(_abstract(), which="best").step == 1
    manager.close()
    assert (tmp_path / "checkpoints" / "2" / "metrics" / "metrics").exists()
    assert not (tmp_path / checkpoints.QUARANTINE_SUBDIR).exists()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"[" * 20_000, "RecursionError"),
        (b" " * (checkpoints.MAX_METRICS_BYTES + 1), "more than"),
        (b'{"eval/nll": "x"}', "not a number"),
    ],
)
def test_metrics_files_are_bounded_and_never_raise(tmp_path, content, reason):
    path = tmp_path / "metrics"
    path.write_bytes(content)
    metrics, problem = checkpoints.read_metrics_file(pathlib.Path(path))
    assert metrics is None and reason in problem


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_damaged_metrics_file_reads_as_metrics_or_a_reason(tmp_path_factory, data):
    real = json.dumps({checkpoints.BEST_METRIC: 2.75, "eval/bits_per_dim": 2.75}).encode()
    path = tmp_path_factory.mktemp("metrics") / "metrics"
    path.write_bytes(data.draw(mutations.mutated(real), label="metrics"))
    metrics, problem = checkpoints.read_metrics_file(path)
    assert (metrics is None) != (problem is None)
    if metrics is not None:
        assert checkpoints.metrics_problem(metrics) is None
