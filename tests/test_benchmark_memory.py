"""The memory plan's columns from a target compile: one chip of a TPU and a GPU target."""

import ml_collections
import pytest

from experiments import configs
from experiments.benchmarks import memory


@pytest.mark.parametrize("target", ["h100"])  # a TPU target's plan: test_aot_cli's searches
def test_a_target_plan_fits_the_targets_own_train_step(target, tmp_path):
    config = ml_collections.ConfigDict(configs.get_config("row_lstm_mnist_smoke").to_dict())
    plan = memory.target_plan(config, "float32", False, target, batches=(8, 16), cache_dir=tmp_path)
    assert plan["target"] == target and plan["schedule"] == "throughput"  # 'auto' there
    assert plan["per_image_bytes"] > 0  # (the fitted "fixed" part may come out below 0)
    usable = memory.USABLE_FRACTION * plan["memory_bytes"]
    expected = int((usable - plan["fixed_bytes"]) // plan["per_image_bytes"])
    assert plan["largest_batch"] == expected > 16
    row = {"config": "c", "image": "28x28x1", "dtype": "float32", "remat": False,
           "fixed_bytes": 2**20, "per_image_bytes": 2**19, "largest_batch": {"16": 1},
           "compile_s": 1.0, "targets": {target: plan}}  # fmt: skip
    table = memory.markdown([row], capacities_gb=[16], targets=[target])
    assert f"| {target}: batch |" in table.splitlines()[0]
    assert table.splitlines()[-1].endswith(f"| {plan['largest_batch']:,} (throughput) |")


def test_the_linear_fit_passes_through_both_points_and_refuses_bad_batches():
    fixed, per_image = memory.linear_fit((8, 16), (1000.0, 1800.0))
    assert (fixed, per_image) == (200.0, 100.0)
    assert memory.largest_batch(fixed, per_image, 1e-6, 1.0) == 8  # (1000 - 200) // 100
    with pytest.raises(ValueError, match="two increasing positive sizes"):
        memory.linear_fit((16, 8), (1.0, 2.0))
