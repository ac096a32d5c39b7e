"""Prepares the paper's datasets into the TFDS layout without TensorFlow.

TFDS's own builders for these datasets read their downloads with
`tf.io.gfile` and encode images with TensorFlow. The builders here subclass
them and replace only the reading: same name, version, configs and
`DatasetInfo` (features, splits, description), same example keys (so TFDS's
key-hash shuffle puts examples in the same on-disk order), images handed to
the `Image` feature as PNG bytes (or, for ImageNet, the archive's own bytes,
as TFDS stores them). The result, `<data_dir>/<name>[/<config>]/<version>/`
with `dataset_info.json` and array_record shards, is what `tfds build` writes
and what `resolve_dataset` reads.

Order of work in `prepare_dataset`: locate or download every original file,
verify every size and SHA-256, write the dataset into a staging directory
inside `data_dir`, check that `resolve_dataset` accepts it there, then rename
it into place. An interrupted run leaves only the staging directory, which no
loader looks at and the next run deletes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import glob
import inspect
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from pixel_rnn_jax.data import download, formats, registry, sources
from pixel_rnn_jax.data.download import PrepareError, RetryPolicy

OFFICIAL = "official"  # `source` meaning: each file's own URL, as TFDS downloads it.
_STAGING_PREFIX = ".prepare-"


def _png(image: np.ndarray) -> bytes:
    """Encodes uint8 `[height, width, channels]` (1 or 3 channels) as PNG, losslessly."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "PNG")
    return buffer.getvalue()


def _check_count(split: str, count: int, expected: Mapping[str, int] | None) -> None:
    """With verified official files, the counts must be TFDS's."""
    if expected is not None and expected[split] != count:
        raise formats.FormatError(
            f"split {split!r} has {count} examples, expected {expected[split]} (TFDS's count)."
        )


def _from_local_files(tfds_cls: type) -> type:
    """Returns a mixin making `tfds_cls`'s subclass read verified local files.

    The subclass keeps TFDS's metadata (README, citation) by pointing
    `pkg_dir_path`/`code_path` at TFDS's own module, whose default lookup
    needs the optional `importlib_resources` backport.
    """
    tfds_dir = epath.Path(os.path.dirname(inspect.getfile(tfds_cls)))

    class FromLocalFiles(tfds_cls, skip_registration=True):
        pkg_dir_path = tfds_dir

        @tfds.core.utils.classproperty
        @classmethod
        def code_path(cls) -> epath.Path:
            return epath.Path(inspect.getfile(tfds_cls))

        def __init__(
            self,
            *,
            files: Mapping[str, str],
            expected_counts: Mapping[str, int] | None = None,
            **kwargs,
        ):
            """Same as TFDS's builder, plus where its original files are.

            Args:
                files: `{original filename: local path}`, verified.
                expected_counts: `{split: examples}` to insist on (official
                    files), or None (other files, e.g. test fixtures).
                **kwargs: For `tfds.core.GeneratorBasedBuilder`.
            """
            self._files = dict(files)
            self._expected_counts = expected_counts
            super().__init__(**kwargs)

    return FromLocalFiles


class BinarizedMnist(
    _from_local_files(tfds.builder_cls("binarized_mnist")), skip_registration=True
):
    """TFDS's `binarized_mnist` from the three `.amat` files; key = line index."""

    name = "binarized_mnist"
    FILES = {
        "train": "binarized_mnist_train.amat",
        "validation": "binarized_mnist_valid.amat",
        "test": "binarized_mnist_test.amat",
    }

    def _split_generators(self, dl_manager):
        del dl_manager  # Files come verified from `prepare_dataset`.
        return {split: self._generate_examples(split) for split in self.FILES}

    def _generate_examples(self, split: str) -> Iterator:
        images = formats.read_amat(self._files[self.FILES[split]])  # [n, 28, 28, 1] in {0, 1}
        _check_count(split, len(images), self._expected_counts)
        for index, image in enumerate(images):
            yield index, {"image": _png(image)}


class _IdxImagesAndLabels:
    """Split generation shared by TFDS's IDX builders (`mnist`, `fashion_mnist`).

    Key = index in the file, as TFDS's own builders, so the on-disk order is theirs.
    """

    FILES = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }

    def _split_generators(self, dl_manager):
        del dl_manager  # Files come verified from `prepare_dataset`.
        return {split: self._generate_examples(split) for split in self.FILES}

    def _generate_examples(self, split: str) -> Iterator:
        images_file, labels_file = self.FILES[split]
        # With verified files the header must declare the official count: bounded reads.
        limit = (self._expected_counts or {}).get(split)
        images = formats.read_idx(self._files[images_file], (28, 28), limit)  # [n, 28, 28]
        labels = formats.read_idx(self._files[labels_file], (), limit)  # [n]
        if len(images) != len(labels) or labels.max(initial=0) >= 10:
            raise formats.FormatError(
                f"{labels_file}: {len(labels)} labels in [0, {labels.max(initial=0)}] for "
                f"{len(images)} images in {images_file}; expected one label in [0, 10) each."
            )
        _check_count(split, len(images), self._expected_counts)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"image": _png(image[..., None]), "label": int(label)}


