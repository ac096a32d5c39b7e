"""Tests of `experiments.prepare_data` / `pixel_rnn_jax.data.prepare`, offline.

Fixture files in each dataset's original format are generated here and served from
127.0.0.1 (or read from a directory); what is prepared must read back equal to them, be
accepted by `resolve_dataset(strict=True)` and train.
"""

import dataclasses
import hashlib
import inspect
import os
import pathlib
import shutil
import subprocess
import sys
import time

import data_fixtures
import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath

from pixel_rnn_jax import data
from pixel_rnn_jax.data import download, prepare

REPO = pathlib.Path(__file__).resolve().parents[1]
FAST = download.RetryPolicy(timeout=5, retries=0, backoff=0.01)


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    attempts = data_fixtures.allow_only_localhost(monkeypatch)
    yield
    assert not attempts, f"a test tried to reach {attempts}"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """(source directory, the arrays written there)."""
    directory = tmp_path_factory.mktemp("originals")
    return str(directory), data_fixtures.make_sources(str(directory))


@pytest.fixture
def server(fixtures):
    with data_fixtures.FixtureServer(fixtures[0]) as served:
        yield served


def _config(name, data_dir):
    return {"name": name, "data_dir": str(data_dir), "strict": True}


def _read_split(builder_dir, split):
    source = tfds.builder_from_directory(builder_dir).as_data_source(split=split)
    return [source[i] for i in range(len(source))]


def _sorted_bytes(images):
    return sorted(np.asarray(image, np.uint8).tobytes() for image in images)


def _assert_reads_back(name, builder_dir, arrays):
    """Every split holds exactly the fixture's images (and labels); disk order is shuffled."""
    for split, expected in arrays.items():
        examples = _read_split(builder_dir, split)
        if name == "binarized_mnist":
            assert _sorted_bytes(e["image"] for e in examples) == _sorted_bytes(expected)
        elif name == "mnist":
            images, labels = expected
            pairs = sorted((e["image"].tobytes(), int(e["label"])) for e in examples)
            want = zip(images, labels, strict=True)
            assert pairs == sorted((image.tobytes(), int(label)) for image, label in want)
        elif name == "cifar10":
            images, labels = expected
            assert len(examples) == len(labels)
            for example in examples:
                split_name, index = example["id"].decode().rsplit("_", 1)
                assert split_name == split
                np.testing.assert_array_equal(example["image"], images[int(index)])
                assert example["label"] == labels[int(index)]
        else:
            assert _sorted_bytes(e["image"] for e in examples) == _sorted_bytes(expected.values())


def _tfds_builder(name, data_dir, monkeypatch):
    """TFDS's own (unprepared) builder of `name`, for comparing metadata."""
    base, _, config = name.partition("/")
    cls = tfds.builder_cls(base)
    # Its default metadata lookup needs the (absent) importlib_resources backport.
    monkeypatch.setattr(cls, "pkg_dir_path", epath.Path(os.path.dirname(inspect.getfile(cls))))
    return cls(data_dir=str(data_dir), config=config or None)


PREPARABLE_FROM_URL = ["binarized_mnist", "mnist", "cifar10"]
ALL = [*PREPARABLE_FROM_URL, "downsampled_imagenet/32x32"]


@pytest.mark.parametrize("name", ALL)
def test_from_a_directory_reads_back_equal_with_tfds_metadata(
    fixtures, tmp_path, monkeypatch, name
):
    directory, arrays = fixtures
    builder_dir = prepare.prepare_dataset(name, str(tmp_path), directory, verify_checksums=False)
    _assert_reads_back(name, builder_dir, arrays[name])

    ours = tfds.builder_from_directory(builder_dir)
    theirs = _tfds_builder(name, tmp_path / "tfds_reference", monkeypatch)
    assert builder_dir == os.path.join(tmp_path, *name.split("/"), str(theirs.version))
    assert (ours.name, ours.builder_config and ours.builder_config.name) == (
        theirs.name,
        theirs.builder_config and theirs.builder_config.name,
    )
    assert ours.info.features.to_json_content() == theirs.info.features.to_json_content()
    assert sorted(ours.info.splits) == sorted(arrays[name])
    spec = data.resolve_dataset(_config(name, tmp_path))
    assert spec.fallback_reason is None and spec.builder_dir == builder_dir
    assert dict(spec.split_sizes) == _fixture_counts(arrays[name])
    # Nothing but the dataset and its lock is left in data_dir: no staging directory.
    left = sorted(p for p in os.listdir(tmp_path) if p != "tfds_reference")
    assert left == sorted([name.split("/")[0], f".prepare-{name.replace('/', '_')}.lock"])


