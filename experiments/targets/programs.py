"""The runner's programs for a target, built from shapes alone: train step, eval step, sampler.

Each is built as the runner builds it on the target (`train.loop`, `train.grids`), over
abstract arguments carrying the shardings the runner gives them there:

- the data mesh over every chip of every host (`parallel.make_mesh`), the state replicated
  and donated, the global batch split over the chips, and each host feeding `global batch /
  hosts` images (`data.check_global_batch`, the runner's one check of a batch size);
- `model.schedule='auto'` resolved for the target's platform, not this machine's;
- the optimiser, learning-rate schedule and weight penalty from `config.train`;
- the sampler as `sampling.sample(method='cached')` runs it: on one host's chips, the batch
  split over them (`sampling.common.over_local_devices`), every chip drawing its images.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from experiments.benchmarks import loops
from experiments.targets.catalog import Target
from pixel_rnn_jax import data, models, parallel, sampling, train
from pixel_rnn_jax.errors import ConfigError
from pixel_rnn_jax.nn import recurrence

PROGRAMS = ("train_step", "eval_step", "sample")


@dataclasses.dataclass(frozen=True)
class Program:
    """A jitted program and its abstract arguments, ready for `fn.lower(*args)`."""

    name: str  # one of PROGRAMS
    fn: Callable
    args: tuple
    chips: int  # the chips it runs on (the sampler: one host's)
    images: int  # images per call over those chips

    def loop_count(self) -> loops.LoopCount:
        """Its loops, read from its jaxpr (traced, not compiled)."""
        return loops.count_loops(self.fn, *self.args)


def per_chip_batch(value: str | None, config, target: Target) -> int | None:
    """The per-chip batch asked for; None for 'max'.

    Raises:
      ConfigError: not a positive integer or 'max', or the config's global batch does not
        split over the target's chips and hosts.
    """
    if value == "max":
        return None
    if value is None:
        global_batch = config.train.batch_size
        # The runner's own check: names the nearest global batches that split.
        data.check_global_batch(global_batch, target.chips, target.hosts, what="train.batch_size")
        return global_batch // target.chips
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"--per_chip_batch must be a positive integer or 'max'; got {value!r}.")
    return int(value)


def model_config_for(model_config: ml_collections.ConfigDict, platform: str):
    """A copy of `model_config` with `schedule='auto'` resolved for `platform`, as the model
    resolves it on that platform (per kind and h; a Multi-Scale model per part, which must
    agree).
    """
    parts = {(model_config.name, model_config.hidden_dim)}
    if model_config.name == "multiscale":
        small = model_config.multiscale.small
        parts = {
            (small.name, small.hidden_dim),
            (model_config.multiscale.conditional_name, model_config.hidden_dim),
        }
    schedules = {
        recurrence.resolve_schedule(model_config.schedule, platform, kind, hidden)
        for kind, hidden in parts
    }
    if len(schedules) > 1:
        raise ConfigError(
            f"model.schedule='auto' resolves differently for the parts {sorted(parts)} on "
            f"{platform}; set --config.model.schedule to 'throughput' or 'latency'."
        )
    resolved = ml_collections.ConfigDict(model_config.to_dict())
    resolved.schedule = schedules.pop()
    return resolved


def dataset_shape(config: ml_collections.ConfigDict) -> tuple[tuple[int, int, int], int]:
    """(image shape `[height, width, channels]`, levels) of the config's dataset."""
    known = data.KNOWN_DATASETS[config.data.name]
    return tuple(known.image_shape), known.num_levels


def _abstract(tree: Any, sharding) -> Any:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def _images(batch: int, shape: Sequence[int], mesh) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((batch, *shape), np.int32, sharding=parallel.batch_sharding(mesh))


def build(
    config: ml_collections.ConfigDict,
    target: Target,
    devices: Sequence[jax.Device],
    per_chip_batch: int,
    which: Sequence[str] = PROGRAMS,
) -> list[Program]:
    """The runner's programs for `config` on `target`, `per_chip_batch` images per chip.

    Args:
      config: an experiment config (`experiments.configs`), overrides applied.
      target: the target (`catalog.parse`).
      devices: its devices (`devices.target_devices`).
      per_chip_batch: images per chip and step (train and eval) or call (sampler).
      which: names from `PROGRAMS`.

    Raises:
      ConfigError: the global batch does not split over the chips and hosts.
    """
    image_shape, num_levels = dataset_shape(config)
    model_config = model_config_for(config.model, target.platform)
    model = models.build_model(model_config)
    mesh = parallel.make_mesh(list(devices))
    global_batch = per_chip_batch * target.chips
    data.check_global_batch(global_batch, target.chips, target.hosts, what="the global batch")
    replicated = parallel.replicated_sharding(mesh)
    tc = config.train
    tx = train.make_optimizer(tc)
    init = functools.partial(train.init_train_state, model=model, tx=tx, image_shape=image_shape)
    state = _abstract(jax.eval_shape(init, jax.random.PRNGKey(0)), replicated)
    key = jax.ShapeDtypeStruct((2,), np.uint32, sharding=replicated)
    conditional = bool(model_config.num_classes)
    programs = []
    if "train_step" in which:
        batch = {"image": _images(global_batch, image_shape, mesh)}
        if conditional:
            batch["label"] = _images(global_batch, (), mesh)
        step = train.make_train_step(
            model, tx, num_levels, mesh, train.learning_rate_scale(tc), tc.l2_weight
        )
        programs.append(
            Program("train_step", step, (state, batch, key), target.chips, global_batch)
        )
    if "eval_step" in which:
        batch = {
            "image": _images(global_batch, image_shape, mesh),
            "mask": jax.ShapeDtypeStruct(
                (global_batch,), np.bool_, sharding=parallel.batch_sharding(mesh)
            ),
        }
        if conditional:
            batch["label"] = _images(global_batch, (), mesh)
        step = train.make_eval_step(model, num_levels, mesh)
        programs.append(
            Program("eval_step", step, (state.params, batch), target.chips, global_batch)
        )
    if "sample" in which:
        host = [d for d in devices if d.process_index == devices[0].process_index]
        host_mesh = parallel.make_mesh(host)
        host_batch = per_chip_batch * len(host)
        variables = {"params": _abstract(state.params, parallel.replicated_sharding(host_mesh))}
        rng = jax.ShapeDtypeStruct(
            (2,), np.uint32, sharding=parallel.replicated_sharding(host_mesh)
        )
        images = _images(host_batch, image_shape, host_mesh)
        labels = _images(host_batch, (), host_mesh) if conditional else None

        def draw(variables, rng, images, labels):
            return sampling.sample(
                model, variables, rng, images, start=0, method="cached", labels=labels
            )

        programs.append(
            Program(
                "sample", jax.jit(draw), (variables, rng, images, labels), len(host), host_batch
            )
        )
    return programs