class Mnist(
    _IdxImagesAndLabels, _from_local_files(tfds.builder_cls("mnist")), skip_registration=True
):
    """TFDS's `mnist` from the four IDX files."""

    name = "mnist"


class FashionMnist(
    _IdxImagesAndLabels,
    _from_local_files(tfds.builder_cls("fashion_mnist")),
    skip_registration=True,
):
    """TFDS's `fashion_mnist` from the four IDX files (Zalando's, or Debian's re-compressed)."""

    name = "fashion_mnist"


class Cifar10(_from_local_files(tfds.builder_cls("cifar10")), skip_registration=True):
    """TFDS's `cifar10` from the binary tarball; key = index, id = `train_00042`."""

    name = "cifar10"
    FILE = "cifar-10-binary.tar.gz"

    def _split_generators(self, dl_manager):
        del dl_manager
        contents = formats.read_cifar10_tarball(self._files[self.FILE])
        # As TFDS's builder: the class names come from batches.meta.txt.
        self.info.features["label"].names = contents["label_names"]
        return {
            split: self._generate_examples(split, *contents[split]) for split in ("train", "test")
        }

    def _generate_examples(self, split: str, images: np.ndarray, labels: np.ndarray) -> Iterator:
        _check_count(split, len(images), self._expected_counts)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            yield index, {"id": f"{split}_{index:05d}", "image": _png(image), "label": int(label)}


class DownsampledImagenet(
    _from_local_files(tfds.builder_cls("downsampled_imagenet")), skip_registration=True
):
    """TFDS's `downsampled_imagenet` from its two tars; key = member path."""

    name = "downsampled_imagenet"

    def _split_generators(self, dl_manager):
        del dl_manager
        size = self.builder_config.name  # "32x32" or "64x64".
        return {
            "train": self._generate_examples(f"train_{size}.tar"),
            "validation": self._generate_examples(f"valid_{size}.tar"),
        }

    def _generate_examples(self, filename: str) -> Iterator:
        side = int(self.builder_config.name.split("x")[0])
        for key, encoded in formats.iter_image_archive(self._files[filename], side):
            # TFDS's iter_archive skips hidden and backup members; so do we.
            base = os.path.basename(key)
            if key.startswith(".") or base.startswith(".") or key.endswith("~"):
                continue
            yield key, {"image": encoded}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to prepare one dataset name.

    Attributes:
        builder: Builder class above.
        config: TFDS builder config name, or None.
        checksums_of: TFDS builder whose shipped checksums list the files.
        files: Original file names.
        expected_counts: TFDS's `{split: examples}` for the official files, or
            None where not checked (ImageNet: counted by reading every member).
        downloadable: False where the files need a login (then only
            `--source=DIR` works).
        content_digests: `{filename: ContentDigest}` of the decompressed
            content of `.gz` files, where known: a re-compressed copy whose
            archive digest differs from TFDS's is then accepted by content.
    """

    builder: type
    config: str | None
    checksums_of: str
    files: tuple[str, ...]
    expected_counts: Mapping[str, int] | None
    downloadable: bool = True
    content_digests: Mapping[str, download.ContentDigest] = dataclasses.field(default_factory=dict)


# The decompressed IDX files of Fashion-MNIST, as Zalando published them and as Debian's
# `dataset-fashion-mnist` (0.0~git20200523.55506a9-1) ships them re-compressed, without the
# file name in the gzip header: their archive digests differ from TFDS's, their content not.
FASHION_MNIST_CONTENT = {
    "train-images-idx3-ubyte.gz": download.ContentDigest(
        47_040_016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    "train-labels-idx1-ubyte.gz": download.ContentDigest(
        60_008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    "t10k-images-idx3-ubyte.gz": download.ContentDigest(
        7_840_016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    "t10k-labels-idx1-ubyte.gz": download.ContentDigest(
        10_008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
}


def _imagenet(size: str) -> Recipe:
    return Recipe(
        DownsampledImagenet,
        size,
        "downsampled_imagenet",
        (f"train_{size}.tar", f"valid_{size}.tar"),
        None,
        downloadable=False,
    )


RECIPES: Mapping[str, Recipe] = {
    "binarized_mnist": Recipe(
        BinarizedMnist,
        None,
        "binarized_mnist",
        tuple(BinarizedMnist.FILES.values()),
        {"train": 50_000, "validation": 10_000, "test": 10_000},
    ),
    "mnist": Recipe(
        Mnist,
        None,
        "mnist",
        tuple(f for pair in Mnist.FILES.values() for f in pair),
        {"train": 60_000, "test": 10_000},
    ),
    "fashion_mnist": Recipe(
        FashionMnist,
        None,
        "fashion_mnist",
        tuple(f for pair in FashionMnist.FILES.values() for f in pair),
        {"train": 60_000, "test": 10_000},
        content_digests=FASHION_MNIST_CONTENT,
    ),
    "cifar10": Recipe(Cifar10, None, "cifar10", (Cifar10.FILE,), {"train": 50_000, "test": 10_000}),
    "downsampled_imagenet/32x32": _imagenet("32x32"),
    "downsampled_imagenet/64x64": _imagenet("64x64"),
}


def manual_download_instructions(name: str, checksums: Mapping[str, download.FileChecksum]) -> str:
    """One line saying which files to fetch by hand and how to pass them."""
    files = ", ".join(f"{c.filename} ({c.size:,} bytes)" for c in checksums.values())
    return (
        f"{name} cannot be downloaded automatically (image-net.org requires a login): download "
        f"{files} - the original PixelRNN release of downsampled ImageNet, tars of PNGs, once "
        "at http://image-net.org/small/, not the later Imagenet32/64 .npz files - from "
        "https://image-net.org/download-images into one directory DIR, then rerun with "
        "--source=DIR."
    )


def _staging_name(name: str) -> str:
    """The stem of a dataset's lock file and staging folders in data_dir (no '/' in it)."""
    return f"{_STAGING_PREFIX}{name.replace('/', '_')}"


