"""Grain input pipelines: sharded infinite training batches and padded eval.

Both pipelines are Grain `MapDataset`s over an `ImageSource`: every batch is
a pure function of (dataset, seed, shard, batch index), so the training
iterator's checkpoint is one integer and restoring it is exact. Grain's
thread prefetching overlaps reading/decoding with the train step.

Sharding follows Grain's `ShardOptions` (as its `even_split`): process `i` of `n`
reads the contiguous records `[i * N // n, (i + 1) * N // n)` (training
drops the `N % n` remainder so every process sees the same amount of data;
evaluation keeps it and pads instead).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np
from grain.sharding import ShardOptions

from pixel_rnn_jax.data.registry import DatasetSpec
from pixel_rnn_jax.data.sources import open_split
from pixel_rnn_jax.errors import ConfigError

_STATE_FORMAT = "pixel_rnn_jax.data.TrainIterator/1"
# Identity fields added after _STATE_FORMAT/1, with the value a state saved before them meant.
_IDENTITY_DEFAULTS = {"perturb_rate": 0.0}


def check_global_batch(
    global_batch_size: int, num_devices: int, process_count: int, what: str = "global_batch_size"
) -> int:
    """Checks that a global batch splits evenly over devices and processes.

    The one check of every batch size, used by the input pipeline and, before anything is
    compiled, by the runner (for `train.batch_size` and `train.eval_batch_size`).

    Args:
        global_batch_size: Examples per step over all processes.
        num_devices: Devices over all processes (`jax.device_count()`).
        process_count: Number of processes (`jax.process_count()`).
        what: The setting's name in the message; a `train.*` config field also gets the
            override to fix it.

    Returns:
        The per-process batch size, `global_batch_size // process_count`.

    Raises:
        ConfigError (a ValueError): Naming the batch size, device count and the nearest valid
            global batch sizes.
    """
    if num_devices <= 0 or process_count <= 0 or num_devices % process_count:
        raise ConfigError(
            f"num_devices={num_devices} must be a positive multiple of "
            f"process_count={process_count}."
        )
    # num_devices is a multiple of process_count, so it is the step of valid sizes.
    if global_batch_size <= 0 or global_batch_size % num_devices:
        below = (global_batch_size // num_devices) * num_devices
        nearest = " or ".join(str(n) for n in (below, below + num_devices) if n > 0)
        message = (
            f"{what}={global_batch_size} cannot be split evenly over {num_devices} devices "
            f"in {process_count} process(es): it is the global batch, so it must be a "
            f"positive multiple of {num_devices}. Nearest valid sizes: {nearest}."
        )
        if what.startswith("train."):
            message += f" Set --config.{what} to a multiple of {num_devices} (nearest: {nearest})."
        raise ConfigError(message)
    return global_batch_size // process_count


def shard_bounds(num_examples: int, shard: ShardOptions) -> tuple[int, int]:
    """Returns `[start, end)` of the shard's contiguous records.

    Same split as Grain's (private) `even_split`: equal shards of
    `num_examples // shard_count`; the remainder is dropped with
    `drop_remainder`, otherwise given one each to the first shards.
    """
    per_shard, remainder = divmod(num_examples, shard.shard_count)
    start = per_shard * shard.shard_index
    end = start + per_shard
    if not shard.drop_remainder:
        start += min(shard.shard_index, remainder)
        end += min(shard.shard_index + 1, remainder)
    return start, end


def _check_config(spec: DatasetSpec, data_config: Any) -> None:
    # Catches an iterator built from a spec of another config (e.g. a stale one).
    name = data_config.get("name")
    if name != spec.requested_name:
        raise ValueError(
            f"data_config.name={name!r} does not match spec.requested_name="
            f"{spec.requested_name!r}; call resolve_dataset(data_config) again."
        )


def _shuffle_seed(seed: int) -> int:
    """Maps `seed` to Grain's 32-bit shuffle seed, decorrelating nearby seeds.

    Grain shuffles epoch `e` with seed `s + e`, so passing `seed` directly
    would give run `seed=1` the epoch orders of run `seed=0` shifted by one.
    """
    return int(np.random.SeedSequence(int(seed)).generate_state(1, dtype=np.uint32)[0])


def perturb_pixels(
    image: np.ndarray, rate: float, num_levels: int, rng: np.random.Generator
) -> np.ndarray:
    """Replaces each sub-pixel, with probability `rate`, by a uniform random level.

    The input perturbation of Ren et al. (2019)'s background model: trained on images whose
    semantic content is partly destroyed, the model learns the population's low-level
    statistics (flat backgrounds, smooth regions), so that the likelihood ratio of the main
    model to it cancels them.

    Args:
      image: integer `[height, width, channels]` in `[0, num_levels)`.
      rate: probability of replacing each sub-pixel, in `[0, 1]`.
      num_levels: the dataset's levels (2 or 256).
      rng: the random source (Grain's per-element generator in the pipeline).

    Returns:
      An array of `image`'s shape and dtype.
    """
    replace = rng.random(image.shape) < rate
    levels = rng.integers(0, num_levels, image.shape, dtype=image.dtype)
    return np.where(replace, levels, image)


def _read_options(num_threads: int, prefetch_batches: int) -> grain.ReadOptions:
    # Grain's defaults (16 threads, 500 elements) are sized for big hosts and
    # would hold 500 whole batches here.
    return grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch_batches)


class _Perturb:
    """`perturb_pixels` as a Grain random map over (image) or (image, label) elements."""

    def __init__(self, rate: float, num_levels: int, with_labels: bool):
        self._rate, self._num_levels, self._with_labels = rate, num_levels, with_labels

    def __call__(self, element, rng: np.random.Generator):
        if self._with_labels:
            image, label = element
            return perturb_pixels(image, self._rate, self._num_levels, rng), label
        return perturb_pixels(element, self._rate, self._num_levels, rng)


class TrainIterator:
    """Infinite, shuffled, per-process training batches.

    `next(it)` returns `{'image': uint8 [global_batch_size // process_count,
    height, width, channels]}`. Process `process_index` reads only its own
    contiguous shard of the train split, reshuffled every epoch with `seed`
    (the same seed on every process keeps the run reproducible); batches
    cross epoch boundaries.

    The state from `get_state()` is a small JSON-serialisable dict; it is the
    same on every process (they advance in lockstep), so process 0's state can
    be restored on all processes.
    """

    def __init__(
        self,
        spec: DatasetSpec,
        data_config: Any,
        global_batch_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        *,
        with_labels: bool = False,
        perturb_rate: float = 0.0,
        num_threads: int = 2,
        prefetch_batches: int = 4,
    ):
        """Builds the pipeline; reading starts on the first `next`.

        Args:
            spec: From `resolve_dataset(data_config)`.
            data_config: The config `spec` was resolved from.
            global_batch_size: Examples per step over all processes.
            seed: Non-negative shuffle seed.
            process_index: This process, `jax.process_index()`.
            process_count: All processes, `jax.process_count()`.
            with_labels: Also yield `'label'`: int32 `[local_batch]` class
                labels (class-conditional models). The batches' images and
                order are the same either way.
            perturb_rate: Each sub-pixel of a training image is replaced, with this
                probability, by a uniform random level (`perturb_pixels`; the
                background model of a likelihood ratio, `config.data.perturb_rate`); the
                same batch index always draws the same perturbation, so a resumed run
                sees what a straight one does. 0 leaves the images as stored.
            num_threads: Grain reader threads.
            prefetch_batches: Batches read ahead.
        """
        _check_config(spec, data_config)
        if not 0.0 <= perturb_rate <= 1.0:
            raise ConfigError(f"data.perturb_rate={perturb_rate} must be a probability in [0, 1].")
        self._with_labels = with_labels
        self._local_batch = check_global_batch(global_batch_size, process_count, process_count)
        shard = ShardOptions(process_index, process_count, drop_remainder=True)
        source = open_split(spec, spec.train_split, with_labels)
        start, end = shard_bounds(len(source), shard)
        if end <= start:
            raise ValueError(
                f"Train split of {spec.name!r} has {len(source)} examples, fewer than "
                f"process_count={process_count}."
            )
        self._identity = {
            "format": _STATE_FORMAT,
            "dataset": spec.name,
            "num_train": len(source),
            "seed": int(seed),
            "global_batch_size": int(global_batch_size),
            "process_count": int(process_count),
            "perturb_rate": float(perturb_rate),
        }
        dataset = (
            grain.MapDataset.source(source)[start:end]
            .shuffle(seed=_shuffle_seed(seed))
            .repeat(None)  # Reseeds the shuffle every epoch.
        )
        if perturb_rate:
            dataset = dataset.random_map(
                _Perturb(perturb_rate, spec.num_levels, with_labels),
                seed=_shuffle_seed(seed + 1),
            )
        dataset = dataset.batch(self._local_batch, drop_remainder=True)
        self._iterator = dataset.to_iter_dataset(
            _read_options(num_threads, prefetch_batches)
        ).__iter__()

    def __iter__(self) -> TrainIterator:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._with_labels:
            images, labels = next(self._iterator)
            return {"image": images, "label": labels}
        return {"image": next(self._iterator)}

    def close(self) -> None:
        """Stops Grain's prefetch threads; the iterator cannot be used afterwards."""
        self._iterator.close()

    def get_state(self) -> dict[str, Any]:
        """Returns the position after the last returned batch (JSON-serialisable)."""
        return {**self._identity, "next_batch": int(self._iterator.get_state()["next_index"])}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from a `get_state()` of an iterator with the same settings.

        Raises:
            ValueError: If the state was saved with another dataset, seed,
                batch size or process count.
        """
        saved = {**_IDENTITY_DEFAULTS, **state}
        mismatched = {
            key: (saved.get(key), value)
            for key, value in self._identity.items()
            if saved.get(key) != value
        }
        if mismatched:
            raise ValueError(
                f"Iterator state does not match this iterator; (saved, current): {mismatched}."
            )
        next_batch = state.get("next_batch")
        if not isinstance(next_batch, int) or next_batch < 0:
            raise ValueError(f"Invalid next_batch {next_batch!r} in iterator state.")
        self._iterator.set_state({"next_index": next_batch})


def eval_batches(
    spec: DatasetSpec,
    data_config: Any,
    global_batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    split: str | None = None,
    with_labels: bool = False,
    num_threads: int = 2,
    prefetch_batches: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """Yields every evaluation example exactly once over all processes.

    Every process yields the same number of batches (needed by SPMD steps);
    batches are padded with zero images and `mask=False`.

    Args:
        spec: From `resolve_dataset(data_config)`.
        data_config: The config `spec` was resolved from.
        global_batch_size: Examples per step over all processes.
        process_index: This process, `jax.process_index()`.
        process_count: All processes, `jax.process_count()`.
        split: TFDS split; defaults to `spec.eval_split`.
        with_labels: Also yield `'label'`: int32 `[local_batch]` (0 where padded).
        num_threads: Grain reader threads.
        prefetch_batches: Batches read ahead.

    Yields:
        `{'image': uint8 [local_batch, height, width, channels],
        'mask': bool [local_batch]}` (and `'label'` with `with_labels`) with
        `local_batch = global_batch_size // process_count`, in a fixed order.
    """
    _check_config(spec, data_config)
    local_batch = check_global_batch(global_batch_size, process_count, process_count)
    source = open_split(spec, split or spec.eval_split, with_labels)
    start, end = shard_bounds(len(source), ShardOptions(process_index, process_count))
    # The largest shard fixes the number of batches for everyone.
    num_batches = math.ceil(math.ceil(len(source) / process_count) / local_batch)
    batches = iter(())
    if end > start:
        dataset = grain.MapDataset.source(source)[start:end].batch(
            local_batch, drop_remainder=False
        )
        batches = dataset.to_iter_dataset(_read_options(num_threads, prefetch_batches)).__iter__()
    for _ in range(num_batches):
        examples = next(batches, None)
        images, labels = examples if with_labels and examples is not None else (examples, None)
        count = 0 if images is None else len(images)
        padded = np.zeros((local_batch, *spec.image_shape), np.uint8)
        if count:
            padded[:count] = images
        mask = np.arange(local_batch) < count
        batch = {"image": padded, "mask": mask}
        if with_labels:
            batch["label"] = np.zeros((local_batch,), np.int32)
            batch["label"][:count] = labels
        yield batch
