"""`python -m experiments.aot` end to end for a TPU slice and a GPU host, and every refused
input: a one-line error, exit status 1, nothing written."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from experiments.targets import report

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "row_lstm_mnist_smoke"


def aot(*flags, cache=None, python_prefix=None):
    if python_prefix:  # run the module after some set-up code in the same interpreter
        command = [sys.executable, "-c", python_prefix, *flags]
    else:
        command = [sys.executable, "-m", "experiments.aot", *flags]
    if cache is not None:
        command.append(f"--cache_dir={cache}")
    return subprocess.run(command, cwd=REPO, env=dict(os.environ), capture_output=True, text=True)


def test_a_tpu_slice_report_has_every_program(tmp_path):
    out = tmp_path / "report"
    result = aot("--target=v5e-16", f"--config={CONFIG}", "--per_chip_batch=2",
                 f"--output={out}", cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert (report["target"], report["chips"], report["hosts"]) == ("v5e-16", 16, 4)
    assert report["schedule"] == "throughput"  # 'auto' resolved for a TPU and a Row LSTM
    by_name = {p["program"]: p for p in report["programs"]}
    assert sorted(by_name) == ["eval_step", "sample", "train_step"]
    train = by_name["train_step"]
    assert train["images"] == 32 and train["fits"]
    assert train["loop_trips"] == train["hlo_loop_trips"] == 56
    assert train["estimated_seconds"] > 0 and 0 < train["estimated_mfu"] < 1
    assert [c["kind"] for c in train["collectives"]] == ["all-reduce"]
    assert by_name["sample"]["chips"] == 4  # one host's chips
    for name in by_name:
        assert "HloModule" in (out / "hlo" / f"{name}.hlo.txt").read_text()
    assert "| train_step | 2 |" in (out / "report.md").read_text()


def test_several_configs_and_targets_with_the_largest_batch(tmp_path):
    out = tmp_path / "table"
    # v5e-4 starts from the bracket found on v5e-1 (the same chip).
    flags = ["--target=v5e-1,v5e-4", f"--configs={CONFIG},{CONFIG}",
             "--per_chip_batch=max", "--programs=train_step", "--nohlo"]  # fmt: skip
    # A budget of a few MiB per chip: the search ends at small batches (fast compiles).
    result = aot(*flags, "--usable_fraction=0.001", f"--output={out}", cache=tmp_path / "c")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # Twice the same config: the second is read from the cache of compile results.
    assert [(r["config"], r["target"]) for r in summary["runs"]] == [
        (CONFIG, "v5e-1"), (CONFIG, "v5e-4"), (CONFIG, "v5e-1"), (CONFIG, "v5e-4"),
    ]  # fmt: skip
    assert summary["runs"][:2] == summary["runs"][2:]
    first, second = (run["largest_batch"] for run in summary["runs"][:2])
    assert second["compiles"] <= 3 < first["compiles"]  # the hint saved compiles
    for run in summary["runs"]:
        largest = run["largest_batch"]
        (train,) = run["programs"]
        assert train["per_chip_batch"] == largest["fits"] >= 1 and train["fits"]
        assert largest["does_not_fit"] > largest["fits"]  # bracketed by a compile
        assert (out / run["config"] / run["target"] / "report.md").is_file()
    assert "largest per-chip batch" in (out / "summary.md").read_text()
    # --summarise rebuilds the summary from the reports alone (the same config's two runs
    # share one directory per target).
    (out / "summary.json").unlink()
    report.summarise_directory(out)
    again = json.loads((out / "summary.json").read_text())["runs"]
    assert again == summary["runs"][:2]


def test_the_target_list():
    result = aot("--target=list")
    assert result.returncode == 0
    assert "v5e-256: 256 x TPU v5 lite on 64 host(s)" in result.stdout
    assert "h100x16: 16 x NVIDIA H100 80GB HBM3 on 2 host(s)" in result.stdout


_WITHOUT_LIBTPU = (
    "import importlib.util, runpy, sys; find = importlib.util.find_spec; "
    "importlib.util.find_spec = lambda n, *a: None if n == 'libtpu' else find(n, *a); "
    "sys.argv = ['aot', *sys.argv[1:]]; runpy.run_module('experiments.aot', run_name='__main__')"
)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--target=v5e-9", f"--config={CONFIG}"], "Unknown target 'v5e-9'. Did you mean v5e-8"),
        (["--target=v5e-16", f"--config={CONFIG}", "--config.train.batch_size=20"],
         "train.batch_size"),  # 20 images over 16 chips
        (["--target=v5e-8", f"--config={CONFIG}", "--config.model.hiden_dim=8"],
         "Did you mean config.model.hidden_dim"),
        (["--target=v5e-8"], "Give either --config"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, flags, message):
    result = aot(*flags, f"--output={tmp_path / 'out'}")
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_without_the_extra_the_error_names_the_install_command(tmp_path):
    result = aot("--target=v5e-8", f"--config={CONFIG}", f"--output={tmp_path / 'out'}",
                 python_prefix=_WITHOUT_LIBTPU)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert "pip install -e '.[targets]'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
