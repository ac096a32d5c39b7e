"""Tests of the original-format readers (pixel_rnn_jax.data.formats) on generated files."""

import gzip
import io
import pathlib
import struct
import tarfile
import tracemalloc

import data_fixtures
import mutations
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pixel_rnn_jax.data import formats


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_amat_round_trip_in_the_real_line_layout(tmp_path, rng):
    images = rng.integers(0, 2, (5, 28, 28, 1), dtype=np.uint8)
    path = tmp_path / "x.amat"
    data_fixtures.write_amat(path, images)
    # The official files have 1,568 bytes per image line ("0 1 ... 0\n").
    assert path.stat().st_size == 5 * 1568
    out = formats.read_amat(str(path))
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda text: text.replace("1", "2", 1), "is not 0, 1 or whitespace"),
        (lambda text: text.replace("1 ", "11 ", 1), "multi-digit"),
        (lambda text: text[: text.index("\n") - 2] + text[text.index("\n") :], "image 1 has 783"),
        (lambda text: text + "0 1\n", "image 3 has 2 values"),
        (lambda text: "", "image 1 has 0 values"),
        (lambda text: text.replace("0", "0.0", 1), "is not 0, 1 or whitespace"),
    ],
)
def test_amat_rejects_malformed_text(tmp_path, rng, mutate, message):
    path = tmp_path / "x.amat"
    data_fixtures.write_amat(path, rng.integers(0, 2, (2, 28, 28, 1), dtype=np.uint8))
    path.write_text(mutate(path.read_text()))
    with pytest.raises(formats.FormatError, match=message):
        formats.read_amat(str(path))


def test_amat_accepts_crlf_and_a_missing_final_newline(tmp_path, rng):
    images = rng.integers(0, 2, (2, 28, 28, 1), dtype=np.uint8)
    path = tmp_path / "x.amat"
    data_fixtures.write_amat(path, images)
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n")[:-2])
    np.testing.assert_array_equal(formats.read_amat(str(path)), images)


def test_idx_round_trip(tmp_path, rng):
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 3, dtype=np.uint8)
    data_fixtures.write_idx_gz(tmp_path / "i.gz", images)
    data_fixtures.write_idx_gz(tmp_path / "l.gz", labels)
    np.testing.assert_array_equal(formats.read_idx(str(tmp_path / "i.gz"), (28, 28)), images)
    np.testing.assert_array_equal(formats.read_idx(str(tmp_path / "l.gz"), ()), labels)


def _raw_idx(path, header, body=b""):
    with gzip.open(path, "wb") as handle:
        handle.write(header + body)


@pytest.mark.parametrize(
    "header, body, message",
    [
        # The header claims 10 images, the file holds 2: refused, not zero-padded.
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 10, 28, 28), bytes(2 * 784), "truncated"),
        # Four billion images: refused from the header, before reading or allocating.
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**32 - 1, 28, 28), b"", "IDX sizes"),
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 27, 28), bytes(27 * 28), "IDX sizes"),
        (bytes([0, 0, 0x0D, 3]) + struct.pack(">3I", 1, 28, 28), bytes(4 * 784), "IDX magic"),
        (bytes([0, 0, 8, 1]) + struct.pack(">I", 1), b"", "IDX magic"),
        (bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, 28, 28), bytes(785), "bytes after"),
        (bytes([0, 0]), b"", "truncated IDX header"),
    ],
)
def test_idx_checks_header_against_content(tmp_path, header, body, message):
    path = tmp_path / "bad.gz"
    _raw_idx(path, header, body)
    with pytest.raises(formats.FormatError, match=message):
        formats.read_idx(str(path), (28, 28))


def test_idx_count_bound_of_a_verified_file(tmp_path, rng):
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    data_fixtures.write_idx_gz(tmp_path / "i.gz", images)
    assert len(formats.read_idx(str(tmp_path / "i.gz"), (28, 28), max_items=3)) == 3
    with pytest.raises(formats.FormatError, match=r"expected \(n <= 2, 28, 28\)"):
        formats.read_idx(str(tmp_path / "i.gz"), (28, 28), max_items=2)


