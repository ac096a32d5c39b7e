"""bfloat16 compute (`model.dtype`) and rematerialisation (`model.remat`) of every model kind."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_probes import dependency_matrix, tiny_model_config

from pixel_rnn_jax import likelihood, models
from pixel_rnn_jax.sampling import cached

MODEL_NAMES = ("row_lstm", "diagonal_bilstm", "pixelcnn")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name: str, **overrides):
    """The tests' tiny RGB model (256 levels)."""
    return tiny_model_config(name, 3, 256, **overrides)


def strictly_earlier(num_positions: int) -> np.ndarray:
    return np.tril(np.ones((num_positions, num_positions), dtype=bool), k=-1)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_is_strictly_causal_in_bfloat16(name):
    height, width, channels = 3, 4, 3
    config = tiny_model_config(name, channels, 256, dtype="bfloat16")
    deps = dependency_matrix(config, height, width, num_probes=2)
    assert not (deps & ~strictly_earlier(height * width * channels)).any()
    assert deps.sum() > height * width * channels  # the probe sees the context


def _nll(config, images, params=None, scale=1.0):
    model = models.build_model(config)
    if params is None:
        params = model.init(jax.random.PRNGKey(1), images)["params"]
        # Larger weights than at initialisation: logits of a few nats, like a trained model.
        params = jax.tree.map(lambda p: scale * p, params)
    logits = jax.jit(lambda p: model.apply({"params": p}, images))(params)
    return -likelihood.log_likelihood(logits, images, config.num_levels), params, logits


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_bfloat16_and_float32_losses_agree_on_a_fixed_batch(name):
    """Per-image NLLs within 2^-9 (one bfloat16 rounding of the NLL itself) of float32.

    Every bfloat16 product rounds its operands with relative error <= 2^-9; these errors
    enter each logit with random signs and the NLL sums thousands of per-sub-pixel terms,
    so they mostly cancel (the margin is in WORKSPACE_NOTES.md). A single rounding of the
    whole NLL to bfloat16 would already be 2^-9: a bound that a systematic error (a
    bfloat16 cell state, bfloat16 logits or log-softmax) would exceed, and noise would not.
    """
    images = jax.random.randint(jax.random.PRNGKey(0), (4, 6, 6, 3), 0, 256)
    config = _config(name)
    nll32, params, logits32 = _nll(config, images, scale=2.0)
    config.dtype = "bfloat16"
    nll16, _, logits16 = _nll(config, images, params)
    assert logits16.dtype == jnp.float32  # logits, log-softmax and likelihood in float32
    assert float(jnp.std(logits32)) > 0.5  # not a trivially flat model
    np.testing.assert_allclose(nll16, nll32, rtol=2.0**-9)


@pytest.mark.parametrize("name", MODEL_NAMES)  # the multi-scale parts are these models
def test_remat_keeps_the_parameter_tree_and_gives_the_same_gradients(name):
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 4, 4, 3), 0, 256)
    grads, paths = [], []
    for remat in (False, True):
        config = _config(name, remat=remat, num_layers=1)
        model = models.build_model(config)
        params = model.init(jax.random.PRNGKey(1), images)["params"]
        paths.append(
            [(jax.tree_util.keystr(k), v.shape) for k, v in jax.tree.leaves_with_path(params)]
        )

        def loss(p, model=model):
            logits = model.apply({"params": p}, images)
            return -jnp.mean(likelihood.log_likelihood(logits, images, 256))

        grads.append(jax.jit(jax.grad(loss))(params))
    assert paths[0] == paths[1]
    # Equal up to float32 rounding: XLA fuses the recomputed forward pass differently.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *grads)


_MEMORY_SCRIPT = """
import json, sys
from experiments.benchmarks import memory
memory.keep_remat_barriers()  # XLA:CPU would drop jax.checkpoint's barriers (see memory.py)
from experiments import configs
config = configs.get_config("row_lstm_cifar10").model
config.num_layers = 4
peaks = {}
for remat in (False, True):
    stats, _ = memory.train_step_memory(memory.variant_config(config, "float32", remat),
                                        (32, 32, 3), 1)
    peaks[str(remat)] = stats["peak_bytes"]
print("PEAKS " + json.dumps(peaks))
"""


def test_remat_lowers_the_train_steps_peak_memory_at_32x32_h128():
    """Compile only (memory_analysis), batch 1, 4 Row LSTM layers of h=128 at 32x32x3.

    In a child process: the XLA flag that keeps remat's barriers on a CPU must be set
    before JAX starts its backend.
    """
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PEAKS ")][-1]
    peaks = json.loads(line[len("PEAKS ") :])
    assert peaks["True"] < 0.9 * peaks["False"], peaks


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_cached_walk_in_bfloat16_matches_the_bfloat16_model(name):
    """The cached sampler computes in the model's dtype: its logits are the model's."""
    images = jax.random.randint(jax.random.PRNGKey(0), (2, 3, 4, 3), 0, 256)
    model = models.build_model(tiny_model_config(name, 3, 256, dtype="bfloat16"))
    variables = model.init(jax.random.PRNGKey(1), images)
    _, logits = jax.jit(
        lambda v: cached.run_incremental(model, v, images, lambda p, lg, c: c, collect_logits=True)
    )(variables)
    reference = model.apply(variables, images)
    assert logits.dtype == jnp.float32
    # bfloat16 rounding differs between the two evaluation orders (2^-8 of a few units).
    np.testing.assert_allclose(logits, reference, atol=0.05)
    walk = jax.make_jaxpr(
        lambda v: cached.run_incremental(model, v, images, lambda p, lg, c: c)[0]
    )(variables)
    assert "bf16" in str(walk)
