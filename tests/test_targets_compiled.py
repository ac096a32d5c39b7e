"""One program compiled for a TPU and a GPU target: its report's fields agree with the
program, results are cached by the lowered program, and the largest-batch search brackets."""

import math

import ml_collections
import pytest

from experiments import configs
from experiments.targets import catalog, compiled, devices, programs


def train_step(target_name, per_chip_batch=2, **model):
    config = ml_collections.ConfigDict(configs.get_config("row_lstm_mnist_smoke").to_dict())
    config.model.update(model)
    target = catalog.parse(target_name)
    (program,) = programs.build(
        config, target, devices.target_devices(target), per_chip_batch, which=["train_step"]
    )
    return program, target


@pytest.mark.parametrize("target_name", ["v5e-4", "h100x2"])
def test_a_train_step_report_agrees_with_its_program(target_name, tmp_path):
    program, target = train_step(target_name)
    analysis = compiled.analyse(program, target, 2, cache_dir=tmp_path, hlo_path=tmp_path / "h")
    assert analysis.hlo_loop_trips == analysis.loop_trips == 2 * 28  # forward and backward rows
    assert analysis.unknown_trip_counts == 0
    assert analysis.dependent_steps == 56
    assert analysis.fits and 0 < analysis.peak_bytes < target.memory_bytes
    # The gradients' one all-reduce per step, as large as the parameters (float32).
    (reduce,) = analysis.collectives
    parameters = sum(x.size for x in __import__("jax").tree.leaves(program.args[0].params))
    assert reduce["kind"] == "all-reduce" and reduce["count"] == 1
    assert reduce["bytes"] >= 4 * parameters
    assert analysis.flops > 0 and analysis.launched_ops > 0
    assert analysis.compiler_seconds > 0 and analysis.overhead_seconds > 0
    assert math.isclose(
        analysis.estimated_seconds, analysis.compiler_seconds + analysis.overhead_seconds
    )
    assert analysis.images_per_second_per_chip == pytest.approx(2 / analysis.estimated_seconds)
    assert "HloModule" in (tmp_path / "h").read_text()


def test_results_are_cached_by_the_lowered_program(tmp_path, monkeypatch):
    program, target = train_step("v5e-1")
    first = compiled.analyse(program, target, 2, cache_dir=tmp_path)
    monkeypatch.setattr(compiled, "compile_program", lambda *a: pytest.fail("recompiled"))
    again = compiled.analyse(*train_step("v5e-1"), 2, cache_dir=tmp_path)
    assert again == first
    other, _ = train_step("v5e-1", hidden_dim=8)  # another program: not the cached one
    with pytest.raises(pytest.fail.Exception, match="recompiled"):
        compiled.analyse(other, target, 2, cache_dir=tmp_path)


def test_a_batch_that_does_not_fit_is_a_finding():
    program, target = train_step("v5e-1")
    analysis = compiled.analyse(program, target, 2, usable_fraction=1e-9)
    assert not analysis.fits
    assert analysis.fit_text().startswith("does not fit: needs ")


@pytest.mark.parametrize(
    "peak, truth",
    [
        (lambda n: 1000 + 10 * n, 4900),  # exactly linear
        (lambda n: 1000 + 10 * n + (n // 128) * 500, 3550),  # steps (tile padding)
        (lambda n: 5000 + 3 * n + 200 * math.ceil(n / 8), 1600),
        (lambda n: 40_000 + 1000 * n, 10),
        (lambda n: 10**9, 0),  # not even one image
        (lambda n: 2_000 + 4 * max(n, 128), 12_000),  # flat at small batches (tile padding)
    ],
)
def test_the_largest_batch_is_bracketed_by_compiles(peak, truth):
    tried = []

    def peak_at(n):
        tried.append(n)
        return peak(n)

    found = compiled.largest_batch(peak_at, 50_000)
    assert found.compiles == len(tried) == len(set(tried)) <= 7
    assert found.fits <= truth and peak(max(found.fits, 1)) <= 50_000 or found.fits == 0
    assert found.does_not_fit is not None and peak(found.does_not_fit) > 50_000
    assert found.does_not_fit > truth
    if truth:  # within the search's tolerance, or the bracket says how wide it is
        assert found.fits >= truth * (1 - 1 / 8) or found.text().endswith(
            f"(< {found.does_not_fit})"
        )


def test_what_the_compiler_refuses_is_a_finding_with_its_message(tmp_path):
    program, target = train_step("v5e-1", per_chip_batch=400_000)
    too_big = compiled.analyse(program, target, 400_000, cache_dir=tmp_path)
    assert isinstance(too_big, compiled.CompileFailure) and too_big.out_of_memory
    assert too_big.fit_text().startswith("does not fit: the compiler ran out of memory")
    assert too_big.needed_bytes > target.memory_bytes  # its own figure, which steers the search
    # A v5e slice of 256 chips does not compile a program on one host's 4 chips (the
    # runner's sampler); the finding is cached like any result.
    config = ml_collections.ConfigDict(configs.get_config("row_lstm_mnist_smoke").to_dict())
    pod = catalog.parse("v5e-256")
    (sample,) = programs.build(config, pod, devices.target_devices(pod), 1, which=["sample"])
    refused = compiled.analyse(sample, pod, 1, cache_dir=tmp_path)
    assert isinstance(refused, compiled.CompileFailure) and not refused.out_of_memory
    assert "device assignment should include all slice devices" in refused.message
    assert compiled.analyse(sample, pod, 1, cache_dir=tmp_path) == refused
