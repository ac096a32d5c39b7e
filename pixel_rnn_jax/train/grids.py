"""Sample and completion grids of a model, for the runner's images and `experiments.sample`."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from pixel_rnn_jax import metric_logging, sampling


def sample_images(
    model,
    host_params,
    rng,
    *,
    spec,
    train_config,
    completion_source: np.ndarray | None,
    return_arrays: bool = False,
) -> dict[str, np.ndarray]:
    """Draws the sample grid and the completion panels (host params; process 0 only).

    Returns:
      {'samples': uint8 grid, 'completions': uint8 grid (if `completion_source`)}, plus the
      raw integer images `[n, H, W, C]` as 'samples_array' / 'completions_array' when
      `return_arrays`.
    """
    height, width, channels = spec.image_shape
    num = train_config.num_samples
    variables = {"params": host_params}
    sample_rng, completion_rng = jax.random.split(rng)
    kwargs = {"method": train_config.sample_method, "temperature": train_config.sample_temperature}
    template = jnp.zeros((num, height, width, channels), jnp.int32)
    samples = np.asarray(sampling.sample(model, variables, sample_rng, template, start=0, **kwargs))
    scale = train_config.image_scale
    samples_uint8 = metric_logging.to_uint8(samples, spec.num_levels)
    out = {"samples": metric_logging.make_grid(samples_uint8, scale=scale)}
    if return_arrays:
        out["samples_array"] = samples
    if completion_source is not None and len(completion_source):
        originals = np.asarray(completion_source[:num], np.int32)
        given_rows = height // 2
        completed = np.asarray(
            sampling.sample(
                model,
                variables,
                completion_rng,
                jnp.asarray(originals),
                start=given_rows * width * channels,
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
