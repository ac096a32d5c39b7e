"""Tests of dataset name resolution and fallback (pixel_rnn_jax.data.registry)."""

import inspect
import io
import json
import logging
import os
import shutil
import signal
import socket

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from pixel_rnn_jax import data
from pixel_rnn_jax.data import registry

REAL_TO_FALLBACK = {
    "binarized_mnist": "embedded_binarized_mnist",
    "mnist": "embedded_binarized_mnist",
    "fashion_mnist": "embedded_mnist",
    "cifar10": "embedded_rgb32",
    "downsampled_imagenet/32x32": "embedded_rgb32",
    "downsampled_imagenet/64x64": "embedded_rgb64",
}


def _config(name, data_dir, strict):
    return ml_collections.ConfigDict({"name": name, "data_dir": data_dir, "strict": strict})


def _encode(image, image_format):
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, image_format)
    return buffer.getvalue()


class _FakeRealDataset(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Stands in for a real TFDS dataset prepared elsewhere: tiny, array_record."""

    VERSION = tfds.core.Version("3.0.1")
    SHAPE = (28, 28, 1)
    SPLITS = {"train": 20, "test": 10}
    FORMAT = "png"
    DECLARED_SHAPE = SHAPE

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(inspect.getfile(cls))

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=self.DECLARED_SHAPE, encoding_format=self.FORMAT
                    ),
                    "label": np.int64,
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {
            s: self._generate_examples(n, seed) for seed, (s, n) in enumerate(self.SPLITS.items())
        }

    def _generate_examples(self, num, seed):
        rng = np.random.RandomState(seed)
        for i in range(num):
            image = rng.randint(0, 256, self.SHAPE, np.uint8)
            yield i, {"image": _encode(image, self.FORMAT), "label": i}


class _FakeMnist(_FakeRealDataset, skip_registration=True):
    name = "mnist"


class _FakeImagenet32(_FakeRealDataset, skip_registration=True):
    name = "downsampled_imagenet"
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="32x32")]
    SHAPE = (32, 32, 3)
    SPLITS = {"train": 12, "validation": 6}
    # Like TFDS's real builder: JPEGs of undeclared height and width.
    FORMAT = "jpeg"
    DECLARED_SHAPE = (None, None, 3)


class _FakeCifarWrongShape(_FakeRealDataset, skip_registration=True):
    name = "cifar10"
    SHAPE = (28, 28, 3)
    DECLARED_SHAPE = SHAPE


def _prepare(builder_cls, data_dir):
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare(file_format="array_record")
    return builder


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    """A data_dir with the embedded sets prepared and no real dataset (shared per session)."""
    directory = str(tmp_path_factory.getbasetemp() / "pixel_rnn_jax_data")
    for name in data.EMBEDDED_BUILDERS:
        data.load_embedded_builder(name, directory)
    return directory


@pytest.fixture(scope="module")
def fake_mnist_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fake_mnist")
    _prepare(_FakeMnist, directory)
    return directory


@pytest.fixture
def no_network(monkeypatch):
    """Records and refuses every DNS lookup or socket connection; fails if slow."""
    attempts = []

    def refuse(name):
        def refused(*args, **kwargs):
            attempts.append((name, args))
            raise OSError(f"network disabled in test ({name})")

        return refused

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))

    def timeout(signum, frame):
        raise TimeoutError("dataset resolution hung (> 60 s)")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield attempts
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_unknown_name_lists_known_names(tmp_path):
    with pytest.raises(ValueError, match="Known names") as info:
        data.resolve_dataset(_config("imagenet", str(tmp_path), True))
    for name in registry.KNOWN_DATASETS:
        assert name in str(info.value)


@pytest.mark.parametrize(
    "name, shape, levels, num_train, num_test, num_classes",
    [
        ("embedded_binarized_mnist", (28, 28, 1), 2, 4000, 1000, 10),  # the digits' labels
        ("embedded_mnist", (28, 28, 1), 256, 4000, 1000, 10),
        ("embedded_rgb32", (32, 32, 3), 256, 5700, 1700, 0),
        ("embedded_rgb64", (64, 64, 3), 256, 1242, 322, 0),
    ],
)
def test_embedded_names_resolve_without_fallback(
    embedded_dir, name, shape, levels, num_train, num_test, num_classes
):
    spec = data.resolve_dataset(_config(name, embedded_dir, True))
    assert spec == data.DatasetSpec(
        name=name,
        requested_name=name,
        image_shape=shape,
        num_levels=levels,
        num_train=num_train,
        num_test=num_test,
        fallback_reason=None,
        data_dir=embedded_dir,
        builder_dir=os.path.join(embedded_dir, name, "1.0.0"),
        split_sizes={"train": num_train, "test": num_test},
        num_classes=num_classes,
    )


def test_labelled_datasets_are_the_ones_with_class_labels():
    assert data.labelled_datasets() == [
        "cifar10",
        "embedded_binarized_mnist",
        "embedded_mnist",
        "fashion_mnist",
        "mnist",
    ]


@pytest.mark.parametrize(
    "name,num_classes",
    [
        ("mnist", 10),  # the stand-in's labels stand in for MNIST's
        ("fashion_mnist", 10),  # the 256-level digits and their labels
        ("binarized_mnist", 0),  # no labels, even though its stand-in has them
        ("cifar10", 0),  # labelled, but its stand-in (photo patches) is not
        ("downsampled_imagenet/32x32", 0),
    ],
)
def test_a_fallback_is_labelled_only_if_the_requested_and_the_stand_in_sets_are(
    embedded_dir, name, num_classes, no_network
):
    with pytest.warns(data.DatasetFallbackWarning):
        spec = data.resolve_dataset(_config(name, embedded_dir, False))
    assert spec.num_classes == num_classes
    if not num_classes:
        with pytest.raises(ValueError, match="has no class labels; labelled datasets: cifar10"):
            data.open_split(spec, spec.train_split, with_labels=True)


@pytest.mark.parametrize("name", sorted(REAL_TO_FALLBACK))
def test_strict_missing_dataset_says_how_to_prepare(embedded_dir, name, no_network):
    with pytest.raises(data.DatasetNotPreparedError) as info:
        data.resolve_dataset(_config(name, embedded_dir, True))
    message = str(info.value)
    command = f"python -m experiments.prepare_data --dataset={name} --data_dir={embedded_dir}"
    assert command in message
    # ImageNet cannot be downloaded without a login: the command must ask for the files.
    assert ("--source=DIR_WITH_THE_TAR_FILES" in message) == name.startswith(
        "downsampled_imagenet/"
    )
    assert "tfds build" not in message
    assert os.path.join(embedded_dir, *name.split("/")) in message
    assert isinstance(info.value, ValueError)
    assert not no_network


@pytest.mark.parametrize("name", sorted(REAL_TO_FALLBACK))
def test_non_strict_falls_back_loudly(embedded_dir, name, no_network, caplog):
    with (
        pytest.warns(data.DatasetFallbackWarning, match=REAL_TO_FALLBACK[name]),
        caplog.at_level(logging.WARNING),
    ):
        spec = data.resolve_dataset(_config(name, embedded_dir, False))
    assert spec.name == REAL_TO_FALLBACK[name]
    assert spec.requested_name == name
    assert f"requested dataset {name!r}" in spec.fallback_reason
    assert "experiments.prepare_data" in spec.fallback_reason
    # The stand-in has no validation split: the runner must not select on one.
    assert spec.validation_split is None and spec.selection_split == "test"
    assert any("FALLBACK" in record.getMessage() for record in caplog.records)
    assert spec.num_levels == (2 if name in ("binarized_mnist", "mnist") else 256)
    json.dumps(spec.fallback_reason)  # The runner writes it into config.json.
    assert not no_network


def test_strict_missing_data_dir_is_named_and_not_created(tmp_path, no_network):
    missing = tmp_path / "nowhere"
    with pytest.raises(data.DatasetNotPreparedError, match=f"{missing} does not exist"):
        data.resolve_dataset(_config("cifar10", str(missing), True))
    assert not missing.exists()


def test_non_strict_missing_data_dir_is_created_for_the_fallback(tmp_path, no_network):
    missing = tmp_path / "new_dir"
    with pytest.warns(data.DatasetFallbackWarning):
        spec = data.resolve_dataset(_config("downsampled_imagenet/64x64", str(missing), False))
    assert spec.name == "embedded_rgb64"
    assert os.path.isdir(os.path.join(missing, "embedded_rgb64", "1.0.0"))


def test_none_data_dir_means_tfds_default(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(tmp_path))
    spec = data.resolve_dataset(_config("embedded_rgb64", None, True))
    assert spec.data_dir == str(tmp_path)


def test_missing_strict_field_means_strict(embedded_dir):
    with pytest.raises(data.DatasetNotPreparedError):
        data.resolve_dataset(ml_collections.ConfigDict({"name": "mnist", "data_dir": embedded_dir}))


def test_prepared_real_dataset_is_used(fake_mnist_dir, no_network):
    config = _config("mnist", str(fake_mnist_dir), True)
    spec = data.resolve_dataset(config)
    assert spec.name == "mnist" and spec.fallback_reason is None
    assert (spec.num_train, spec.num_test, spec.num_levels) == (20, 10, 2)
    assert spec.binarize_seed == registry.MNIST_LOAD_BINARIZE_SEED
    assert spec.builder_dir == os.path.join(fake_mnist_dir, "mnist", "3.0.1")
    batch = next(data.TrainIterator(spec, config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 28, 28, 1)
    assert set(np.unique(batch["image"])) == {0, 1}
    assert spec.num_classes == 10
    labelled = next(data.TrainIterator(spec, config, global_batch_size=4, seed=0, with_labels=True))
    np.testing.assert_array_equal(labelled["image"], batch["image"])
    assert labelled["label"].dtype == np.int32 and labelled["label"].shape == (4,)
    assert not no_network


def test_prepared_dataset_with_config_and_validation_split(tmp_path, no_network):
    _prepare(_FakeImagenet32, tmp_path)
    spec = data.resolve_dataset(_config("downsampled_imagenet/32x32", str(tmp_path), True))
    assert (spec.name, spec.eval_split, spec.num_train, spec.num_test) == (
        "downsampled_imagenet/32x32",
        "validation",
        12,
        6,
    )
    assert spec.num_levels == 256 and spec.binarize_seed is None
    # The paper reports ImageNet on validation, so it is both selection and report split.
    assert spec.validation_split == spec.selection_split == "validation"
    assert dict(spec.split_sizes) == {"train": 12, "validation": 6}
    config = _config("downsampled_imagenet/32x32", str(tmp_path), True)
    masks = [b["mask"] for b in data.eval_batches(spec, config, global_batch_size=4)]
    assert sum(m.sum() for m in masks) == 6


class _FakeBinarizedMnist(_FakeRealDataset, skip_registration=True):
    name = "binarized_mnist"
    VERSION = tfds.core.Version("1.0.0")
    SPLITS = {"train": 8, "validation": 5, "test": 3}

    def _generate_examples(self, num, seed):
        rng = np.random.RandomState(seed)
        for i in range(num):
            image = rng.randint(0, 2, self.SHAPE, np.uint8)
            yield i, {"image": _encode(image, self.FORMAT), "label": i}


def test_validation_split_is_known_and_any_split_reads_by_name(tmp_path, no_network):
    _prepare(_FakeBinarizedMnist, tmp_path)
    config = _config("binarized_mnist", str(tmp_path), True)
    spec = data.resolve_dataset(config)
    assert (spec.validation_split, spec.selection_split, spec.eval_split) == (
        "validation",
        "validation",
        "test",
    )
    assert [spec.num_examples(s) for s in ("train", "validation", "test")] == [8, 5, 3]
    with pytest.raises(ValueError, match=r"no split 'valid'.*\['test', 'train', 'validation'\]"):
        spec.num_examples("valid")
    for split, size in (("validation", 5), ("test", 3)):
        batches = list(data.eval_batches(spec, config, global_batch_size=4, split=split))
        assert sum(int(b["mask"].sum()) for b in batches) == size
    assert len(data.open_split(spec, "validation")) == 5


def test_dataset_missing_its_validation_split_is_rejected(tmp_path):
    class _NoValidation(_FakeBinarizedMnist, skip_registration=True):
        name = "binarized_mnist"
        SPLITS = {"train": 4, "test": 2}

    _prepare(_NoValidation, tmp_path)
    with pytest.raises(ValueError, match="expected 'validation'"):
        data.resolve_dataset(_config("binarized_mnist", str(tmp_path), True))


def test_datasets_without_validation_split_say_so(embedded_dir, fake_mnist_dir):
    assert (
        data.resolve_dataset(_config("mnist", str(fake_mnist_dir), True)).validation_split is None
    )
    for name in data.EMBEDDED_BUILDERS:
        assert data.resolve_dataset(_config(name, embedded_dir, True)).validation_split is None
    assert registry.KNOWN_DATASETS["cifar10"].validation_split is None


def test_no_network_guard_refuses_and_records(no_network):
    with pytest.raises(OSError, match="network disabled"):
        socket.create_connection(("storage.googleapis.com", 443), timeout=1)
    with pytest.raises(OSError, match="network disabled"):
        socket.getaddrinfo("storage.googleapis.com", 443)
    assert [name for name, _ in no_network] == ["create_connection", "getaddrinfo"]


def test_tfrecord_only_dataset_is_not_usable(fake_mnist_dir, tmp_path, no_network):
    shutil.copytree(fake_mnist_dir, tmp_path, dirs_exist_ok=True)
    info_path = tmp_path / "mnist" / "3.0.1" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(data.DatasetNotPreparedError, match="file_format='array_record'"):
        data.resolve_dataset(_config("mnist", str(tmp_path), True))
    with pytest.warns(data.DatasetFallbackWarning, match="tfrecord"):
        spec = data.resolve_dataset(_config("mnist", str(tmp_path), False))
    assert spec.name == "embedded_binarized_mnist"


def test_incomplete_dataset_is_not_prepared(fake_mnist_dir, tmp_path):
    shutil.copytree(fake_mnist_dir, tmp_path, dirs_exist_ok=True)
    builder_dir = tmp_path / "mnist" / "3.0.1"
    for path in builder_dir.glob("mnist-test.array_record*"):
        path.unlink()
    with pytest.raises(data.DatasetNotPreparedError, match="incomplete"):
        data.resolve_dataset(_config("mnist", str(tmp_path), True))


def test_prepared_dataset_with_wrong_shape_raises_even_when_not_strict(tmp_path):
    _prepare(_FakeCifarWrongShape, tmp_path)
    with pytest.raises(ValueError, match=r"\(28, 28, 3\)"):
        data.resolve_dataset(_config("cifar10", str(tmp_path), False))


def test_gcs_is_disabled_in_installed_tfds():
    # resolve_dataset never calls the GCS helpers; this guards TFDS's default too.
    from tensorflow_datasets.core.utils import gcs_utils

    assert gcs_utils._is_gcs_disabled
