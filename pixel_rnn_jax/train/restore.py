"""Restoring a run's checkpoint read-only, to evaluate it or sample from it."""

import dataclasses
import functools
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from pixel_rnn_jax import checkpoints, data, errors, metric_logging, models, parallel
from pixel_rnn_jax import workdir as workdir_checks
from pixel_rnn_jax.train import grids, guards, state, steps


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A trained model restored for evaluation or sampling."""

    model: Any  # the Linen model
    params: Any  # replicated parameters
    step: int  # the checkpoint's step
    spec: data.DatasetSpec  # the dataset the config resolves to
    mesh: Any  # the data mesh the parameters live on


def load_checkpoint(config: ml_collections.ConfigDict, workdir: str, which: str = "latest"):
    """Restores a run's latest or best checkpoint read-only (safe next to a live run).

    Args:
      config: the run's config.
      workdir: the run's work directory.
      which: 'latest' or 'best' (lowest eval NLL).

    Returns:
      A LoadedCheckpoint.

    Raises:
      NoCheckpointError: the workdir has no checkpoint (a FileNotFoundError).
    """
    workdir_checks.check_config_matches(workdir, config)
    spec = data.resolve_dataset(config.data)
    guards.check_model_matches_data(config, spec)
    mesh = parallel.make_mesh()
    model = models.build_model(config.model)
    tx = state.make_optimizer(config.train)
    init_fn = functools.partial(
        state.init_train_state, model=model, tx=tx, image_shape=spec.image_shape
    )
    abstract_state = state.abstract_state(
        init_fn, jax.random.PRNGKey(0), parallel.replicated_sharding(mesh)
    )
    ckpt = checkpoints.CheckpointManager(
        workdir, keep_last=max(1, config.train.keep_checkpoints), read_only=True
    )
    try:
        restored = ckpt.restore_latest(abstract_state, which=which)
    finally:
        ckpt.close()
    if restored is None:
        raise errors.NoCheckpointError(
            f"No checkpoint in {ckpt.directory}. Train first: python -m experiments.train "
            f"--config=... --workdir={workdir}"
        )
    return LoadedCheckpoint(
        model=model, params=restored.state.params, step=restored.step, spec=spec, mesh=mesh
    )


def evaluate_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    which: str = "latest",
    split: str | None = None,
) -> dict[str, Any]:
    """NLL (nats/image and bits/dim) of a run's latest or best checkpoint on one split.

    Args:
      config: the run's config.
      workdir: the run's work directory.
      which: 'latest' or 'best' (lowest NLL on the split the run selected on).
      split: any split of the dataset; default the reported one (`spec.eval_split`).

    For a class-conditional model (`model.num_classes > 0`) it is the conditional NLL
    -log p(x | y), each test image given its own label.

    Returns:
      {'step', 'split', 'eval/nll', 'eval/bits_per_dim', 'eval/num_images'} over the whole
      split.

    Raises:
      ConfigError: `split` is not a split of the prepared dataset.
    """
    loaded = load_checkpoint(config, workdir, which)
    p_eval_step = steps.make_eval_step(loaded.model, loaded.spec.num_levels, loaded.mesh)
    data.check_global_batch(
        config.train.eval_batch_size,
        loaded.mesh.devices.size,
        jax.process_count(),
        what="train.eval_batch_size",
    )
    split = split or loaded.spec.eval_split
    check_split(loaded.spec, split)
    batches = data.eval_batches(
        loaded.spec,
        config.data,
        global_batch_size=config.train.eval_batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        split=split,
        with_labels=bool(config.model.num_classes),
    )
    metrics = steps.evaluate(
        p_eval_step, loaded.params, batches, loaded.mesh, math.prod(loaded.spec.image_shape)
    )
    return {"step": loaded.step, "split": split, **metrics}


def check_split(spec: data.DatasetSpec, split: str) -> None:
    """Raises ConfigError when `split` is not a split of the dataset."""
    if split not in spec.split_sizes:
        raise errors.ConfigError(
            f"Dataset {spec.name!r} has no split {split!r}; its splits are "
            f"{sorted(spec.split_sizes)}."
        )


def split_images(
    config: ml_collections.ConfigDict,
    spec: data.DatasetSpec,
    split: str | None = None,
    num: int | None = None,
):
    """The first `num` images of a split in its evaluation order (all with None).

    Args:
      config: the run's config (`config.data`; labels when `model.num_classes > 0`).
      spec: the resolved dataset.
      split: a split of the dataset; default the reported one (`spec.eval_split`).
      num: how many images; None for the whole split.

    Returns:
      (uint8 `[n, height, width, channels]`, int `[n]` labels or None).
    """
    split = split or spec.eval_split
    check_split(spec, split)
    num = spec.split_sizes[split] if num is None else min(num, spec.split_sizes[split])
    with_labels = bool(config.model.num_classes)
    images, labels = [], []
    for batch in data.eval_batches(
        spec,
        config.data,
        global_batch_size=max(1, min(num, 256)),
        split=split,
        with_labels=with_labels,
    ):
        images.append(batch["image"][batch["mask"]])
        if with_labels:
            labels.append(batch["label"][batch["mask"]])
        if sum(len(x) for x in images) >= num:
            break
    return np.concatenate(images)[:num], np.concatenate(labels)[:num] if with_labels else None


def sample_checkpoint(
    config: ml_collections.ConfigDict,
    workdir: str,
    out_dir: str,
    *,
    num: int = 64,
    complete: bool = False,
    which: str = "latest",
    seed: int = 0,
    label=None,
) -> dict[str, str]:
    """Writes a PNG grid and an .npz of samples (and of completions) from a checkpoint.

    Args:
      config: the run's config (train.sample_method / sample_temperature are used).
      workdir: the run's work directory.
      out_dir: where the files go.
      num: how many samples (and completions).
      complete: also complete the first `num` test images from their top half.
      which: 'latest' or 'best'.
      seed: sampling seed.
      label: class-conditional models only: a class in `[0, num_classes)` (all `num`
        samples of it), or None / 'all' for a grid with one row per class of
        ceil(num / num_classes) samples each. Completions are given their test images' own
        labels. A label for an unconditional model is a ValueError.

    Returns:
      {'samples_png', 'samples_npz', ...} paths written ('completions_*' with `complete`);
      a class-conditional model's .npz also holds the samples' `labels`.
    """
    grids.sample_labels(num, config.model.num_classes, label)  # fail before restoring
    loaded = load_checkpoint(config, workdir, which)
    os.makedirs(out_dir, exist_ok=True)
    source = source_labels = None
    if complete:
        source, source_labels = split_images(config, loaded.spec, num=num)
    train_config = ml_collections.ConfigDict(config.train.to_dict())
    train_config.num_samples = num
    host_params = jax.tree.map(np.array, jax.device_get(loaded.params))
    drawn = grids.sample_images(
        loaded.model,
        host_params,
        jax.random.PRNGKey(seed),
        spec=loaded.spec,
        train_config=train_config,
        completion_source=source,
        completion_labels=source_labels,
        label=label,
        return_arrays=True,
    )
    paths = {}
    for name in ("samples", "completions"):
        if name not in drawn:
            continue
        stem = os.path.join(out_dir, f"{name}_step{loaded.step}")
        metric_logging.save_png(stem + ".png", drawn[name])
        arrays = {"images": drawn[name + "_array"]}
        if name == "samples" and "samples_labels" in drawn:
            arrays["labels"] = drawn["samples_labels"]
        np.savez_compressed(stem + ".npz", **arrays)
        paths[name + "_png"], paths[name + "_npz"] = stem + ".png", stem + ".npz"
    return paths
