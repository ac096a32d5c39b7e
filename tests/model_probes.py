"""Jacobian probes of a model's dependency structure, shared by the model tests."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from pixel_rnn_jax import models


def tiny_model_config(name: str, num_channels: int, num_levels: int, **overrides):
    config = models.default_model_config()
    config.name = name
    config.num_layers = 2
    config.hidden_dim = 6
    config.output_dim = 9
    config.num_channels = num_channels
    config.num_levels = num_levels
    config.update(overrides)
    return config


def dependency_matrix(config, height: int, width: int, num_probes: int = 3, seed: int = 0):
    """Which input sub-pixels each output sub-pixel depends on, by the exact Jacobian.

    Returns:
      bool [H * W * C, H * W * C] indexed (output, input) in raster-then-channel order,
      OR-ed over `num_probes` random inputs and random parameters so that a dependency
      hidden by an inactive ReLU at one point still shows. A class-conditional config
      (`num_classes > 0`) is probed with a different label at every probe.
    """
    model = models.build_model(config)
    channels, levels = config.num_channels, config.num_levels
    rng = jax.random.PRNGKey(seed)
    images = jnp.zeros((1, height, width, channels), jnp.int32)
    found = np.zeros((height * width * channels,) * 2, dtype=bool)
    num_classes = config.get("num_classes", 0)

    def outputs(x, variables, projection, labels):
        logits = model.apply(variables, x[None], labels=labels, method="logits_from_inputs")[0]
        if levels != 2:  # random projection of the level logits: one scalar per sub-pixel
            logits = logits @ projection
        return logits.reshape(-1)

    jacobian_fn = jax.jit(jax.jacrev(outputs))  # one compile serves every probe
    for probe in range(num_probes):
        key_params, key_x, key_proj = jax.random.split(jax.random.fold_in(rng, probe), 3)
        labels = jnp.full((1,), probe % num_classes, jnp.int32) if num_classes else None
        variables = model.init(key_params, images, labels)
        projection = jax.random.normal(key_proj, (levels,))
        x = jax.random.uniform(key_x, (height, width, channels), minval=-1.0, maxval=1.0)
        jacobian = jacobian_fn(x, variables, projection, labels).reshape(found.shape)
        found |= np.asarray(jnp.abs(jacobian) > 0)
    return found


def pixel_dependencies(deps: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """Collapses channels: bool [H, W, H, W], pixel (i, j) output depends on pixel (r, c)."""
    d = deps.reshape(height, width, channels, height, width, channels)
    return d.any(axis=(2, 5))


def schedules_agree(config, images, labels=None, rtol=1e-5, atol=1e-6):
    """Asserts that `config` gives one parameter tree, equal logits and equal gradients
    under the 'throughput' and the 'latency' schedule.

    Every leaf is compared as max |latency - throughput| <= atol + rtol * max |throughput|.

    Args:
      config: a model config (its `schedule` is overwritten).
      images: integer images to evaluate.
      labels: class labels for a conditional config.

    Returns:
      The (throughput, latency) logits, for further checks.
    """
    config.schedule = "throughput"
    model = models.build_model(config)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(1), images, labels)["params"]
    # Random parameters (biases too, so that a bias read wrongly shows), drawn in NumPy:
    # compiling the model's own initialiser would cost more than the comparison.
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes
    )
    results = []
    for schedule in ("throughput", "latency"):
        config.schedule = schedule
        model = models.build_model(config)
        # One parameter tree under every schedule: a checkpoint runs under either.
        chex.assert_trees_all_equal_shapes_and_dtypes(
            jax.eval_shape(model.init, jax.random.PRNGKey(1), images, labels)["params"], params
        )

        def loss(params, model=model):
            logits = model.apply({"params": params}, images, labels)
            return jnp.sum(jnp.sin(logits.astype(jnp.float32))), logits

        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        results.append((logits, grads))
    (logits_t, grads_t), (logits_l, grads_l) = results
    for got, want in zip(
        jax.tree.leaves((logits_l, grads_l)), jax.tree.leaves((logits_t, grads_t)), strict=True
    ):
        # Relative to the largest entry: bfloat16 gradients are sums of rounded products.
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        assert np.max(np.abs(got - want)) <= atol + rtol * np.max(np.abs(want)), (got, want)
    return logits_t, logits_l


class _ReadRecorder(dict):
    """A parameter dict that records the path of every leaf read through `[]`."""

    def __init__(self, tree, path, seen):
        super().__init__(tree)
        self._path, self._seen = path, seen

    def __getitem__(self, key):
        value = super().__getitem__(key)
        path = (*self._path, key)
        if isinstance(value, dict):
            return _ReadRecorder(value, path, self._seen)
        self._seen.add(path)
        return value


def unread_parameters(unpack, unit_params) -> set[tuple[str, ...]]:
    """The leaf paths of one unit's parameters that `unpack(unit_params)` never reads.

    Empty when `unpack` is, as it should be, the reader of every name the layer creates.
    """
    seen = set()
    unpack(_ReadRecorder(unit_params, (), seen))
    leaves = jax.tree_util.tree_flatten_with_path(unit_params)[0]
    return {tuple(key.key for key in path) for path, _ in leaves} - seen