@pytest.mark.parametrize("name", PREPARABLE_FROM_URL)
def test_from_a_url_prefix_downloads_then_reads_back_equal(fixtures, server, tmp_path, name):
    builder_dir = prepare.prepare_dataset(
        name, str(tmp_path), server.url + "/mirror", verify_checksums=False, policy=FAST
    )
    _assert_reads_back(name, builder_dir, fixtures[1][name])
    assert sorted(n for n, _ in server.requests) == sorted(prepare.RECIPES[name].files)
    # Downloads are kept: a second run finds the dataset prepared and fetches nothing.
    assert prepare.prepare_dataset(name, str(tmp_path), server.url, False, FAST) == builder_dir
    assert len(server.requests) == len(prepare.RECIPES[name].files)


def test_imagenet_from_a_url_says_what_to_download(tmp_path):
    with pytest.raises(download.PrepareError) as info:
        prepare.prepare_dataset("downsampled_imagenet/64x64", str(tmp_path))
    message = str(info.value)
    for needle in ("train_64x64.tar", "valid_64x64.tar", "--source=DIR", "image-net.org"):
        assert needle in message
    assert "\n" not in message
    assert not os.path.exists(tmp_path / "downsampled_imagenet")


def _inject_checksums(monkeypatch, directory, name, corrupt=None):
    """Makes TFDS's checksums of `name` those of the fixture files (optionally one wrong)."""
    recipe = prepare.RECIPES[name]
    entries = {}
    for filename in recipe.files:
        payload = pathlib.Path(directory, filename).read_bytes()
        digest = hashlib.sha256(payload).hexdigest()
        if filename == corrupt:
            digest = hashlib.sha256(payload + b"x").hexdigest()
        entries[filename] = download.FileChecksum(
            f"http://official.invalid/{filename}", len(payload), digest, filename
        )
    monkeypatch.setattr(download, "tfds_checksums", lambda builder: entries)
    return entries


def _fixture_counts(arrays):
    """{split: number of examples} of one dataset's fixture arrays."""
    return {
        split: len(value[1] if isinstance(value, tuple) else value)
        for split, value in arrays.items()
    }


def test_verified_checksums_and_counts_pass(fixtures, server, tmp_path, monkeypatch):
    directory, arrays = fixtures
    _inject_checksums(monkeypatch, directory, "binarized_mnist")
    recipe = prepare.RECIPES["binarized_mnist"]
    counts = _fixture_counts(arrays["binarized_mnist"])
    monkeypatch.setitem(
        prepare.RECIPES, "binarized_mnist", dataclasses.replace(recipe, expected_counts=counts)
    )
    builder_dir = prepare.prepare_dataset("binarized_mnist", str(tmp_path), server.url, True, FAST)
    _assert_reads_back("binarized_mnist", builder_dir, arrays["binarized_mnist"])


def test_wrong_example_count_fails_and_writes_nothing(fixtures, tmp_path, monkeypatch):
    directory, arrays = fixtures
    _inject_checksums(monkeypatch, directory, "binarized_mnist")
    counts = {**_fixture_counts(arrays["binarized_mnist"]), "test": 8}
    recipe = dataclasses.replace(prepare.RECIPES["binarized_mnist"], expected_counts=counts)
    monkeypatch.setitem(prepare.RECIPES, "binarized_mnist", recipe)
    with pytest.raises(download.PrepareError, match="'test' has 7 examples, expected 8"):
        prepare.prepare_dataset("binarized_mnist", str(tmp_path), directory)
    _assert_nothing_prepared("binarized_mnist", tmp_path)


