"""Tests of the Grain loaders, host sharding and eval padding (pixel_rnn_jax.data.pipeline)."""

import collections
import json

import ml_collections
import numpy as np
import pytest

from pixel_rnn_jax import data


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    # Shared by the data tests of one session: each embedded set is prepared once.
    directory = str(tmp_path_factory.getbasetemp() / "pixel_rnn_jax_data")
    return ml_collections.ConfigDict(
        {"name": "embedded_rgb64", "data_dir": directory, "strict": True}
    )


@pytest.fixture(scope="module")
def spec(config):
    return data.resolve_dataset(config)  # 1,242 train / 322 test images [64, 64, 3].


def _keys(images):
    return [image.tobytes() for image in images]


@pytest.fixture(scope="module")
def split_keys(spec):
    """Counter of image bytes per split: what one full pass must produce."""
    return {
        split: collections.Counter(_keys(data.open_split(spec, split)._getitems(range(n))))
        for split, n in (("train", spec.num_train), ("test", spec.num_test))
    }


def _take(iterator, num):
    return [next(iterator)["image"] for _ in range(num)]


@pytest.fixture(scope="module")
def mnist(config):
    """The labelled embedded MNIST (10 classes), in the same data dir."""
    mnist_config = ml_collections.ConfigDict(
        {**config.to_dict(), "name": "embedded_binarized_mnist"}
    )
    return data.resolve_dataset(mnist_config), mnist_config


def test_labels_come_with_the_same_images_in_the_same_order(mnist):
    spec, config = mnist
    plain = data.TrainIterator(spec, config, global_batch_size=16, seed=2)
    labelled = data.TrainIterator(spec, config, global_batch_size=16, seed=2, with_labels=True)
    source = data.open_split(spec, "train", with_labels=True)
    by_image = {}
    for image, label in source._getitems(range(len(source))):
        by_image.setdefault(image.tobytes(), set()).add(int(label))
    for _ in range(3):
        batch, with_labels = next(plain), next(labelled)
        assert set(with_labels) == {"image", "label"}
        np.testing.assert_array_equal(batch["image"], with_labels["image"])
        assert with_labels["label"].dtype == np.int32
        for image, label in zip(with_labels["image"], with_labels["label"], strict=True):
            assert int(label) in by_image[image.tobytes()]
    # The state does not depend on the labels: a labelled run resumes an unlabelled one's.
    labelled.set_state(plain.get_state())
    np.testing.assert_array_equal(next(labelled)["image"], next(plain)["image"])


def test_eval_labels_are_padded_like_the_images(mnist):
    spec, config = mnist
    batches = list(data.eval_batches(spec, config, global_batch_size=48, with_labels=True))
    labels = np.concatenate([b["label"][b["mask"]] for b in batches])
    assert len(labels) == spec.num_test and set(labels) == set(range(10))
    last = batches[-1]
    assert (last["label"][~last["mask"]] == 0).all() and (~last["mask"]).any()


def test_check_global_batch():
    assert data.check_global_batch(32, num_devices=8, process_count=2) == 16
    with pytest.raises(ValueError) as info:
        data.check_global_batch(30, num_devices=8, process_count=2)
    message = str(info.value)
    assert "global_batch_size=30" in message and "8 devices" in message
    assert "24 or 32" in message
    with pytest.raises(ValueError, match="Nearest valid sizes: 8"):
        data.check_global_batch(4, num_devices=8, process_count=1)
    with pytest.raises(ValueError, match="multiple of process_count"):
        data.check_global_batch(16, num_devices=3, process_count=2)


def test_train_batches_have_local_shape(spec, config):
    iterator = data.TrainIterator(spec, config, global_batch_size=16, seed=0, process_count=2)
    batch = next(iterator)
    assert set(batch) == {"image"}
    assert batch["image"].shape == (8, 64, 64, 3) and batch["image"].dtype == np.uint8


def test_train_is_deterministic_per_seed(spec, config):
    first = _take(data.TrainIterator(spec, config, global_batch_size=16, seed=3), 4)
    again = _take(data.TrainIterator(spec, config, global_batch_size=16, seed=3), 4)
    other = _take(data.TrainIterator(spec, config, global_batch_size=16, seed=4), 4)
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    assert not np.array_equal(np.stack(first), np.stack(other))


def test_each_epoch_is_a_new_permutation_of_the_split(spec, config, split_keys):
    # 1242 = 69 * 18: epochs align with batches.
    iterator = data.TrainIterator(spec, config, global_batch_size=18, seed=0)
    epochs = [np.concatenate(_take(iterator, 69)) for _ in range(2)]
    for epoch in epochs:
        assert collections.Counter(_keys(epoch)) == split_keys["train"]
    assert _keys(epochs[0]) != _keys(epochs[1])


def test_nearby_seeds_do_not_share_epoch_orders(spec, config):
    # Grain reseeds epoch e with seed + e; the pipeline must not inherit that.
    seed0 = data.TrainIterator(spec, config, global_batch_size=18, seed=0)
    _take(seed0, 69)
    second_epoch_of_seed0 = _keys(np.concatenate(_take(seed0, 69)))
    seed1 = data.TrainIterator(spec, config, global_batch_size=18, seed=1)
    first_epoch_of_seed1 = _keys(np.concatenate(_take(seed1, 69)))
    assert second_epoch_of_seed0 != first_epoch_of_seed1


def test_close_stops_the_iterator(spec, config):
    iterator = data.TrainIterator(spec, config, global_batch_size=16, seed=0)
    next(iterator)
    iterator.close()
    with pytest.raises(ValueError):
        next(iterator)


