"""One fuzz target per reader of outside bytes: seeds the project writes, and the property.

Each `Target` makes its seed inputs with the project's own writers (a real .prnn file of a
tiny random model, real PNGs, IDX, .amat, a CIFAR-style tarball, an image archive, a run's
config.json and a checkpoint's metrics file) and checks one input: the reader returns the
right result or raises the project's own error (`errors.UserError`); anything else
(another exception, a failed assertion) is a crash for the fuzzer, which also enforces the
memory bound (`-rss_limit_mb`) and the time bound (`-timeout`).

The first byte of some inputs picks a variant (noted per target): whether the bytes are the
file itself or content the harness compresses first (so the fuzzer also reaches the parser
behind gzip's CRC), or which of two model kinds reads a PNG.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import struct
import tarfile
from collections.abc import Callable

import numpy as np

from pixel_rnn_jax import errors

HEIGHT, WIDTH = 4, 4  # the tiny model's images: a decode is one short walk


@dataclasses.dataclass
class Target:
    """A reader under test."""

    seeds: list[bytes]
    check: Callable[[bytes], None]  # raises only on a violated property
    modules: list[str]  # modules whose Python code atheris instruments for coverage


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _tiny_coder(name: str, channels: int, levels: int):
    """(model, variables, fingerprint, image shape, images, files) of a random tiny model."""
    import jax
    import jax.numpy as jnp

    from pixel_rnn_jax import models
    from pixel_rnn_jax.coding import codec, container

    config = models.default_model_config()
    config.update(name=name, num_channels=channels, num_levels=levels, num_layers=1)
    config.update(hidden_dim=4, output_dim=8, first_kernel_size=3)
    model = models.build_model(config)
    shape = (HEIGHT, WIDTH, channels)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *shape), jnp.int32))
    # Random (not initial) parameters: non-trivial conditionals for the coder.
    leaves, tree = jax.tree_util.tree_flatten(variables)
    rng = np.random.default_rng(0)
    variables = jax.tree_util.tree_unflatten(
        tree, [jnp.asarray(rng.normal(0, 0.5, leaf.shape), leaf.dtype) for leaf in leaves]
    )
    fingerprint = container.fingerprint(config, variables["params"])
    images = rng.integers(0, levels, (2, *shape)).astype(np.int32)
    files = codec.compress(model, variables, fingerprint, images, image_shape=shape)
    return model, variables, fingerprint, shape, images, files


def prnn(tmp: str) -> Target:
    """The .prnn header and size checks: everything `decompress` runs before the coder.

    The coder is replaced by a recorder: the property is that no file reaches it with
    another image shape or more bytes than `max_file_bytes`, and every refusal is one line.
    """
    from pixel_rnn_jax.coding import codec, lockstep

    model, variables, fingerprint, shape, images, files = _tiny_coder("row_lstm", 1, 2)

    def recorder(model_, variables_, payloads, image_hw, labels=None):
        assert tuple(image_hw) == shape[:2], image_hw
        assert all(len(p) <= codec.max_file_bytes(shape) for p in payloads)
        return np.zeros((len(payloads), *shape), np.int32), ["recorded"] * len(payloads)

    def check(data: bytes) -> None:
        real, lockstep.decode = lockstep.decode, recorder
        try:
            (result,) = codec.decompress(model, variables, fingerprint, [data], image_shape=shape)
        finally:
            lockstep.decode = real
        assert result.image is None and "\n" not in result.error, result

    return Target(files, check, ["pixel_rnn_jax.coding.container", "pixel_rnn_jax.coding.codec"])


def payload(tmp: str) -> Target:
    """Random payload bytes behind a valid header, through the real range decoder and walk.

    Property: the decode ends (within `-timeout`) with the image (its checksum verified) or
    the one-line error; a 4x4 greyscale 256-level Diagonal BiLSTM keeps an input cheap.
    """
    from pixel_rnn_jax.coding import codec, container

    model, variables, fingerprint, shape, images, files = _tiny_coder("diagonal_bilstm", 1, 256)
    header, _ = container.unpack(files[0])

    def check(data: bytes) -> None:
        file = container.pack(header, data)
        (result,) = codec.decompress(model, variables, fingerprint, [file], image_shape=shape)
        if result.error is None:
            assert result.image.shape == shape
            assert container.pixel_checksum(result.image) == header.checksum
        else:  # the coder's refusal, or the length bound (max_file_bytes)
            assert "damaged or truncated" in result.error or "more than any" in result.error

    seeds = [container.unpack(f)[1] for f in files]
    return Target(seeds, check, ["pixel_rnn_jax.coding.entropy", "pixel_rnn_jax.coding.codec"])


def png(tmp: str) -> Target:
    """`files.read_png`; byte 0 picks the model: even a binary greyscale, odd a 256-level RGB."""
    from pixel_rnn_jax.coding import files

    kinds = [(1, 2), (3, 256)]
    rng = np.random.default_rng(0)
    seeds = []
    for index, (channels, levels) in enumerate(kinds):
        path = os.path.join(tmp, f"seed{index}.png")
        files.write_png(path, rng.integers(0, levels, (HEIGHT, WIDTH, channels)), levels)
        with open(path, "rb") as f:
            seeds.append(bytes([index]) + f.read())
    path = os.path.join(tmp, "input.png")

    def check(data: bytes) -> None:
        if not data:
            return
        channels, levels = kinds[data[0] % 2]
        _write(tmp, "input.png", data[1:])
        try:
            image = files.read_png(path, (HEIGHT, WIDTH, channels), levels)
        except errors.ImageFileError as error:
            assert "\n" not in str(error) and path in str(error)
            return
        assert image.shape == (HEIGHT, WIDTH, channels) and image.dtype == np.int32
        assert image.min() >= 0 and image.max() < levels

    modules = ["pixel_rnn_jax.coding.files", "PIL.PngImagePlugin", "PIL.ImageFile", "PIL.Image"]
    return Target(seeds, check, modules)


def _gzip_variant(data: bytes) -> bytes:
    """Bit 0 of byte 0 clear: the rest is the file; set: the rest is content, gzipped here."""
    return data[1:] if data[0] % 2 == 0 else gzip.compress(data[1:], compresslevel=1, mtime=0)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx(tmp: str) -> Target:
    """`formats.read_idx`; byte 0: bit 0 as `_gzip_variant`, bit 1 labels `()`, else images."""
    from pixel_rnn_jax.data import formats

    rng = np.random.default_rng(0)
    contents = [_idx(rng.integers(0, 256, (2, 28, 28))), _idx(rng.integers(0, 10, 3))]
    seeds = []
    for labels, content in enumerate(contents):
        seeds += [
            bytes([2 * labels]) + gzip.compress(content, mtime=0),
            bytes([2 * labels + 1]) + content,
        ]
    path = os.path.join(tmp, "input.gz")

    def check(data: bytes) -> None:
        if len(data) < 2:
            return
        packed = _gzip_variant(data)
        _write(tmp, "input.gz", packed)
        item_shape = () if data[0] & 2 else (28, 28)
        try:
            out = formats.read_idx(path, item_shape)
        except formats.FormatError as error:
            assert "\n" not in str(error)
            return
        assert out.shape[1:] == item_shape and out.dtype == np.uint8
        assert out.tobytes() == gzip.decompress(packed)[4 + 4 * out.ndim :]

    return Target(seeds, check, ["pixel_rnn_jax.data.formats", "gzip"])


def _amat_text(images: np.ndarray) -> bytes:
    return ("\n".join(" ".join(map(str, image.reshape(-1))) for image in images) + "\n").encode()


def amat(tmp: str) -> Target:
    """`formats.read_amat`: the text of binarized MNIST (784 values 0/1 a line)."""
    from pixel_rnn_jax.data import formats

    seeds = [_amat_text(np.random.default_rng(0).integers(0, 2, (2, 28, 28)))]
    path = os.path.join(tmp, "input.amat")

    def check(data: bytes) -> None:
        _write(tmp, "input.amat", data)
        try:
            out = formats.read_amat(path)
        except formats.FormatError as error:
            assert "\n" not in str(error)
            return
        assert out.shape[1:] == (28, 28, 1) and set(np.unique(out).tolist()) <= {0, 1}

    return Target(seeds, check, ["pixel_rnn_jax.data.formats"])


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def cifar(tmp: str) -> Target:
    """`formats.read_cifar10_tarball`; byte 0 even: a .tar.gz, odd: a tar, gzipped here."""
    from pixel_rnn_jax.data import formats

    rng = np.random.default_rng(0)
    # One record in the first batch, none in the others: a small input is a fast one.
    record = bytes([int(rng.integers(10))]) + rng.integers(0, 256, 3072).astype(np.uint8).tobytes()
    batches = (*formats.CIFAR10_TRAIN_FILES, *formats.CIFAR10_TEST_FILES)
    members = [
        (formats.CIFAR10_PREFIX + name, record if index == 0 else b"")
        for index, name in enumerate(batches)
    ]
    names = "\n".join(f"class{i}" for i in range(10)) + "\n"
    members.append((formats.CIFAR10_PREFIX + formats.CIFAR10_LABELS_FILE, names.encode()))
    tar = _tar(members)
    seeds = [b"\0" + gzip.compress(tar, mtime=0), b"\1" + tar]
    path = os.path.join(tmp, "input.tar.gz")

    def check(data: bytes) -> None:
        if not data:
            return
        _write(tmp, "input.tar.gz", _gzip_variant(data))
        try:
            out = formats.read_cifar10_tarball(path)
        except formats.FormatError as error:
            assert "\n" not in str(error)
            return
        for split in ("train", "test"):
            images, labels = out[split]
            assert images.shape[1:] == (32, 32, 3) and len(images) == len(labels)
            assert labels.max(initial=0) < 10
        assert len(out["label_names"]) == 10

    return Target(seeds, check, ["pixel_rnn_jax.data.formats", "tarfile", "gzip"])


def archive(tmp: str) -> Target:
    """`formats.iter_image_archive` of a downsampled-ImageNet-style tar of 32x32 PNGs."""
    from PIL import Image

    from pixel_rnn_jax.data import formats

    rng = np.random.default_rng(0)
    members = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(buffer, "PNG")
        members.append((f"valid_32x32/{i:07d}.png", buffer.getvalue()))
    path = os.path.join(tmp, "input.tar")

    def check(data: bytes) -> None:
        _write(tmp, "input.tar", data)
        try:
            for _, encoded in formats.iter_image_archive(path, 32):
                assert isinstance(encoded, bytes)
        except formats.FormatError as error:
            assert "\n" not in str(error)

    return Target([_tar(members)], check, ["pixel_rnn_jax.data.formats", "tarfile"])


def checkpoint(tmp: str) -> Target:
    """The project's checks around Orbax: a run's config.json (byte 0 even) and a
    checkpoint's metrics file (odd), both written here by the project's own code."""
    import jax.numpy as jnp
    from etils import epath

    from experiments import configs
    from pixel_rnn_jax import checkpoints, workdir

    config = configs.get_config("row_lstm_mnist_smoke")
    run = os.path.join(tmp, "run")
    os.makedirs(run)
    real = json.dumps({"config": config.to_dict(), "devices": {"platform": "cpu"}}, indent=2)
    manager = checkpoints.CheckpointManager(os.path.join(tmp, "ckpt"), keep_last=1)
    manager.save(1, {"w": jnp.ones(3)}, {"next_batch": 1}, metrics={checkpoints.BEST_METRIC: 2.75})
    manager.wait_until_finished()
    metrics_path = manager.directory / "1" / checkpoints.METRICS_ITEM / checkpoints.METRICS_ITEM
    seeds = [b"\0" + real.encode(), b"\1" + metrics_path.read_bytes()]
    manager.close()
    metrics_file = epath.Path(tmp) / "metrics"

    def check(data: bytes) -> None:
        if not data:
            return
        if data[0] % 2 == 0:
            _write(run, workdir.CONFIG_FILE, data[1:])
            try:
                workdir.check_config_matches(run, config)
            except errors.WorkdirError as error:
                assert "holds a run of a different model" in str(error)
            return
        metrics_file.write_bytes(data[1:])
        metrics, problem = checkpoints.read_metrics_file(metrics_file)
        assert (metrics is None) != (problem is None)
        if metrics is not None:
            assert checkpoints.metrics_problem(metrics) is None

    return Target(
        seeds, check, ["pixel_rnn_jax.workdir", "pixel_rnn_jax.checkpoints", "json.decoder"]
    )


TARGETS: dict[str, Callable[[str], Target]] = {
    "prnn": prnn,
    "payload": payload,
    "png": png,
    "idx": idx,
    "amat": amat,
    "cifar": cifar,
    "archive": archive,
    "checkpoint": checkpoint,
}
