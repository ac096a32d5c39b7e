"""A bfloat16 run checkpoints float32 parameters and optimiser state; runs resume across dtypes."""

import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from experiments import configs
from pixel_rnn_jax import checkpoints, train


def _smoke(dtype: str, num_steps: int):
    config = configs.get_config("row_lstm_mnist_smoke")
    config.model.dtype = dtype
    config.train.num_steps = num_steps
    config.train.num_samples = 0
    config.train.eval_max_batches = 1
    config.train.checkpoint_every = 2
    config.train.eval_every = 0
    return config


def _saved_dtypes(workdir, step: int) -> set[str]:
    """The dtypes Orbax wrote for the train state of checkpoint `step` (no restore target)."""
    path = pathlib.Path(workdir) / "checkpoints" / str(step) / checkpoints.STATE_ITEM
    metadata = ocp.StandardCheckpointer().metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    leaves = [leaf for leaf in jax.tree.leaves(tree) if hasattr(leaf, "dtype")]
    assert leaves, f"no array metadata in {path}"
    return {str(leaf.dtype) for leaf in leaves if leaf.shape != ()}


def test_float32_to_bfloat16_and_back_resume_with_float32_state(tmp_path, compilation_cache):
    # float32 for 2 steps, resumed in bfloat16 to 4, resumed in float32 again to 6.
    for dtype, steps in (("float32", 2), ("bfloat16", 4), ("float32", 6)):
        result = train.train_and_evaluate(_smoke(dtype, steps), str(tmp_path))
        assert result["step"] == steps and np.isfinite(result["eval/nll"])
        # Parameters and optimiser state on disk are float32 whatever the compute dtype.
        assert _saved_dtypes(tmp_path, steps) == {"float32"}, (dtype, steps)
    loaded = train.load_checkpoint(_smoke("bfloat16", 6), str(tmp_path))
    assert loaded.step == 6
    assert {str(x.dtype) for x in jax.tree.leaves(loaded.params)} == {"float32"}