@contextlib.contextmanager
def _lock(data_dir: str, name: str) -> Iterator[None]:
    """Serialises preparations of one dataset into one data_dir (POSIX)."""
    path = os.path.join(data_dir, f"{_staging_name(name)}.lock")
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _gather_files(
    name: str,
    recipe: Recipe,
    checksums: Mapping[str, download.FileChecksum],
    source: str,
    data_dir: str,
    verify: bool,
    policy: RetryPolicy,
) -> dict[str, str]:
    """Returns `{filename: verified local path}`; removes a download that fails verification."""
    if not recipe.downloadable and (source == OFFICIAL or download.is_url(source)):
        raise PrepareError(manual_download_instructions(name, checksums))
    download_dir = os.path.join(data_dir, "downloads", recipe.checksums_of)
    urls = {f: checksums[f].url for f in recipe.files}
    try:
        limits = {
            f: download.size_limit(checksums[f], recipe.content_digests.get(f), verify)
            for f in recipe.files
        }
        paths = download.locate_files(urls, source, download_dir, policy, limits)
    except download.DownloadError as error:
        if source != OFFICIAL and not download.is_url(source):
            raise
        raise download.DownloadError(
            f"{error} To prepare offline instead, download {', '.join(recipe.files)} (from "
            f"{', '.join(sorted({u.rsplit('/', 1)[0] + '/' for u in urls.values()}))}) into "
            "a directory DIR and rerun with --source=DIR."
        ) from error
    if verify:
        for filename, path in paths.items():
            try:
                download.verify_file(
                    path, checksums[filename], recipe.content_digests.get(filename)
                )
            except download.ChecksumError:
                if os.path.dirname(path) == download_dir:
                    os.remove(path)  # A corrupt download would otherwise be reused forever.
                raise
    return paths


def _final_dir(data_dir: str, name: str, recipe: Recipe) -> str:
    builder = recipe.builder(
        data_dir=data_dir, config=recipe.config, files={}, file_format="array_record"
    )
    return os.fspath(builder.data_path)


def _remove_stale_staging(data_dir: str, name: str) -> None:
    pattern = os.path.join(data_dir, f"{_staging_name(name)}-*")
    for stale in glob.glob(pattern):
        logging.info("Removing %s, left by an interrupted preparation.", stale)
        shutil.rmtree(stale, ignore_errors=True)


def _check_readable(name: str, staging: str) -> None:
    """Opens the staged copy exactly as a training run would (strict, every split)."""
    spec = registry.resolve_dataset({"name": name, "data_dir": staging, "strict": True})
    for split in spec.split_sizes:
        sources.open_split(spec, split)


