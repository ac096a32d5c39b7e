"""The workdir checks (`pixel_rnn_jax.workdir`) on config.json files someone else wrote."""

import json
import logging

import ml_collections
import mutations
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from model_probes import tiny_model_config

from pixel_rnn_jax import errors, workdir


def _config():
    config = ml_collections.ConfigDict()
    config.model = tiny_model_config("row_lstm", 1, 2, num_layers=1, hidden_dim=4)
    return config


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"[" * 100_000, "RecursionError"),  # deeper than the parser's stack
        (b'{"config": {"model": ' * 3000 + b"1" + b"}}" * 3000, "RecursionError"),
        (b"\xff" * 10, "UnicodeDecodeError"),
        (b'{"config": {"model": [1]}}', "TypeError"),
        (b" " * (workdir.MAX_CONFIG_BYTES + 1), "ValueError: more than"),
    ],
)
def test_an_unreadable_config_json_is_reported_not_raised(tmp_path, caplog, content, reason):
    (tmp_path / workdir.CONFIG_FILE).write_bytes(content)
    with caplog.at_level(logging.WARNING):
        workdir.check_config_matches(str(tmp_path), _config())
    assert reason in caplog.text and "is unreadable" in caplog.text


def test_a_config_json_of_another_model_is_still_refused(tmp_path):
    config = _config()
    recorded = {**config.model.to_dict(), "hidden_dim": 99}
    (tmp_path / workdir.CONFIG_FILE).write_text(json.dumps({"config": {"model": recorded}}))
    with pytest.raises(errors.WorkdirError, match="model.hidden_dim: 99 there, 4 here"):
        workdir.check_config_matches(str(tmp_path), config)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_damaged_config_json_is_checked_or_reported_never_raised(tmp_path_factory, data):
    config = _config()
    real = json.dumps({"config": config.to_dict(), "devices": {"platform": "cpu"}}, indent=2)
    directory = tmp_path_factory.mktemp("run")
    (directory / workdir.CONFIG_FILE).write_bytes(
        data.draw(mutations.mutated(real.encode()), label="config.json")
    )
    try:
        workdir.check_config_matches(str(directory), config)
    except errors.WorkdirError as error:  # a readable file naming another model
        assert "holds a run of a different model" in str(error)
