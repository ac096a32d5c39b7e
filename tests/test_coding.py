"""Lossless compression (`pixel_rnn_jax.coding`): exact round trips, sizes, bad files.

Every model kind and colour mode on tiny models with random parameters; each kind's walk is
compiled once (the encoder and the decoder run the same program) and shared by the tests.
"""

import dataclasses
import io
import json
import os
import struct
import zlib

import constriction
import mutations
import numpy as np
import PIL.ImageFile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_probes import tiny_model_config
from PIL import Image
from sampling_fixtures import random_variables

from pixel_rnn_jax import errors, models
from pixel_rnn_jax.coding import codec, container, entropy, files, lockstep

TINY = {"num_layers": 1, "hidden_dim": 4, "output_dim": 8, "first_kernel_size": 3}
HEIGHT, WIDTH, BATCH = 4, 4, 2  # the multi-scale model needs even sizes
# (id, body, channels, levels, extra model fields): every kind and colour mode of the issue.
KINDS = [
    ("row_lstm-binary-grey", "row_lstm", 1, 2, {}),
    ("row_lstm-256-rgb-conditional", "row_lstm", 3, 256, {"num_classes": 3}),
    ("pixelcnn-256-rgb", "pixelcnn", 3, 256, {}),
    ("diagonal_bilstm-256-grey", "diagonal_bilstm", 1, 256, {}),
    ("diagonal_bilstm-full_context-binary-rgb", "diagonal_bilstm", 3, 2, {"full_context": True}),
    ("multiscale-binary-grey-conditional", "multiscale", 1, 2, {"num_classes": 2}),
]


def _config(name, channels, levels, extra):
    config = tiny_model_config(name, channels, levels, **TINY, **extra)
    if name == "multiscale":
        config.multiscale.update(cond_dim=3, encoder_layers=1, conditional_name="diagonal_bilstm")
        config.multiscale.small.update(num_layers=1, hidden_dim=4)
    return config


class Kind:
    """A tiny model, its variables and fingerprint, images and labels, compressed once."""

    def __init__(self, name, channels, levels, extra, seed=0):
        self.config = _config(name, channels, levels, extra)
        self.model = models.build_model(self.config)
        shape = (BATCH, HEIGHT, WIDTH, channels)
        self.variables = random_variables(self.model, shape, seed)
        rng = np.random.default_rng(seed + 1)
        self.images = rng.integers(0, levels, shape).astype(np.int32)
        classes = self.config.num_classes
        self.labels = rng.integers(0, classes, BATCH) if classes else None
        self.fingerprint = container.fingerprint(self.config, self.variables["params"])
        self.image_shape = shape[1:]
        self.files = codec.compress(
            self.model,
            self.variables,
            self.fingerprint,
            self.images,
            self.labels,
            image_shape=self.image_shape,
        )

    def decompress(self, files):
        return codec.decompress(
            self.model, self.variables, self.fingerprint, files, image_shape=self.image_shape
        )


@pytest.fixture(scope="module")
def kinds():
    return {}


def _kind(kinds, kind_id) -> Kind:
    if kind_id not in kinds:
        _, name, channels, levels, extra = next(k for k in KINDS if k[0] == kind_id)
        kinds[kind_id] = Kind(name, channels, levels, extra)
    return kinds[kind_id]


@pytest.mark.parametrize("kind_id", [k[0] for k in KINDS])
def test_round_trip_is_exact_and_the_payload_is_the_models_nll(kinds, kind_id):
    kind = _kind(kinds, kind_id)
    results = kind.decompress(kind.files)
    for index, result in enumerate(results):
        assert result.error is None
        np.testing.assert_array_equal(result.image, kind.images[index])
        expected_label = None if kind.labels is None else int(kind.labels[index])
        assert result.label == expected_label
    # A file decodes alone too (another slot of the lockstep batch, other neighbours).
    alone = kind.decompress(kind.files[1:])[0]
    np.testing.assert_array_equal(alone.image, kind.images[1])
    # Payload (file minus header) within 0.5% or 4 bytes of the model's NLL of the image.
    nll = files.nll_bits(kind.model, kind.variables, kind.images, kind.labels)
    for data, bits in zip(kind.files, nll, strict=True):
        header, payload = container.unpack(data)
        assert len(data) == container.header_size(header) + len(payload)
        assert abs(8 * len(payload) - bits) <= max(0.005 * bits, 32), (len(payload), bits / 8)