def _assert_nothing_prepared(name, data_dir):
    with pytest.raises(data.DatasetNotPreparedError):
        data.resolve_dataset(_config(name, data_dir))
    if os.path.exists(data_dir):  # files from a directory leave no data_dir at all
        left = os.listdir(data_dir)
        assert not [p for p in left if not p.endswith(".lock") and p != "downloads"]


@pytest.mark.parametrize("kind", ["url", "dir"])
def test_corrupted_file_fails_verification_and_writes_nothing(
    fixtures, server, tmp_path, monkeypatch, kind
):
    directory, _ = fixtures
    entries = _inject_checksums(
        monkeypatch, directory, "mnist", corrupt="t10k-labels-idx1-ubyte.gz"
    )
    source = server.url if kind == "url" else directory
    with pytest.raises(download.ChecksumError) as info:
        prepare.prepare_dataset("mnist", str(tmp_path / "d"), source, policy=FAST)
    message = str(info.value)
    actual = download.sha256_file(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"))
    assert "t10k-labels-idx1-ubyte.gz" in message and "\n" not in message
    assert entries["t10k-labels-idx1-ubyte.gz"].sha256 in message and actual in message
    _assert_nothing_prepared("mnist", tmp_path / "d")
    downloads = tmp_path / "d" / "downloads" / "mnist"
    assert (tmp_path / "d").exists() == (kind == "url")  # a local source is checked first
    if kind == "url":  # The corrupt download is dropped so that a rerun fetches it again.
        assert "t10k-labels-idx1-ubyte.gz" not in os.listdir(downloads)
    else:  # The user's own files are never touched.
        assert os.path.exists(os.path.join(directory, "t10k-labels-idx1-ubyte.gz"))


def test_dropped_connection_then_rerun_resumes_with_range(fixtures, server, tmp_path):
    size = os.path.getsize(os.path.join(fixtures[0], "binarized_mnist_train.amat"))
    server.drop_after["binarized_mnist_train.amat"] = size // 2
    with pytest.raises(download.DownloadError) as info:
        prepare.prepare_dataset("binarized_mnist", str(tmp_path), server.url, False, FAST)
    assert "--source=DIR" in str(info.value) and "\n" not in str(info.value)
    _assert_nothing_prepared("binarized_mnist", tmp_path)
    part = tmp_path / "downloads" / "binarized_mnist" / "binarized_mnist_train.amat.part"
    kept = part.stat().st_size
    assert 0 < kept <= size // 2

    builder_dir = prepare.prepare_dataset("binarized_mnist", str(tmp_path), server.url, False, FAST)
    assert ("binarized_mnist_train.amat", f"bytes={kept}-") in server.requests
    _assert_reads_back("binarized_mnist", builder_dir, fixtures[1]["binarized_mnist"])


def test_interrupted_write_leaves_nothing_and_a_rerun_finishes(fixtures, tmp_path):
    directory, arrays = fixtures

    def interrupt(staging):
        # The whole dataset is written in the staging directory at this point.
        assert os.listdir(staging)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_dataset("cifar10", str(tmp_path), directory, False, after_write=interrupt)
    _assert_nothing_prepared("cifar10", tmp_path)

    # A run killed outright leaves its staging directory, holding a complete copy here:
    # the loader ignores it and the next run removes it.
    other = prepare.prepare_dataset("cifar10", str(tmp_path / "other"), directory, False)
    killed = tmp_path / ".prepare-cifar10-killed"
    (killed / "cifar10").mkdir(parents=True)
    os.rename(other, killed / "cifar10" / os.path.basename(other))
    with pytest.raises(data.DatasetNotPreparedError):
        data.resolve_dataset(_config("cifar10", tmp_path))
    builder_dir = prepare.prepare_dataset("cifar10", str(tmp_path), directory, False)
    assert not killed.exists()
    _assert_reads_back("cifar10", builder_dir, arrays["cifar10"])


def test_missing_local_file_is_named(fixtures, tmp_path):
    (tmp_path / "src").mkdir()
    for filename in ("binarized_mnist_train.amat", "binarized_mnist_valid.amat"):
        os.symlink(os.path.join(fixtures[0], filename), tmp_path / "src" / filename)
    with pytest.raises(download.DownloadError, match="binarized_mnist_test.amat not found"):
        prepare.prepare_dataset("binarized_mnist", str(tmp_path / "d"), str(tmp_path / "src"))
    _assert_nothing_prepared("binarized_mnist", tmp_path / "d")


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "experiments.prepare_data", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_unreachable_server_fails_fast_with_one_line(tmp_path):
    with data_fixtures.SilentServer() as silent:
        start = time.monotonic()
        result = _cli(
            "--dataset=binarized_mnist",
            f"--data_dir={tmp_path}",
            f"--source={silent.url}",
            "--timeout=0.5",
            "--retries=1",
        )
        elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"prepare_data: Could not download {silent.url}/binarized_mnist_")
    assert "--source=DIR" in last and "timed out" in last.lower()
    assert elapsed < 60  # Interpreter start-up dominates; the network part is ~1.5 s.


