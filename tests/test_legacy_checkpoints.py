"""Checkpoints written before the package redesign still restore and evaluate to the same NLL.

`fixtures/legacy_checkpoints/` holds tiny 2-step checkpoints written by the flat-layout code
(commit fb0bd2d) and the test NLL each evaluated to then. The parameter tree is part of the
checkpoint format: renaming a submodule would break every user's saved runs, and this test.
"""

import json
import pathlib
import shutil

import pytest

from experiments import configs
from pixel_rnn_jax import train

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "legacy_checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_legacy_checkpoint_restores_and_evaluates_to_the_recorded_nll(tmp_path, name):
    shutil.copytree(FIXTURES / name, tmp_path / "checkpoints")
    config = configs.get_config(name)
    metrics = train.evaluate_checkpoint(config, str(tmp_path))
    expected = EXPECTED[name]
    assert metrics["step"] == expected["step"]
    assert metrics["eval/num_images"] == expected["eval/num_images"]
    assert metrics["eval/nll"] == pytest.approx(expected["eval/nll"], rel=1e-6)
