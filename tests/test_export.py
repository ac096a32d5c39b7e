"""The programs a GPU or TPU will run lower for it on this CPU (`jax.export`).

The train step, the eval step and the cached sampler of every model kind, in float32 and
bfloat16, exported for 'cuda' and for 'tpu': tracing and lowering for that platform (its
lowering rules, the custom VJPs, shard_map, donation), not its compiler.
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export
from model_probes import tiny_model_config

from experiments.benchmarks import runner_step
from pixel_rnn_jax import models, parallel, train
from pixel_rnn_jax.sampling import cached
from pixel_rnn_jax.sampling import multiscale as multiscale_sampling

SHAPE = (2, 4, 4, 3)  # global batch of tiny RGB images (multi-scale needs an even size)


def _abstract(tree):
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), tree)


def _programs(name: str, dtype: str):
    """(label, jitted function, its arguments) of every program of one model."""
    fields = {"num_layers": 1, "hidden_dim": 3, "output_dim": 6, "first_kernel_size": 3}
    config = tiny_model_config(name, 3, 256, dtype=dtype, **fields)
    if name == "multiscale":
        config.multiscale.update(cond_dim=3, encoder_layers=1)
        config.multiscale.small.update(num_layers=1, hidden_dim=3)
    model = models.build_model(config)
    step, state, batch, key = runner_step.abstract_runner_train_step(model, 256, SHAPE)
    mesh = parallel.make_mesh(jax.devices()[:1])
    eval_batch = {
        "image": batch["image"],
        "mask": jax.ShapeDtypeStruct(SHAPE[:1], jnp.bool_, sharding=parallel.batch_sharding(mesh)),
    }
    programs = [
        ("train step", step, (state, batch, key)),
        ("eval step", train.make_eval_step(model, 256, mesh), (state.params, eval_batch)),
    ]
    variables = {"params": _abstract(state.params)}
    sampler_args = (
        jax.ShapeDtypeStruct((2,), jnp.uint32),
        jax.ShapeDtypeStruct(SHAPE, jnp.int32),
        jax.ShapeDtypeStruct((), jnp.int32),
        jax.ShapeDtypeStruct((), jnp.float32),
    )
    if name == "multiscale":
        # Its cached sampler is two programs: the small image's, then the conditional walk.
        small = {"params": variables["params"]["small"]}
        small_args = (sampler_args[0], jax.ShapeDtypeStruct((2, 2, 2, 3), jnp.int32))
        programs.append(
            (
                "small sampler",
                cached.sample_cached,
                (model.small, small, *small_args, *sampler_args[2:]),
            )
        )
        programs.append(
            (
                "conditional sampler",
                multiscale_sampling._sample_conditional_cached,
                (model, variables, *sampler_args, None),  # labels: an unconditional model
            )
        )
    else:
        programs.append(("cached sampler", cached.sample_cached, (model, variables, *sampler_args)))
    return programs


@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
@pytest.mark.parametrize("name", ("row_lstm", "diagonal_bilstm", "pixelcnn", "multiscale"))
def test_train_eval_and_sampler_export_for_cuda_and_tpu(name, dtype):
    for label, function, args in _programs(name, dtype):
        for platform in ("cuda", "tpu"):
            exported = export.export(function, platforms=[platform])(*args)
            assert exported.platforms == (platform,), label
            assert exported.mlir_module_serialized, (label, platform)
            if dtype == "bfloat16":
                assert "bf16" in exported.mlir_module(), (label, platform)