def test_idx_bomb_is_refused_before_allocating(tmp_path):
    # Issue 29: a 49-byte gzip declaring 10,000,000 images allocated 7.5 GiB before it
    # found the file truncated. Now the count bound refuses it from the header, and a count
    # within the bound costs only the bytes present (read in chunks).
    for count, message in ((10_000_000, "IDX sizes"), (formats._IDX_MAX_ITEMS, "truncated")):
        path = tmp_path / f"bomb{count}.gz"
        _raw_idx(path, bytes([0, 0, 8, 3]) + struct.pack(">3I", count, 28, 28))
        tracemalloc.start()
        with pytest.raises(formats.FormatError, match=message):
            formats.read_idx(str(path), (28, 28))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 4 << 20, f"{count} declared images: {peak} bytes allocated"


def test_amat_larger_than_any_official_file_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "x.amat"
    path.write_bytes(b"0 " * 1000)
    monkeypatch.setattr(formats, "_AMAT_MAX_BYTES", 1999)
    monkeypatch.setattr(np, "fromfile", lambda *a, **k: pytest.fail("read a refused file"))
    with pytest.raises(formats.FormatError, match="2000 bytes, more than the 1999"):
        formats.read_amat(str(path))


def test_idx_that_is_not_gzip(tmp_path):
    path = tmp_path / "plain"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(formats.FormatError, match="not a readable gzip"):
        formats.read_idx(str(path), ())


def _cifar(rng, n_train=7, n_test=3):
    return (
        (rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_train)),
        (rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test)),
    )


def test_cifar_round_trip_is_channel_major_to_hwc(tmp_path, rng):
    train, test = _cifar(rng)
    path = tmp_path / "c.tar.gz"
    data_fixtures.write_cifar_tarball(path, train, test)
    out = formats.read_cifar10_tarball(str(path))
    for split, (images, labels) in (("train", train), ("test", test)):
        np.testing.assert_array_equal(out[split][0], images)
        np.testing.assert_array_equal(out[split][1], labels)
    assert out["label_names"] == data_fixtures.CIFAR_NAMES
    # Byte 1 of a record is the red value of pixel (0, 0); byte 1025 its green one.
    record = data_fixtures.cifar_records(train[0][:1], train[1][:1])
    assert record[1] == train[0][0, 0, 0, 0] and record[1025] == train[0][0, 0, 0, 1]


def _tar_with(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)


def test_cifar_rejects_unsafe_members(tmp_path, rng):
    train, test = _cifar(rng)
    path = tmp_path / "c.tar.gz"
    data_fixtures.write_cifar_tarball(path, train, test, extra_members=[("../../evil", b"x")])
    with pytest.raises(formats.FormatError, match="unsafe archive member '../../evil'"):
        formats.read_cifar10_tarball(str(path))
    link = tarfile.TarInfo("cifar-10-batches-bin/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tar_with(path, [(link, None)])
    with pytest.raises(formats.FormatError, match="unsafe archive member"):
        formats.read_cifar10_tarball(str(path))


def test_cifar_rejects_partial_records_bad_labels_and_missing_members(tmp_path, rng):
    path = tmp_path / "c.tar.gz"
    train, test = _cifar(rng)
    data_fixtures.write_cifar_tarball(path, train, test)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]

    def rewrite(name, payload):
        out = []
        for info, data in members:
            if info.name == name:
                info = tarfile.TarInfo(name)
                info.size, data = len(payload), payload
            out.append((info, data))
        _tar_with(path, out)

    batch = "cifar-10-batches-bin/test_batch.bin"
    original = {m.name: d for m, d in members}[batch]
    rewrite(batch, original[:-5])
    with pytest.raises(formats.FormatError, match="whole number of 3073-byte records"):
        formats.read_cifar10_tarball(str(path))
    rewrite(batch, bytes([10]) + original[1:])
    with pytest.raises(formats.FormatError, match="label 10 outside"):
        formats.read_cifar10_tarball(str(path))
    _tar_with(path, [(m, d) for m, d in members if m.name != batch])
    with pytest.raises(formats.FormatError, match="missing members.*test_batch.bin"):
        formats.read_cifar10_tarball(str(path))
    path.write_bytes(b"not a tarball")
    with pytest.raises(formats.FormatError, match="not a readable .tar.gz"):
        formats.read_cifar10_tarball(str(path))


def test_image_archive_streams_png_bytes_unchanged(tmp_path, rng):
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "valid_32x32.tar"
    names = data_fixtures.write_imagenet_tar(path, "valid_32x32", images)
    out = list(formats.iter_image_archive(str(path), 32))
    assert [key for key, _ in out] == names
    assert [encoded for _, encoded in out] == [data_fixtures.png(image) for image in images]


