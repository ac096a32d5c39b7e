"""The fuzz targets of `experiments.fuzz` (no atheris needed): their seeds are real files
that pass the readers, and their property checks hold on junk and fail on a wrong result."""

import numpy as np
import pytest

from experiments.fuzzing import targets

# The prnn and payload targets compile a model walk (13 s here): test_coding's property
# tests cover the same readers.
CHEAP = ["png", "idx", "amat", "cifar", "archive", "checkpoint"]


@pytest.mark.parametrize("name", CHEAP)
def test_seeds_and_junk_pass_the_property(tmp_path, name):
    target = targets.TARGETS[name](str(tmp_path))
    assert target.seeds and target.modules
    for data in [*target.seeds, b"", b"\0", b"\1" + bytes(range(64)), bytes(300)]:
        target.check(data)


def test_a_reader_that_returns_a_wrong_result_fails_the_check(tmp_path, monkeypatch):
    from pixel_rnn_jax.data import formats

    target = targets.idx(str(tmp_path))
    monkeypatch.setattr(formats, "read_idx", lambda path, shape: np.zeros((1, 27, 28)))
    with pytest.raises(AssertionError):
        target.check(target.seeds[0])
