"""Random access to the images of one prepared split, validated.

An `ImageSource` wraps TFDS's array_record data source (numpy out, no
TensorFlow) and returns the image, `uint8 [height, width, channels]`,
statically binarized when the spec asks for it (with `with_labels`, the pair
`(image, int32 label)`). It implements Grain's random-access protocol
(`__len__`, `__getitem__`, batched `_getitems`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from pixel_rnn_jax.data.registry import REQUIRED_FILE_FORMAT, DatasetSpec, labelled_datasets


def validate_image(image: np.ndarray, spec: DatasetSpec, where: str) -> None:
    """Raises ValueError unless `image` fits `spec`.

    Args:
        image: One image, expected integer `[height, width, channels]` with
            values in `[0, spec.num_levels)`.
        spec: The dataset it comes from.
        where: Where the image was read, for the message.
    """
    if tuple(image.shape) != tuple(spec.image_shape):
        raise ValueError(
            f"{where}: image of shape {image.shape}, expected {spec.image_shape} "
            f"[height, width, channels] for dataset {spec.name!r}."
        )
    if image.dtype.kind not in "ui":
        raise ValueError(f"{where}: image dtype {image.dtype}, expected an integer type.")
    low, high = int(image.min()), int(image.max())
    if low < 0 or high >= spec.num_levels:
        raise ValueError(
            f"{where}: image values in [{low}, {high}], expected [0, {spec.num_levels}) "
            f"for dataset {spec.name!r}."
        )


class ImageSource:
    """The images of one split, `uint8 [height, width, channels]` each.

    With `spec.binarize_seed` set, pixel intensities `x` in [0, 255] become
    `1` with probability `x / 255`, drawn once per (seed, split, index): the
    same example always gets the same binary image (static binarization).
    """

    def __init__(self, spec: DatasetSpec, split: str, with_labels: bool = False):
        if with_labels and not spec.num_classes:
            raise ValueError(
                f"Dataset {spec.name!r} (requested as {spec.requested_name!r}) has no class "
                "labels; labelled datasets: "
                f"{', '.join(labelled_datasets())}."
            )
        self._spec = spec
        self._split = split
        self._with_labels = with_labels
        builder = tfds.builder_from_directory(spec.builder_dir, file_format=REQUIRED_FILE_FORMAT)
        self._source = builder.as_data_source(split=split)
        # The split name enters the seed so that train and test noise differ.
        self._split_key = zlib.crc32(split.encode())

    def __len__(self) -> int:
        return len(self._source)

    def __repr__(self) -> str:
        return f"ImageSource({self._spec.name!r}, split={self._split!r}, len={len(self)})"

    def _image(self, example: dict, index: int):
        image = np.asarray(example["image"], dtype=np.uint8)
        if self._spec.binarize_seed is not None:
            rng = np.random.default_rng([self._spec.binarize_seed, self._split_key, index])
            image = (rng.random(image.shape) * 255.0 < image).astype(np.uint8)
        if self._with_labels:
            return image, np.int32(example["label"])
        return image

    def __getitem__(self, index: int):
        return self._image(self._source[index], index)

    def _getitems(self, indices: Sequence[int]) -> list:
        # One batched array_record read instead of len(indices) single reads.
        examples = self._source.__getitems__(list(indices))
        return [self._image(ex, i) for ex, i in zip(examples, indices, strict=True)]


def open_split(spec: DatasetSpec, split: str, with_labels: bool = False) -> ImageSource:
    """Opens `split` of the resolved dataset and checks its first and last image.

    Args:
        spec: From `resolve_dataset`.
        split: TFDS split name, e.g. `spec.train_split`.
        with_labels: Return `(image, label)` pairs; the labels are checked to lie
            in `[0, spec.num_classes)` too.

    Returns:
        The validated `ImageSource`.

    Raises:
        ValueError: If the split is empty or an image has an unexpected
            shape, dtype or value range.
    """
    source = ImageSource(spec, split, with_labels)
    if len(source) == 0:
        raise ValueError(f"Split {split!r} of {spec.builder_dir} is empty.")
    # Cheap check: catches a wrong dataset or builder before a run starts.
    for index in {0, len(source) - 1}:
        where = f"{spec.builder_dir} split {split!r} example {index}"
        example = source[index]
        if with_labels:
            example, label = example
            if not 0 <= int(label) < spec.num_classes:
                raise ValueError(f"{where}: label {label}, expected [0, {spec.num_classes}).")
        validate_image(example, spec, where)
    return source