def test_fingerprint_follows_the_parameters_and_model_fields_not_the_schedule(kinds):
    kind = _kind(kinds, "row_lstm-binary-grey")
    params = kind.variables["params"]
    assert container.fingerprint(kind.config, params) == kind.fingerprint
    nudged = {**params, "output_stack": dict(params["output_stack"])}
    first = next(iter(nudged["output_stack"]))
    leaf = dict(nudged["output_stack"][first])
    kernel = np.array(leaf["kernel"])
    kernel.flat[0] = np.nextafter(kernel.flat[0], np.float32(np.inf))  # one ulp
    leaf["kernel"] = kernel
    nudged["output_stack"][first] = leaf
    assert container.fingerprint(kind.config, nudged) != kind.fingerprint
    other = _config("row_lstm", 1, 2, {"recurrent_kernel_size": 5})
    assert container.fingerprint(other, params) != kind.fingerprint
    scheduled = _config("row_lstm", 1, 2, {"unroll": "python", "remat": True})
    assert container.fingerprint(scheduled, params) == kind.fingerprint
    for schedule in ("throughput", "latency"):  # execution-only (`model_fields`)
        scheduled = _config("row_lstm", 1, 2, {"schedule": schedule})
        assert container.fingerprint(scheduled, params) == kind.fingerprint


def test_a_file_compressed_under_another_schedule_decodes(kinds):
    kind = _kind(kinds, "row_lstm-binary-grey")
    config = _config("row_lstm", 1, 2, {"schedule": "latency"})
    fingerprint = container.fingerprint(config, kind.variables["params"])
    model = models.build_model(config)
    files = codec.compress(
        model, kind.variables, fingerprint, kind.images, image_shape=kind.images.shape[1:]
    )
    assert files == kind.files
    for result, image in zip(kind.decompress(files), kind.images, strict=True):
        np.testing.assert_array_equal(result.image, image)