def test_image_archive_rejects_wrong_images_and_unsafe_members(tmp_path, rng):
    path = tmp_path / "train_32x32.tar"
    data_fixtures.write_imagenet_tar(path, "t", rng.integers(0, 256, (1, 64, 64, 3), np.uint8))
    with pytest.raises(formats.FormatError, match=r"size \(64, 64\), expected a 32x32 RGB"):
        list(formats.iter_image_archive(str(path), 32))
    grey = rng.integers(0, 256, (1, 32, 32), np.uint8)  # PIL writes [h, w] as mode L.
    data_fixtures.write_imagenet_tar(path, "t", grey)
    with pytest.raises(formats.FormatError, match="L image"):
        list(formats.iter_image_archive(str(path), 32))
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("t/0.png")
        info.size = 10
        tar.addfile(info, io.BytesIO(b"garbage!!!"))
    with pytest.raises(formats.FormatError, match="not an image"):
        list(formats.iter_image_archive(str(path), 32))
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("t/../../up.png")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(formats.FormatError, match="unsafe archive member"):
        list(formats.iter_image_archive(str(path), 32))
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("t/big.png")
        info.size = 2048
        tar.addfile(info, io.BytesIO(bytes(2048)))
    with pytest.raises(formats.FormatError, match="2048 bytes"):
        list(formats.iter_image_archive(str(path), 32, max_member_bytes=1024))


def test_cifar_member_counts_and_sizes_are_bounded_before_reading(tmp_path, rng):
    path = tmp_path / "c.tar.gz"
    train, test = _cifar(rng)
    extra = [(f"cifar-10-batches-bin/x{i}", b"") for i in range(formats._CIFAR_MAX_MEMBERS)]
    data_fixtures.write_cifar_tarball(path, train, test, extra_members=extra)
    with pytest.raises(
        formats.FormatError, match=f"more than {formats._CIFAR_MAX_MEMBERS} archive"
    ):
        formats.read_cifar10_tarball(str(path))
    records = formats._CIFAR_MAX_RECORDS_PER_FILE + 1
    big = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    big.size = records * 3073  # declared only: the header is refused before any read
    path.write_bytes(gzip.compress(big.tobuf() + bytes(1024)))
    with pytest.raises(formats.FormatError, match=f"{records * 3073} bytes, more than its"):
        formats.read_cifar10_tarball(str(path))


def test_cifar_label_names_that_are_not_utf8_are_one_line(tmp_path, rng):
    path = tmp_path / "c.tar.gz"
    data_fixtures.write_cifar_tarball(path, *_cifar(rng))
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    names = "cifar-10-batches-bin/batches.meta.txt"
    bad = tarfile.TarInfo(names)
    bad.size = 2
    _tar_with(path, [(bad, b"\xff\xfe") if m.name == names else (m, d) for m, d in members])
    with pytest.raises(formats.FormatError, match="is not UTF-8 text"):
        formats.read_cifar10_tarball(str(path))


def test_a_streamed_image_archive_keeps_no_member_list(tmp_path, rng, monkeypatch):
    path = tmp_path / "valid_32x32.tar"
    data_fixtures.write_imagenet_tar(path, "v", rng.integers(0, 256, (5, 32, 32, 3), np.uint8))
    seen = []
    real_open = tarfile.open

    def spy(*args, **kwargs):
        tar = real_open(*args, **kwargs)
        seen.append(tar)
        return tar

    monkeypatch.setattr(tarfile, "open", spy)
    assert len(list(formats.iter_image_archive(str(path), 32))) == 5
    assert len(seen[0].members) <= 1


# Property tests: damaged real files give a right result or a FormatError, never another
# exception, and an IDX file never costs more memory than its bytes (bounded examples).
_PROPERTY = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _idx_bytes(array):
    array = np.asarray(array, np.uint8)
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


@_PROPERTY
@given(data=st.data())
def test_any_damaged_idx_file_is_read_right_or_refused_within_its_bytes(tmp_path, data):
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    content = data.draw(mutations.mutated(_idx_bytes(images)), label="content")
    packed = gzip.compress(content, mtime=0)
    if data.draw(st.booleans(), label="damage the gzip"):
        packed = data.draw(mutations.mutated(packed), label="gzip")
    path = tmp_path / "i.gz"
    path.write_bytes(packed)
    tracemalloc.start()
    try:
        out = formats.read_idx(str(path), (28, 28))
    except formats.FormatError as error:
        assert "\n" not in str(error)
    else:  # whatever it returns is what the file holds
        assert out.shape[1:] == (28, 28) and out.tobytes() == gzip.decompress(packed)[16:]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 3 * len(content) + (4 << 20)