def test_cli_over_http_then_two_training_steps_strict(fixtures, server, tmp_path):
    result = _cli(
        "--dataset=binarized_mnist",
        f"--data_dir={tmp_path / 'data'}",
        f"--source={server.url}/binarized_mnist",
        "--no_verify_checksums",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Prepared binarized_mnist in" in result.stdout
    builder_dir = os.path.join(tmp_path, "data", "binarized_mnist", "1.0.0")
    _assert_reads_back("binarized_mnist", builder_dir, fixtures[1]["binarized_mnist"])

    from experiments import configs
    from pixel_rnn_jax import train

    config = configs.get_config("row_lstm_mnist_smoke")
    config.data.name = "binarized_mnist"
    config.data.data_dir = str(tmp_path / "data")
    config.data.strict = True
    config.train.num_steps = 2
    config.train.eval_every = 2
    config.train.checkpoint_every = 2
    config.train.log_every = 1
    config.train.num_samples = 0
    config.train.eval_max_batches = 1
    out = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert out["step"] == 2 and np.isfinite(out["eval/nll"])
    assert out["dataset"] == "binarized_mnist" and out["fallback_reason"] is None


# Fashion-MNIST: TFDS lists the digests of Zalando's archives; Debian ships the same IDX
# content re-compressed. Both are accepted (by archive, or by content digest), nothing else.
FASHION = "fashion_mnist"


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """(official-style dir, Debian-style dir, arrays, archive checksums, content digests)."""
    root = tmp_path_factory.mktemp("fashion")
    official, recompressed = str(root / "official"), str(root / "debian")
    arrays = data_fixtures.make_fashion_sources(official, recompressed)
    archives, contents = {}, {}
    for filename in prepare.RECIPES[FASHION].files:
        path = os.path.join(official, filename)
        archives[filename] = download.FileChecksum(
            f"http://official.invalid/{filename}",
            os.path.getsize(path),
            download.sha256_file(path),
            filename,
        )
        size, digest = download.gunzip_sha256(path, 1 << 20)
        contents[filename] = download.ContentDigest(size, digest)
    return official, recompressed, arrays, archives, contents


@pytest.fixture
def fashion_known(fashion, monkeypatch):
    """Verification against the fixture's digests; a 3-image validation slice fits 10 images."""
    _, _, arrays, archives, contents = fashion
    real_checksums = download.tfds_checksums
    monkeypatch.setattr(
        download,
        "tfds_checksums",
        lambda builder: archives if builder == FASHION else real_checksums(builder),
    )
    recipe = dataclasses.replace(
        prepare.RECIPES[FASHION],
        expected_counts=_fixture_counts(arrays),
        content_digests=contents,
    )
    monkeypatch.setitem(prepare.RECIPES, FASHION, recipe)
    known = dataclasses.replace(
        data.registry.KNOWN_DATASETS[FASHION],
        train_split="train[:-3]",
        validation_split="train[-3:]",
    )
    monkeypatch.setitem(data.registry.KNOWN_DATASETS, FASHION, known)
    return fashion


@pytest.mark.parametrize("copy", ["official", "recompressed"])
def test_fashion_mnist_either_compression_verifies_and_reads_back_equal(
    fashion_known, tmp_path, copy
):
    official, recompressed, arrays, _, _ = fashion_known
    source = official if copy == "official" else recompressed
    builder_dir = prepare.prepare_dataset(FASHION, str(tmp_path), source)
    assert builder_dir == os.path.join(tmp_path, FASHION, "3.0.1")
    _assert_reads_back("mnist", builder_dir, arrays)  # pixel for pixel, label for label
    spec = data.resolve_dataset(_config(FASHION, tmp_path))
    assert (spec.num_levels, spec.num_classes, spec.image_shape) == (256, 10, (28, 28, 1))
    assert (spec.train_split, spec.validation_split, spec.eval_split) == (
        "train[:-3]",
        "train[-3:]",
        "test",
    )
    assert spec.num_examples("train[:-3]") == 7 and spec.num_examples("train[-3:]") == 3
    # The validation slice is the train split's last images: disjoint from what trains.
    train = data.open_split(spec, spec.train_split, with_labels=True)
    held_out = data.open_split(spec, spec.validation_split, with_labels=True)
    seen = {image.tobytes() for image, _ in (train[i] for i in range(len(train)))}
    assert not seen & {image.tobytes() for image, _ in (held_out[i] for i in range(3))}
    assert len(seen) + 3 == len(arrays["train"][0])


def _flip_a_compressed_byte(path, out):
    payload = bytearray(pathlib.Path(path).read_bytes())
    payload[len(payload) // 2] ^= 0x10  # inside the deflate stream, far from the header
    pathlib.Path(out).write_bytes(bytes(payload))


@pytest.mark.parametrize(
    "case", ["as_mnist", "mnist_as_fashion", "changed_byte", "truncated", "missing", "no_dir"]
)
def test_fashion_mnist_bad_input_is_one_line_and_writes_nothing(
    fashion_known, fixtures, tmp_path, case
):
    official, recompressed, _, _, _ = fashion_known
    name, source, bad = FASHION, str(tmp_path / "src"), "t10k-images-idx3-ubyte.gz"
    shutil.copytree(recompressed, source)
    if case == "as_mnist":  # Debian's files under the other name: no MNIST content digest
        name, bad = "mnist", "train-images-idx3-ubyte.gz"
        expected = "no digest of its decompressed content is known"
    elif case == "mnist_as_fashion":  # MNIST's IDX files (same names) as fashion_mnist
        source, bad = fixtures[0], "train-images-idx3-ubyte.gz"
        expected = "neither the archive"
    elif case == "changed_byte":
        _flip_a_compressed_byte(os.path.join(recompressed, bad), os.path.join(source, bad))
        expected = "CRC check failed"  # gzip's own check; the content digest would follow
    elif case == "truncated":
        payload = pathlib.Path(recompressed, bad).read_bytes()
        pathlib.Path(source, bad).write_bytes(payload[: len(payload) - 40])
        expected = "not a complete gzip file"
    elif case == "missing":
        os.remove(os.path.join(source, bad))
        expected = "not found"
    else:
        source, bad = str(tmp_path / "nowhere"), "nowhere"
        expected = "is not a directory"
    data_dir = tmp_path / "d"
    with pytest.raises(download.PrepareError) as info:
        prepare.prepare_dataset(name, str(data_dir), source)
    message = str(info.value)
    assert bad in message and expected in message and "\n" not in message, message
    if case in ("changed_byte", "truncated", "mnist_as_fashion"):  # says what was expected
        assert prepare.RECIPES[FASHION].content_digests[bad].sha256 in message
    assert not data_dir.exists()  # nothing written, not even the lock or the directory


def test_fashion_mnist_cli_refuses_a_wrong_dataset_with_status_one(fashion, tmp_path):
    _, recompressed, _, _, _ = fashion
    result = _cli("--dataset=mnist", f"--data_dir={tmp_path / 'd'}", f"--source={recompressed}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("prepare_data: ") and "train-images-idx3-ubyte.gz" in last
    assert "--no_verify_checksums" in last
    assert not (tmp_path / "d").exists()
