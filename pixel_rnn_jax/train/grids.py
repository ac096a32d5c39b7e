"""Sample and completion grids of a model, for the runner's images and `experiments.sample`."""

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from pixel_rnn_jax import errors, metric_logging, sampling


def sample_labels(num: int, num_classes: int, label=None) -> tuple[np.ndarray | None, int | None]:
    """The labels of a grid of `num` samples, and its images per row.

    Args:
      num: samples asked for.
      num_classes: the model's `num_classes` (0: unconditional).
      label: None or 'all' (a class-conditional model: one row per class, of
        ceil(num / num_classes) samples each), or one class (all `num` samples of it).

    Returns:
      (int32 labels `[n]` or None for an unconditional model, images per row or None for the
      default square grid).

    Raises:
      ValueError: a label for an unconditional model, or one outside `[0, num_classes)`.
    """
    if not num_classes:
        if label is not None:
            raise errors.ConfigError(
                f"label={label!r} was given but the model is unconditional "
                "(model.num_classes = 0); leave the label out."
            )
        return None, None
    if label is None or label == "all":
        per_class = max(1, math.ceil(num / num_classes))
        return np.repeat(np.arange(num_classes, dtype=np.int32), per_class), per_class
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise errors.ConfigError(
            f"label must be a class in [0, {num_classes}) or 'all'; got {label!r}."
        )
    if not 0 <= label < num_classes:
        raise errors.ConfigError(
            f"label must be a class in [0, {num_classes}) or 'all'; got {label}."
        )
    return np.full((num,), label, np.int32), None


def sample_images(
    model,
    host_params,
    rng,
    *,
    spec,
    train_config,
    completion_source: np.ndarray | None,
    completion_labels: np.ndarray | None = None,
    label=None,
    return_arrays: bool = False,
) -> dict[str, np.ndarray]:
    """Draws the sample grid and the completion panels (host params; process 0 only).

    A class-conditional model's grid has one row per class (`label` None or 'all') or only
    samples of class `label`; its completions are of the test images given their own
    labels (`completion_labels`).

    Returns:
      {'samples': uint8 grid, 'completions': uint8 grid (if `completion_source`)}, plus the
      raw integer images `[n, H, W, C]` as 'samples_array' / 'completions_array' (and their
      labels as 'samples_labels' for a class-conditional model) when `return_arrays`.
    """
    height, width, channels = spec.image_shape
    labels, num_columns = sample_labels(train_config.num_samples, model.num_classes, label)
    num = train_config.num_samples if labels is None else len(labels)
    variables = {"params": host_params}
    sample_rng, completion_rng = jax.random.split(rng)
    kwargs = {"method": train_config.sample_method, "temperature": train_config.sample_temperature}
    template = jnp.zeros((num, height, width, channels), jnp.int32)
    samples = np.asarray(
        sampling.sample(model, variables, sample_rng, template, start=0, labels=labels, **kwargs)
    )
    scale = train_config.image_scale
    samples_uint8 = metric_logging.to_uint8(samples, spec.num_levels)
    out = {"samples": metric_logging.make_grid(samples_uint8, num_columns, scale=scale)}
    if return_arrays:
        out["samples_array"] = samples
        if labels is not None:
            out["samples_labels"] = labels
    if completion_source is not None and len(completion_source):
        num = train_config.num_samples
        originals = np.asarray(completion_source[:num], np.int32)
        given_labels = None
        if model.num_classes:
            given_labels = np.asarray(completion_labels[: len(originals)], np.int32)
        given_rows = height // 2
        completed = np.asarray(
            sampling.sample(
                model,
                variables,
                completion_rng,
                jnp.asarray(originals),
                start=given_rows * width * channels,
                labels=given_labels,
                **kwargs,
            )
        )
        panels = metric_logging.completion_panels(
            metric_logging.to_uint8(originals, spec.num_levels),
            metric_logging.to_uint8(completed, spec.num_levels),
            given_rows,
        )
        out["completions"] = metric_logging.make_grid(
            panels,
            num_columns=max(1, round(math.sqrt(num / 3))),  # panels are 3 images wide
            scale=scale,
        )
        if return_arrays:
            out["completions_array"] = completed
    return out