def test_process_shards_are_disjoint_and_cover_the_split(spec, config, split_keys):
    # 2 processes, 621 examples each = 69 batches of 9.
    shards = [
        collections.Counter(
            _keys(
                np.concatenate(
                    _take(
                        data.TrainIterator(
                            spec, config, 18, seed=0, process_index=i, process_count=2
                        ),
                        69,
                    )
                )
            )
        )
        for i in range(2)
    ]
    assert shards[0] + shards[1] == split_keys["train"]
    assert not set(shards[0]) & set(shards[1])


def test_restored_state_continues_exactly(spec, config):
    saved = data.TrainIterator(spec, config, global_batch_size=16, seed=7)
    _take(saved, 80)  # Past the first epoch (77.6 batches).
    state = json.loads(json.dumps(saved.get_state()))
    expected = _take(saved, 3)
    restored = data.TrainIterator(spec, config, global_batch_size=16, seed=7)
    restored.set_state(state)
    assert restored.get_state() == state
    np.testing.assert_array_equal(np.stack(_take(restored, 3)), np.stack(expected))


def test_state_from_other_settings_is_refused(spec, config):
    state = data.TrainIterator(spec, config, global_batch_size=16, seed=0).get_state()
    other = data.TrainIterator(spec, config, global_batch_size=16, seed=1)
    with pytest.raises(ValueError, match="seed"):
        other.set_state(state)
    with pytest.raises(ValueError, match="next_batch"):
        other.set_state({**other.get_state(), "next_batch": -1})


def test_config_must_match_spec(spec):
    other = ml_collections.ConfigDict({"name": "embedded_rgb32", "data_dir": spec.data_dir})
    with pytest.raises(ValueError, match="resolve_dataset"):
        data.TrainIterator(spec, other, global_batch_size=16, seed=0)


def test_eval_visits_every_example_once_in_order(spec, config, split_keys):
    batches = list(data.eval_batches(spec, config, global_batch_size=16))
    assert len(batches) == 21  # ceil(322 / 16)
    masks = np.concatenate([b["mask"] for b in batches])
    images = np.concatenate([b["image"] for b in batches])
    assert masks.dtype == bool and masks.sum() == spec.num_test
    assert not images[~masks].any()  # Padding is zeros.
    assert collections.Counter(_keys(images[masks])) == split_keys["test"]
    source = data.open_split(spec, "test")
    np.testing.assert_array_equal(images[5], source[5])


@pytest.mark.parametrize("process_count", [2, 3])
def test_eval_shards_cover_disjointly_with_equal_batch_counts(
    spec, config, split_keys, process_count
):
    global_batch = 8 * process_count
    per_process = [
        list(
            data.eval_batches(
                spec, config, global_batch, process_index=i, process_count=process_count
            )
        )
        for i in range(process_count)
    ]
    assert len({len(batches) for batches in per_process}) == 1
    seen = collections.Counter()
    total = 0
    for batches in per_process:
        for batch in batches:
            assert batch["image"].shape == (8, 64, 64, 3) and batch["mask"].shape == (8,)
            total += batch["mask"].sum()
            seen += collections.Counter(_keys(batch["image"][batch["mask"]]))
    assert total == spec.num_test
    assert seen == split_keys["test"]


def test_eval_pads_processes_without_examples(spec, config):
    # 322 examples over 400 processes: some processes get none but still step.
    batches = list(
        data.eval_batches(spec, config, global_batch_size=400, process_index=399, process_count=400)
    )
    assert len(batches) == 1 and not batches[0]["mask"].any()


def test_perturb_pixels_replaces_at_the_rate_with_uniform_levels():
    rng = np.random.default_rng(0)
    image = np.zeros((200, 200, 1), np.uint8)
    perturbed = data.pipeline.perturb_pixels(image, 0.2, 256, rng)
    assert perturbed.shape == image.shape and perturbed.dtype == np.uint8
    # A replaced pixel keeps level 0 with probability 1/256.
    changed = np.mean(perturbed != 0)
    assert abs(changed - 0.2 * 255 / 256) < 0.01
    levels = perturbed[perturbed != 0]
    assert abs(levels.mean() - 128) < 3  # uniform over 1..255
    assert np.array_equal(data.pipeline.perturb_pixels(image, 0.0, 256, rng), image)


def test_perturbed_training_batches_are_reproducible_and_resume_exactly(config, spec):
    def iterator(rate):
        return data.TrainIterator(spec, config, global_batch_size=4, seed=3, perturb_rate=rate)

    clean, first, second = iterator(0.0), iterator(0.5), iterator(0.5)
    clean_batches = _take(clean, 3)
    batches = _take(first, 3)
    assert _keys(batches) == _keys(_take(second, 3))  # a pure function of the batch index
    fraction = np.mean(np.concatenate(batches) != np.concatenate(clean_batches))
    assert 0.45 < fraction < 0.5  # 0.5 * 255 / 256 of the sub-pixels change
    resumed = iterator(0.5)
    resumed.set_state(first.get_state())
    assert _keys(_take(resumed, 1)) == _keys(_take(first, 1))
    assert first.get_state()["perturb_rate"] == 0.5
    with pytest.raises(ValueError, match="perturb_rate"):
        clean.set_state(first.get_state())  # a perturbed run's position is not a clean one's
    with pytest.raises(data.pipeline.ConfigError, match="probability"):
        iterator(1.5)
