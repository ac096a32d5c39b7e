"""Tests of validated random access to images (pixel_rnn_jax.data.sources)."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from pixel_rnn_jax import data


@pytest.fixture(scope="module")
def rgb32(tmp_path_factory):
    # Shared by the data tests of one session: each embedded set is prepared once.
    directory = str(tmp_path_factory.getbasetemp() / "pixel_rnn_jax_data")
    config = ml_collections.ConfigDict({"name": "embedded_rgb32", "data_dir": directory})
    return data.resolve_dataset(config)


@pytest.fixture(scope="module")
def binarized(rgb32):
    """The RGB patches read through the load-time static binarization (as for MNIST)."""
    return dataclasses.replace(rgb32, num_levels=2, binarize_seed=0)


def test_validate_image_accepts_valid_and_names_the_problem(rgb32):
    good = np.full((32, 32, 3), 255, np.uint8)
    data.validate_image(good, rgb32, "here")
    with pytest.raises(ValueError, match=r"here: image of shape \(28, 28, 1\)"):
        data.validate_image(np.zeros((28, 28, 1), np.uint8), rgb32, "here")
    with pytest.raises(ValueError, match="dtype float32"):
        data.validate_image(good.astype(np.float32), rgb32, "here")
    binary = dataclasses.replace(rgb32, num_levels=2)
    with pytest.raises(ValueError, match=r"values in \[255, 255\], expected \[0, 2\)"):
        data.validate_image(good, binary, "here")


def test_open_split_reads_uint8_images(rgb32):
    source = data.open_split(rgb32, "test")
    assert len(source) == rgb32.num_test
    image = source[17]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8


def test_batched_read_equals_single_reads(rgb32, binarized):
    for spec in (rgb32, binarized):
        source = data.open_split(spec, "train")
        indices = [5, 0, 4000, 5]
        for got, index in zip(source._getitems(indices), indices, strict=True):
            np.testing.assert_array_equal(got, source[index])


def test_static_binarization_is_fixed_per_example_and_unbiased(rgb32, binarized):
    raw = data.open_split(rgb32, "train")
    first = data.open_split(binarized, "train")
    second = data.open_split(binarized, "train")
    indices = range(0, 5700, 57)
    bits = np.stack([first[i] for i in indices])
    assert set(np.unique(bits)) == {0, 1}
    # Static: a fresh source gives the same bits for the same example.
    np.testing.assert_array_equal(bits, np.stack([second[i] for i in indices]))
    # Bernoulli(p = x / 255): the mean of the bits matches the mean intensity.
    intensity = np.stack([raw[i] for i in indices]) / 255.0
    assert abs(bits.mean() - intensity.mean()) < 0.01
    # Saturated pixels are deterministic.
    raw_values = np.stack([raw[i] for i in indices])
    assert (bits[raw_values == 255] == 1).all() and (bits[raw_values == 0] == 0).all()
    # Another seed gives other bits.
    other = data.open_split(dataclasses.replace(binarized, binarize_seed=1), "train")
    assert not np.array_equal(bits, np.stack([other[i] for i in indices]))


def test_open_split_rejects_unexpected_shape(rgb32):
    wrong = dataclasses.replace(rgb32, image_shape=(32, 32, 1))
    with pytest.raises(ValueError, match=r"image of shape \(32, 32, 3\), expected \(32, 32, 1\)"):
        data.open_split(wrong, "test")