@_PROPERTY
@given(data=st.data())
def test_any_damaged_amat_file_is_read_right_or_refused(tmp_path, data):
    path = tmp_path / "x.amat"
    data_fixtures.write_amat(path, np.random.default_rng(0).integers(0, 2, (2, 28, 28, 1)))
    path.write_bytes(data.draw(mutations.mutated(path.read_bytes()), label="amat"))
    try:
        out = formats.read_amat(str(path))
    except formats.FormatError as error:
        assert "\n" not in str(error)
    else:
        assert out.shape[1:] == (28, 28, 1) and set(np.unique(out)) <= {0, 1}


@pytest.fixture(scope="module")
def cifar_tar():
    """The uncompressed bytes of a small CIFAR-10-style tarball."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        images, labels = _cifar(rng, 2, 1)[0]
        for name in (*formats.CIFAR10_TRAIN_FILES, *formats.CIFAR10_TEST_FILES):
            body = data_fixtures.cifar_records(images[:1], labels[:1])
            info = tarfile.TarInfo(formats.CIFAR10_PREFIX + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
        names = ("\n".join(data_fixtures.CIFAR_NAMES) + "\n").encode()
        info = tarfile.TarInfo(formats.CIFAR10_PREFIX + formats.CIFAR10_LABELS_FILE)
        info.size = len(names)
        tar.addfile(info, io.BytesIO(names))
    return buffer.getvalue()


@_PROPERTY
@given(data=st.data())
def test_any_damaged_cifar_tarball_is_read_right_or_refused(tmp_path, cifar_tar, data):
    path = tmp_path / "c.tar.gz"
    path.write_bytes(gzip.compress(data.draw(mutations.mutated(cifar_tar), label="tar"), mtime=0))
    try:
        out = formats.read_cifar10_tarball(str(path))
    except formats.FormatError as error:
        assert "\n" not in str(error)
    else:
        for split in ("train", "test"):
            images, labels = out[split]
            assert images.shape[1:] == (32, 32, 3) and len(images) == len(labels)
            assert labels.max(initial=0) < 10
        assert len(out["label_names"]) == 10


@_PROPERTY
@given(data=st.data())
def test_any_damaged_image_archive_streams_right_or_is_refused(tmp_path, data):
    path = tmp_path / "valid_32x32.tar"
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
    data_fixtures.write_imagenet_tar(path, "v", images)
    path.write_bytes(data.draw(mutations.mutated(path.read_bytes()), label="tar"))
    try:
        for _, encoded in formats.iter_image_archive(str(path), 32):
            assert isinstance(encoded, bytes)
    except formats.FormatError as error:
        assert "\n" not in str(error)


def test_a_nul_in_a_pax_member_name_is_an_unsafe_member(tmp_path):
    # tarfile.data_filter raises ValueError ("embedded null byte"), not a FilterError.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("cifar-10-batches-bin/x")
        info.pax_headers = {"path": "cifar-10-batches-bin/a\0b"}
        tar.addfile(info, io.BytesIO(b""))
    path = tmp_path / "c.tar.gz"
    path.write_bytes(gzip.compress(buffer.getvalue()))
    with pytest.raises(formats.FormatError, match="unsafe archive member"):
        formats.read_cifar10_tarball(str(path))
    plain = tmp_path / "t.tar"
    plain.write_bytes(buffer.getvalue())
    with pytest.raises(formats.FormatError, match="unsafe archive member"):
        list(formats.iter_image_archive(str(plain), 32))


FUZZ_CRASHES = pathlib.Path(__file__).resolve().parent / "fixtures" / "fuzz"


def test_fuzzer_found_archive_with_a_truncated_png_header_is_one_line():
    # Found by `python -m experiments.fuzz --target=archive` (2026-12-07): Pillow's
    # Image.open raised ValueError("Truncated IHDR chunk") through iter_image_archive.
    path = FUZZ_CRASHES / "archive-truncated-ihdr.tar"
    with pytest.raises(formats.FormatError, match="is not an image .*Truncated IHDR chunk"):
        list(formats.iter_image_archive(str(path), 32))