def _check_source_directory(source: str, recipe: Recipe) -> None:
    if not os.path.isdir(os.path.expanduser(source)):
        raise download.DownloadError(
            f"--source={source} is not a directory; it must hold {', '.join(recipe.files)}."
        )


def _already_prepared(name: str, final_dir: str) -> bool:
    """True if a complete dataset is in place; PrepareError if something else is there."""
    if os.path.isfile(os.path.join(final_dir, "dataset_info.json")):
        logging.info("%s is already prepared in %s.", name, final_dir)
        return True
    if os.path.exists(final_dir):
        raise PrepareError(
            f"{final_dir} exists but holds no dataset_info.json (not written by this tool, "
            "which only moves complete datasets into place); remove it and rerun."
        )
    return False


def _write_then_move(
    name: str,
    recipe: Recipe,
    paths: Mapping[str, str],
    data_dir: str,
    final_dir: str,
    expected_counts,
    after_write: Callable[[str], None] | None,
) -> None:
    """Writes the dataset into a staging folder, reads it back, then renames it into place.

    The staging folder is removed whatever happens, so an interrupted or failed preparation
    leaves nothing that `resolve_dataset` accepts.
    """
    staging = tempfile.mkdtemp(prefix=f"{_staging_name(name)}-", dir=data_dir)
    try:
        builder = recipe.builder(
            data_dir=staging,
            config=recipe.config,
            files=paths,
            expected_counts=expected_counts,
            file_format="array_record",
        )
        builder.download_and_prepare(
            file_format="array_record",
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
        if after_write is not None:
            after_write(staging)
        _check_readable(name, staging)
        os.makedirs(os.path.dirname(final_dir), exist_ok=True)
        # One rename of a directory on the same filesystem: all or nothing.
        os.rename(os.fspath(builder.data_path), final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def prepare_dataset(
    name: str,
    data_dir: str,
    source: str = OFFICIAL,
    verify_checksums: bool = True,
    policy: RetryPolicy = download.DEFAULT_POLICY,
    after_write: Callable[[str], None] | None = None,
) -> str:
    """Prepares one of the paper's datasets into `data_dir`.

    The steps: the recipe and its files' checksums; the files gathered and verified (from a
    local directory before `data_dir` is touched, downloads under the dataset's lock);
    unless the dataset is already in place, written into a staging folder, read back as a
    training run reads it, and renamed into place in one step (`_write_then_move`).

    Args:
        name: A key of `RECIPES` (the `data.name` the configs use).
        data_dir: TFDS data directory; created if missing.
        source: `'official'` (the URLs TFDS downloads), a URL prefix of a
            mirror holding the files under their original names, or a local
            directory holding them.
        verify_checksums: Check every file's size and SHA-256 against TFDS's
            shipped checksums, or where the recipe knows it the SHA-256 of its
            decompressed content (and, where known, the example counts),
            before writing anything. Files from a local directory are checked
            before `data_dir` is touched at all.
        policy: Timeout and retries of each download.
        after_write: Called with the staging directory after the dataset is
            written and before it is checked and moved (tests interrupt here).

    Returns:
        The prepared builder directory `<data_dir>/<name>/<version>`.

    Raises:
        PrepareError: With a one-line message: a failed download, a file that
            is missing, fails verification or is malformed, or an unusable
            `data_dir`. Nothing is then left that `resolve_dataset` accepts.
        ValueError: For an unknown `name`.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown dataset {name!r}; preparable: {sorted(RECIPES)}.")
    recipe = RECIPES[name]
    data_dir = registry.resolve_data_dir(data_dir)
    checksums = download.tfds_checksums(recipe.checksums_of)
    checksums = {f: checksums[f] for f in recipe.files}
    gather = functools.partial(
        _gather_files, name, recipe, checksums, source, data_dir, verify_checksums, policy
    )
    local = source != OFFICIAL and not download.is_url(source)
    if local:  # files on disk are verified before anything is written under data_dir
        _check_source_directory(source, recipe)
        paths = gather()
    os.makedirs(data_dir, exist_ok=True)
    final_dir = _final_dir(data_dir, name, recipe)
    with _lock(data_dir, name):
        if _already_prepared(name, final_dir):
            return final_dir
        _remove_stale_staging(data_dir, name)
        if not local:
            paths = gather()
        _write_then_move(
            name,
            recipe,
            paths,
            data_dir,
            final_dir,
            expected_counts=recipe.expected_counts if verify_checksums else None,
            after_write=after_write,
        )
    logging.info("Prepared %s in %s.", name, final_dir)
    return final_dir
