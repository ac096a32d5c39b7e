"""The one list of execution-only model fields (`pixel_rnn_jax.model_fields`).

An execution-only field must keep the function (the logits, to float32 rounding) and so the
.prnn fingerprint; every other field must change the fingerprint. The workdir's view of the
same list is tested with the fault matrix (`test_model_differences_...`).
"""

import jax
import numpy as np
import pytest
from model_probes import tiny_model_config
from sampling_fixtures import random_variables

from pixel_rnn_jax import model_fields, models
from pixel_rnn_jax.coding import container

# Every other value each execution-only field takes (the default config holds the first).
ALTERNATIVES = {
    "schedule": ("throughput", "latency"),
    "unroll": ("full", "python"),
    "remat": (True,),
}
SHAPE = (2, 5, 4, 1)  # batch, height, width, channels: wider than the Row LSTM's kernel


def _tiny(name, **overrides):
    return tiny_model_config(name, 1, 2, num_layers=2, hidden_dim=4, output_dim=6, **overrides)


def _logits(config, variables, images):
    return np.asarray(jax.jit(models.build_model(config).apply)(variables, images))


@pytest.mark.parametrize("name", ["row_lstm", "diagonal_bilstm"])
def test_execution_only_fields_keep_the_logits_and_the_fingerprint(name):
    base = _tiny(name, schedule="throughput")
    variables = random_variables(models.build_model(base), SHAPE)
    images = np.random.default_rng(0).integers(0, 2, SHAPE).astype(np.int32)
    expected = _logits(base, variables, images)
    fingerprint = container.fingerprint(base, variables["params"])
    for field in sorted(model_fields.EXECUTION_ONLY_MODEL_FIELDS):
        for value in ALTERNATIVES[field]:
            varied = _tiny(name, **{"schedule": "throughput", field: value})
            logits = _logits(varied, variables, images)
            np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5, err_msg=field)
            assert container.fingerprint(varied, variables["params"]) == fingerprint, field


def _leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _other_value(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    return f"{value}_other"


@pytest.mark.parametrize("name", ["row_lstm", "multiscale"])
def test_every_other_field_changes_the_fingerprint(name):
    """Fields are varied one at a time in the default config, `multiscale.*` included."""
    params = {"conv": {"kernel": np.ones((2, 3), np.float32)}}
    base = models.default_model_config()
    base.name = name
    fingerprint = container.fingerprint(base, params)
    varied_fields = 0
    for path, value in _leaves(base.to_dict()):
        if path[0] in model_fields.EXECUTION_ONLY_MODEL_FIELDS:
            continue
        config = models.default_model_config()
        config.name = name
        *parents, leaf = path
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = _other_value(value)
        changed = container.fingerprint(config, params) != fingerprint
        # The `multiscale` sub-config is read by the multi-scale model only.
        assert changed == (path[0] != "multiscale" or name == "multiscale"), path
        varied_fields += 1
    assert varied_fields > len(model_fields.EXECUTION_ONLY_MODEL_FIELDS)


def test_dtype_is_part_of_the_function():
    """bfloat16 compute moves the logits far beyond float32 rounding: not execution-only."""
    base = _tiny("row_lstm")
    variables = random_variables(models.build_model(base), SHAPE)
    images = np.random.default_rng(0).integers(0, 2, SHAPE).astype(np.int32)
    float32 = _logits(base, variables, images)
    bfloat16 = _logits(_tiny("row_lstm", dtype="bfloat16"), variables, images)
    assert np.max(np.abs(bfloat16 - float32)) > 1e3 * np.finfo(np.float32).eps * np.max(
        np.abs(float32)
    )
    assert "dtype" not in model_fields.EXECUTION_ONLY_MODEL_FIELDS
    assert "dtype" in model_fields.PARAMETER_NEUTRAL_MODEL_FIELDS  # a checkpoint restores
