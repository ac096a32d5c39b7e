"""What `experiments.ood` scores, resolved and checked before anything is computed or written.

Every refusal is a one-line `UserError`: an unknown set, an unusable PNG folder, `--num`
beyond a set, a workdir without a checkpoint, reference models of another image shape, a
report already in the output directory. Tests call `resolve` directly (the entry point's
flags would clash with other entry points' in one process).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from typing import Any

import numpy as np
from absl import logging

from experiments.benchmarks import compression
from pixel_rnn_jax import data, errors, ood, train
from pixel_rnn_jax.coding import files
from pixel_rnn_jax.train import restore

ROLES = ("main", "background", "local")


@dataclasses.dataclass
class Inputs:
    """Everything a report needs, checked.

    Attributes:
      models: {role: LoadedCheckpoint} for 'main' and the optional 'background', 'local'.
      workdirs: {role: workdir}.
      spec: the main model's dataset.
      test_images: uint8 `[n, H, W, C]` in-distribution images (the reported split).
      fit_images: held-out in-distribution images to fit on (validation).
      train_images: training images (the typicality mean).
      out_images: {set name: uint8 `[m, H, W, C]`}.
      fit_split: the split `fit_images` come from.
      codecs: codec names of `compression.CODECS`.
    """

    models: dict[str, Any]
    workdirs: dict[str, str]
    spec: data.DatasetSpec
    test_images: np.ndarray
    fit_images: np.ndarray
    train_images: np.ndarray
    out_images: dict[str, np.ndarray]
    fit_split: str
    codecs: list[str]


def parse_sets(names) -> list[tuple[str, str | None]]:
    """`--out` names -> [(name, PNG directory or None)]; unknown names are refused."""
    sets = []
    for name in names:
        if name.startswith("png:"):
            sets.append((name, name[4:]))
        elif name in ood.SET_DESCRIPTIONS:
            sets.append((name, None))
        else:
            known = ", ".join([*ood.SET_DESCRIPTIONS, "png:DIR"])
            raise errors.ConfigError(f"--out: unknown set {name!r}; the known sets: {known}.")
    if not sets:
        raise errors.ConfigError("--out names no set.")
    return sets


def _check_same_images(main: data.DatasetSpec, other: data.DatasetSpec, role: str) -> None:
    mine = (tuple(main.image_shape), main.num_levels)
    theirs = (tuple(other.image_shape), other.num_levels)
    if mine != theirs:
        raise errors.ConfigError(
            f"The {role} model takes {theirs[0]} images with {theirs[1]} levels; the main model "
            f"takes {mine[0]} with {mine[1]} levels: train the {role} model on the same data."
        )


def _png_set(name: str, directory: str, spec, num: int | None) -> np.ndarray:
    if not os.path.isdir(directory):
        raise errors.ImageFileError(f"--out {name}: {directory} is not a directory.")
    if not os.listdir(directory):
        raise errors.ImageFileError(f"--out {name}: {directory} is empty; put PNG files in it.")
    images, _ = files.read_pngs(os.path.join(directory, "*"), spec.image_shape, spec.num_levels)
    if num is not None and num > len(images):
        raise errors.ConfigError(
            f"--num={num} is larger than set {name!r}, which has {len(images)} images."
        )
    return images[:num].astype(np.uint8)


def resolve(
    runs: dict[str, tuple[Any, str]],
    *,
    which: str,
    out: list[str],
    output: str,
    num: int | None = None,
    fit_split: str | None = None,
    fit_num: int = 5_000,
    codecs: list[str] | None = None,
    seed: int = 0,
) -> Inputs:
    """Checks every input, then loads the models and the images.

    Args:
      runs: {role: (config, workdir)} with 'main' and optionally 'background', 'local'.
      which: 'best' or 'latest' checkpoint of every run.
      out: the `--out` set names.
      output: the report directory; must not hold a report yet.
      num: images of the in-distribution split and of each set (None: all).
      fit_split: held-out split to fit on (None: the dataset's validation split).
      fit_num: images of the fit split and of the training split.
      codecs: codec names (None: all of the compression suite's).
      seed: seed of the random sets.

    Raises:
      UserError kinds, each a one-line message, before anything is written.
    """
    if os.path.exists(os.path.join(output, "report.json")):
        raise errors.OutputExistsError(
            f"{output} already holds a report; pass another --output or remove it first."
        )
    sets = parse_sets(out)
    codecs = list(codecs or compression.CODECS)
    unknown = [name for name in codecs if name not in compression.CODECS]
    if unknown:
        raise errors.ConfigError(
            f"--codecs: unknown {unknown}; the codecs: {', '.join(compression.CODECS)}."
        )
    for flag, value in (("--num", num), ("--fit_num", fit_num)):
        if value is not None and value < 1:
            raise errors.ConfigError(f"{flag}={value} must be positive.")
    config = runs["main"][0]
    spec = data.resolve_dataset(config.data)
    fit_split = fit_split or spec.validation_split
    if fit_split is None:
        raise errors.ConfigError(
            f"Dataset {spec.name!r} has no validation split to fit on; pass --fit_split, a "
            f"split that is neither trained on nor reported (its splits: "
            f"{sorted(spec.split_sizes)})."
        )
    restore.check_split(spec, fit_split)
    num_test = spec.split_sizes[spec.eval_split]
    if num is not None and num > num_test:
        raise errors.ConfigError(
            f"--num={num} is larger than the {spec.eval_split} split, which has {num_test} images."
        )
    png_sets = {name: _png_set(name, directory, spec, num) for name, directory in sets if directory}
    for role, (role_config, _) in runs.items():
        if role != "main":
            _check_same_images(spec, data.resolve_dataset(role_config.data), role)
    models = {}
    for role, (role_config, workdir) in runs.items():
        models[role] = train.load_checkpoint(role_config, workdir, which)
        logging.info("%s model: %s, step %d", role, workdir, models[role].step)
    test_images, _ = train.split_images(config, spec, spec.eval_split, num)
    out_images = {}
    for name, _ in sets:
        if name in png_sets:
            out_images[name] = png_sets[name]
            continue
        try:
            out_images[name] = ood.make_set(name, test_images, spec.num_levels, num, seed=seed)
        except ValueError as error:
            raise errors.ConfigError(f"--out {name}: {error}") from None
    fit_images, _ = train.split_images(config, spec, fit_split, fit_num)
    train_images, _ = train.split_images(config, spec, spec.train_split, fit_num)
    return Inputs(
        models=models,
        workdirs={role: workdir for role, (_, workdir) in runs.items()},
        spec=spec,
        test_images=test_images.astype(np.uint8),
        fit_images=fit_images,
        train_images=train_images,
        out_images=out_images,
        fit_split=fit_split,
        codecs=codecs,
    )


class ModelBits:
    """Per-pixel bits of one model, cached on disk by (run, step, images) when asked."""

    def __init__(self, loaded, workdir: str, cache_dir: str | None):
        self.loaded = loaded
        self._variables = {"params": loaded.params}
        self._cache = None
        if cache_dir:
            run = hashlib.sha256(os.path.abspath(workdir).encode()).hexdigest()[:12]
            self._cache = os.path.join(cache_dir, f"{run}_step{loaded.step}")

    def __call__(self, key: str, images: np.ndarray) -> np.ndarray:
        """`[n, H, W, C]` bits of `images` (`ood.pixel_bits`)."""
        path = None
        if self._cache:
            digest = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
            path = os.path.join(self._cache, f"{slug}_{digest}.npy")
            if os.path.exists(path):
                return np.load(path, allow_pickle=False).astype(np.float64)
        start = time.perf_counter()
        # float32, cached or not, so that a rerun from the cache gives the same report.
        bits = ood.pixel_bits(self.loaded.model, self._variables, images).astype(np.float32)
        logging.info("%s: %d images in %.1f s", key, len(images), time.perf_counter() - start)
        if path:
            os.makedirs(self._cache, exist_ok=True)
            np.save(path, bits, allow_pickle=False)
        return bits.astype(np.float64)


def codec_bits(
    images: np.ndarray, num_levels: int, codecs: list[str], cache_dir: str | None
) -> dict[str, np.ndarray]:
    """{codec: `[n]` each image's file size in bits}, L(x) of input complexity."""
    pixels = compression.codec_pixels(images, num_levels)
    digest = hashlib.sha256(pixels.tobytes()).hexdigest()[:16]
    out = {}
    for name in codecs:
        path = None
        if cache_dir:
            path = os.path.join(cache_dir, "codecs", f"{name.replace(' ', '_')}_{digest}.npy")
            if os.path.exists(path):
                out[name] = np.load(path, allow_pickle=False)
                continue
        encode = compression.CODECS[name]
        out[name] = np.asarray([8 * len(encode(image)) for image in pixels], np.float64)
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            np.save(path, out[name], allow_pickle=False)
    return out