def test_default_config_fingerprints_are_those_of_files_written_before():
    """Existing files stay decodable: the values `fingerprint` gave at commit 0deaad5
    (2026-12-07, before `schedule` became execution-only) for fixed parameters."""
    params = {"conv": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    params["conv"]["bias"] = np.ones(3, np.float32)
    config = models.default_model_config()
    assert container.fingerprint(config, params).hex() == "9952b9e4"
    config.name = "multiscale"
    assert container.fingerprint(config, params).hex() == "96ac42bb"


def test_header_layout_is_small_and_round_trips():
    header = container.Header(b"\x01\x02\x03\x04", 28, 28, 1, 256, None, 0xDEADBEEF)
    data = container.pack(header, b"payload")
    assert len(data) == 14 + 7 and data[:3] == b"PR\x01"  # 28x28 unlabelled: 14 bytes
    assert container.unpack(data) == (header, b"payload")
    big = container.Header(b"abcd", 300, 1, 3, 2, 200, 7)
    assert container.unpack(container.pack(big, b"")) == (big, b"")
    assert container.header_size(big) == 14 + 1 + 2  # a 2-byte height, a 2-byte label
    for cut in range(len(container.pack(header, b""))):
        with pytest.raises(errors.CompressedFileError, match="truncated|not a .prnn"):
            container.unpack(data[:cut])
    with pytest.raises(errors.CompressedFileError, match="version 9"):
        container.unpack(b"PR\x09" + data[3:])


def test_frequencies_are_deterministic_integer_tables_and_streams_end_short():
    rng = np.random.default_rng(0)
    for levels, logits in (
        (2, 30 * rng.standard_normal(64)),
        (256, rng.standard_normal((64, 256))),
    ):
        counts = np.asarray(entropy.frequencies(logits.astype(np.float32), levels))
        assert counts.shape == (64, levels) and counts.min() >= 1
        assert (counts.sum(axis=-1) == entropy.TOTAL).all()
    # The shortened ending decodes (constriction's own decoder, zero-padded), and costs
    # under 2 bytes over the quantised information on these streams.
    for trial in range(100):
        levels, length = (2, 50) if trial % 2 else (256, 5)
        shape = (length,) if levels == 2 else (length, levels)  # Bernoulli or categorical
        logits = (rng.standard_normal(shape) * rng.uniform(0.1, 20)).astype(np.float32)
        symbols = rng.integers(0, levels, length).astype(np.int32)
        tables = np.asarray(entropy.coder_tables(logits, levels))
        encoder = entropy.Encoder()
        for index in range(length):
            encoder.encode(symbols[index : index + 1], tables[index : index + 1])
        payload = encoder.finish()
        decoder = entropy.Decoder(payload)
        decoded = [decoder.decode(tables[index : index + 1]) for index in range(length)]
        assert decoded == symbols.tolist()
        information = entropy.ideal_bits(logits, symbols, levels).sum()
        assert 8 * len(payload) <= information + 16
    assert isinstance(entropy._MODEL, constriction.stream.model.Categorical)


def test_damaged_truncated_and_foreign_files_are_reported_one_by_one(kinds, monkeypatch):
    kind = _kind(kinds, "row_lstm-256-rgb-conditional")
    good, second = kind.files
    changed = bytearray(second)
    changed[len(changed) // 2 + 8] ^= 0x10  # a byte of the payload
    foreign = container.pack(
        container.Header(b"\0\0\0\0", *kind.images.shape[1:3], 3, 256, 0, 0), b"x"
    )
    damaged_checksum = bytearray(good)
    damaged_checksum[container.header_size(container.unpack(good)[0]) - 1] ^= 1
    truncated = [second[:-cut] for cut in range(1, len(container.unpack(second)[1]) + 1)]
    results = kind.decompress(
        [good, bytes(changed), second[:9], foreign, bytes(damaged_checksum), b"GIF8", *truncated]
    )
    np.testing.assert_array_equal(results[0].image, kind.images[0])
    for result in results[1:2] + results[4:5] + results[6:]:  # every truncation is caught
        assert result.image is None and "damaged or truncated" in result.error
    assert "truncated header" in results[2].error
    assert f"made by model 00000000, not by this model {kind.fingerprint.hex()}" in results[3].error
    assert "not a .prnn file" in results[5].error
    # A foreign file is refused before any decoding.
    monkeypatch.setattr(lockstep, "decode", lambda *a, **k: pytest.fail("decoded"))
    assert "made by model" in kind.decompress([foreign])[0].error


def test_directories_never_overwrite_and_list_bad_files(kinds, tmp_path):
    kind = _kind(kinds, "row_lstm-binary-grey")
    out, pngs = tmp_path / "prnn", tmp_path / "png"

    def compress():
        return files.compress_to_directory(
            kind.model,
            kind.variables,
            kind.fingerprint,
            kind.images,
            ["a", "b"],
            str(out),
            image_shape=kind.image_shape,
        )

    def decompress(inputs):
        files.decompress_to_directory(
            kind.model, kind.variables, kind.fingerprint, inputs, str(pngs), image_shape=(4, 4, 1)
        )

    report = compress()
    assert json.loads((out / "report.json").read_text()) == report
    assert [f["name"] for f in report["files"]] == ["a.prnn", "b.prnn"]
    assert report["totals"]["bytes"] == sum(len(f) for f in kind.files)
    assert (out / "a.prnn").read_bytes() == kind.files[0]
    before = (out / "report.json").read_text()
    with pytest.raises(errors.OutputExistsError, match="already holds 3 of the files"):
        compress()
    assert (out / "report.json").read_text() == before
    (out / "b.prnn").write_bytes(kind.files[1][:-2])  # truncated
    inputs = files.input_files(str(out))
    with pytest.raises(errors.CompressedFileError, match=r"1 of 2 files .*b\.prnn: damaged"):
        decompress(inputs)
    assert os.listdir(pngs) == ["a.png"]
    decoded = np.asarray(Image.open(pngs / "a.png"))
    np.testing.assert_array_equal(decoded, kind.images[0, ..., 0] * 255)
    with pytest.raises(errors.OutputExistsError, match="a.png"):
        decompress(inputs)
    # PNG inputs come back as the model's images; other shapes, modes and levels are refused.
    images, stems = files.read_pngs(str(pngs / "*.png"), (HEIGHT, WIDTH, 1), 2)
    np.testing.assert_array_equal(images[0], kind.images[0])
    assert stems == ["a"]
    bad = {
        "size.png": (np.zeros((5, 4), np.uint8), "is 5x4x1, the model takes 4x4x1 images"),
        "rgb.png": (np.zeros((4, 4, 3), np.uint8), "is a 'RGB' image"),
        "grey.png": (np.full((4, 4), 128, np.uint8), "has grey levels"),
    }
    for name, (pixels, message) in bad.items():
        Image.fromarray(pixels).save(tmp_path / name)
        with pytest.raises(errors.ImageFileError, match=message):
            files.read_pngs(str(tmp_path / name), (HEIGHT, WIDTH, 1), 2)


def test_rgb_pngs_and_labels_come_back_from_a_directory(kinds, tmp_path):
    kind = _kind(kinds, "row_lstm-256-rgb-conditional")
    out, pngs = tmp_path / "prnn", tmp_path / "png"
    files.compress_to_directory(
        kind.model,
        kind.variables,
        kind.fingerprint,
        kind.images,
        ["x", "y"],
        str(out),
        image_shape=kind.image_shape,
        labels=kind.labels,
    )
    written = files.decompress_to_directory(
        kind.model,
        kind.variables,
        kind.fingerprint,
        files.input_files(str(out)),
        str(pngs),
        image_shape=kind.image_shape,
    )
    assert [os.path.basename(path) for path in written] == ["x.png", "y.png"]
    images, _ = files.read_pngs(str(pngs / "*.png"), (HEIGHT, WIDTH, 3), 256)
    np.testing.assert_array_equal(images, kind.images)
    labels = json.loads((pngs / files.LABELS_FILE).read_text())
    assert labels == {"x.png": int(kind.labels[0]), "y.png": int(kind.labels[1])}


def _with_header(data: bytes, **fields) -> bytes:
    """`data` (a .prnn file) with some header fields replaced, its payload kept."""
    header, payload = container.unpack(data)
    return container.pack(dataclasses.replace(header, **fields), payload)


def test_a_header_of_another_image_size_is_refused_before_decoding(kinds, monkeypatch):
    # Issue 29's reproducer: a real file with only the width changed made XLA ask for 301 GB.
    kind = _kind(kinds, "row_lstm-binary-grey")
    good = kind.files[0]
    forged = [_with_header(good, width=100_000), _with_header(good, height=2**40)]
    decoded = []
    real_decode = lockstep.decode
    monkeypatch.setattr(
        lockstep,
        "decode",
        lambda m, v, p, shape, *a: decoded.append(shape) or real_decode(m, v, p, shape, *a),
    )
    results = kind.decompress([forged[0], good, forged[1]])
    assert decoded == [(HEIGHT, WIDTH)]  # only the good file reached the coder
    np.testing.assert_array_equal(results[1].image, kind.images[0])
    assert (
        results[0].error == "malformed header: an image of 4x100000x1, the model takes 4x4x1 images"
    )
    assert f"{2**40}x4x1, the model takes 4x4x1" in results[2].error
    # compress applies the same rule to its images.
    with pytest.raises(errors.ImageFileError, match="4x4x1, the model takes 4x5x1 images"):
        codec.compress(
            kind.model, kind.variables, kind.fingerprint, kind.images, image_shape=(4, 5, 1)
        )


def test_a_forged_file_beside_a_good_one_in_a_directory_costs_only_itself(kinds, tmp_path):
    kind = _kind(kinds, "row_lstm-binary-grey")
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "good.prnn").write_bytes(kind.files[0])
    (inputs / "wide.prnn").write_bytes(_with_header(kind.files[0], width=100_000))
    (inputs / "huge.prnn").write_bytes(kind.files[0] + b"\0" * (1 << 20))  # read no further
    out = tmp_path / "out"
    with pytest.raises(errors.CompressedFileError) as info:
        files.decompress_to_directory(
            kind.model,
            kind.variables,
            kind.fingerprint,
            files.input_files(str(inputs)),
            str(out),
            image_shape=kind.image_shape,
        )
    message = str(info.value)
    assert "\n" not in message and message.startswith("2 of 3 files could not be decoded")
    assert "4x100000x1, the model takes 4x4x1" in message
    assert (
        f"more than any .prnn file of a 4x4x1 image ({codec.max_file_bytes((4, 4, 1))})" in message
    )
    assert os.listdir(out) == ["good.png"]
    assert (
        len(files.read_prnn(str(inputs / "huge.prnn"), (4, 4, 1)))
        == codec.max_file_bytes((4, 4, 1)) + 1
    )


def test_the_size_bound_holds_for_the_costliest_images(kinds):
    # Images the model finds least likely cost the most bits: still under max_file_bytes.
    kind = _kind(kinds, "pixelcnn-256-rgb")
    worst = np.where(kind.images < 128, 255, 0).astype(np.int32)
    data = codec.compress(
        kind.model, kind.variables, kind.fingerprint, worst, image_shape=kind.image_shape
    )
    assert max(map(len, data)) <= codec.max_file_bytes(kind.image_shape)


def _png_header_only(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR declares `width` x `height` 8-bit pixels, with a tiny IDAT."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_png_size_is_checked_from_the_header_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header_only(5000, 5000))
    monkeypatch.setattr(
        PIL.ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded a refused image")
    )
    with pytest.raises(errors.ImageFileError) as info:
        files.read_png(str(path), (HEIGHT, WIDTH, 1), 256)
    assert str(info.value).startswith(f"{path} is 5000x5000x1, the model takes 4x4x1 images")
    # A bomb beyond Pillow's own limit, a JPEG and bytes that are no image: one line each.
    path.write_bytes(_png_header_only(1 << 20, 1 << 20))
    with pytest.raises(errors.ImageFileError, match="not a readable PNG image"):
        files.read_png(str(path), (HEIGHT, WIDTH, 1), 256)
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buffer, "JPEG")
    for data in (buffer.getvalue(), b"\x89PNG\r\n\x1a\n garbage"):
        path.write_bytes(data)
        with pytest.raises(errors.ImageFileError, match=f"{path}: not a readable PNG image"):
            files.read_png(str(path), (HEIGHT, WIDTH, 1), 256)


# Property tests: damaged real files give their image or the project's error, never another
# exception (bounded examples: a few seconds in all).
_PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_PROPERTY
@given(data=st.data())
def test_any_damaged_prnn_file_decodes_exactly_or_is_refused_and_spares_its_neighbour(kinds, data):
    kind = _kind(kinds, "row_lstm-binary-grey")
    good, seed = kind.files
    damaged = data.draw(mutations.mutated(seed), label="file")
    bad, beside = kind.decompress([damaged, good])
    np.testing.assert_array_equal(beside.image, kind.images[0])
    if bad.error is None:
        np.testing.assert_array_equal(bad.image, kind.images[1])
    else:
        assert bad.image is None and "\n" not in bad.error


@_PROPERTY
@given(payload=st.binary(max_size=64))
def test_random_payload_behind_a_valid_header_ends_in_the_image_or_the_checksum(kinds, payload):
    kind = _kind(kinds, "diagonal_bilstm-256-grey")
    header, _ = container.unpack(kind.files[0])
    (result,) = kind.decompress([container.pack(header, payload)])
    if result.error is None:  # the payload decoded to pixels whose checksum matches
        assert container.pixel_checksum(result.image) == header.checksum
        assert result.image.shape == kind.image_shape
    else:
        assert "damaged or truncated" in result.error


@pytest.fixture(scope="module")
def real_pngs(tmp_path_factory):
    """A binary greyscale and a 256-level RGB PNG, written by `files.write_png`."""
    rng = np.random.default_rng(3)
    out = tmp_path_factory.mktemp("pngs")
    files.write_png(str(out / "grey.png"), rng.integers(0, 2, (HEIGHT, WIDTH, 1)), 2)
    files.write_png(str(out / "rgb.png"), rng.integers(0, 256, (HEIGHT, WIDTH, 3)), 256)
    return {(1, 2): (out / "grey.png").read_bytes(), (3, 256): (out / "rgb.png").read_bytes()}


@_PROPERTY
@given(data=st.data())
def test_any_damaged_png_reads_as_the_models_image_or_one_line_error(real_pngs, tmp_path, data):
    (channels, levels), seed = data.draw(st.sampled_from(sorted(real_pngs.items())))
    damaged = data.draw(mutations.mutated(seed), label="png")
    if data.draw(st.booleans(), label="fix CRCs"):
        damaged = mutations.fix_png_crcs(damaged)
    path = tmp_path / "x.png"
    path.write_bytes(damaged)
    try:
        image = files.read_png(str(path), (HEIGHT, WIDTH, channels), levels)
    except errors.ImageFileError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert image.shape == (HEIGHT, WIDTH, channels) and image.dtype == np.int32
        assert image.min() >= 0 and image.max() < levels
