"""Tests of fetching and verification (pixel_rnn_jax.data.download), against 127.0.0.1 only."""

import gzip
import hashlib
import os
import time

import data_fixtures
import pytest

from pixel_rnn_jax.data import download


@pytest.fixture(autouse=True)
def _local_only(monkeypatch):
    attempts = data_fixtures.allow_only_localhost(monkeypatch)
    yield
    assert not attempts, f"a test tried to reach {attempts}"


@pytest.fixture
def served(tmp_path):
    """A 300 kB file of known bytes behind a local HTTP server."""
    directory = tmp_path / "served"
    directory.mkdir()
    payload = os.urandom(300_000)
    (directory / "blob.bin").write_bytes(payload)
    with data_fixtures.FixtureServer(str(directory)) as server:
        yield server, payload


FAST = download.RetryPolicy(timeout=5, retries=0, backoff=0.01)


def test_tfds_checksums_are_read_from_the_installed_package():
    sums = download.tfds_checksums("binarized_mnist")
    assert sorted(sums) == [
        "binarized_mnist_test.amat",
        "binarized_mnist_train.amat",
        "binarized_mnist_valid.amat",
    ]
    train = sums["binarized_mnist_train.amat"]
    # 50,000 lines of 784 one-digit values and their separators: 1,568 bytes per line.
    assert train.size == 50_000 * 1568
    assert train.url.startswith("http://www.cs.toronto.edu/") and len(train.sha256) == 64
    for name, count in (
        ("mnist", 4),
        ("fashion_mnist", 4),
        ("cifar10", 1),
        ("downsampled_imagenet", 4),
    ):
        assert len(download.tfds_checksums(name)) == count
    assert download.tfds_checksums("cifar10")["cifar-10-binary.tar.gz"].size == 170_052_171


def test_verify_file_on_a_known_digest_and_its_corruption(tmp_path):
    path = tmp_path / "abc"
    path.write_bytes(b"abc")
    # FIPS 180-2 test vector: SHA-256("abc").
    known = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert download.sha256_file(str(path)) == known
    download.verify_file(str(path), download.FileChecksum("u", 3, known, "abc"))
    path.write_bytes(b"abd")
    with pytest.raises(download.ChecksumError) as info:
        download.verify_file(str(path), download.FileChecksum("u", 3, known, "abc"))
    message = str(info.value)
    assert str(path) in message and known in message
    assert hashlib.sha256(b"abd").hexdigest() in message and "\n" not in message
    with pytest.raises(download.ChecksumError, match="size 3 bytes, expected 4 bytes"):
        download.verify_file(str(path), download.FileChecksum("u", 4, known, "abc"))


def test_verify_file_accepts_a_recompressed_copy_by_its_content_only(tmp_path):
    content = bytes(range(256)) * 40
    original, copy = tmp_path / "original.gz", tmp_path / "copy.gz"
    with gzip.open(original, "wb") as handle:  # names the file in its header
        handle.write(content)
    copy.write_bytes(gzip.compress(content, mtime=0))  # no name: another archive digest
    archive = download.FileChecksum(
        "u", original.stat().st_size, download.sha256_file(str(original)), "f.gz"
    )
    known = download.ContentDigest(len(content), hashlib.sha256(content).hexdigest())
    download.verify_file(str(original), archive, known)  # the archive itself
    download.verify_file(str(copy), archive, known)  # a re-compression of its content
    with pytest.raises(download.ChecksumError, match="no digest of its decompressed content"):
        download.verify_file(str(copy), archive)  # only the archive without a content digest
    other = tmp_path / "other.gz"
    other.write_bytes(gzip.compress(content[:-1] + b"x", mtime=0))
    with pytest.raises(download.ChecksumError) as info:
        download.verify_file(str(other), archive, known)
    assert "neither the archive" in str(info.value) and known.sha256 in str(info.value)


def test_gunzip_digest_reads_no_more_than_its_bound(tmp_path):
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(50 << 20)))  # 50 MiB of zeros in ~50 KiB
    assert download.gunzip_sha256(str(bomb), 1000)[0] == 1001  # stopped just past the bound
    with pytest.raises(download.ChecksumError, match="more than 1000 bytes"):
        download.verify_file(
            str(bomb),
            download.FileChecksum("u", 1, "0" * 64, "bomb.gz"),
            download.ContentDigest(1000, "0" * 64),
        )


def test_fetch_writes_the_file_atomically(served, tmp_path):
    server, payload = served
    dest = tmp_path / "out" / "blob.bin"
    assert download.fetch(f"{server.url}/blob.bin", str(dest), FAST) == str(dest)
    assert dest.read_bytes() == payload
    assert not os.path.exists(f"{dest}.part")
    # An existing complete file is not fetched again.
    requests_before = len(server.requests)
    download.fetch(f"{server.url}/blob.bin", str(dest), FAST)
    assert len(server.requests) == requests_before


def test_dropped_connection_leaves_a_part_that_the_next_run_resumes(served, tmp_path):
    server, payload = served
    dest = tmp_path / "blob.bin"
    server.drop_after["blob.bin"] = 120_000
    with pytest.raises(download.DownloadError) as info:
        download.fetch(f"{server.url}/blob.bin", str(dest), FAST)
    assert f"{server.url}/blob.bin" in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists()
    part = tmp_path / "blob.bin.part"
    assert 0 < part.stat().st_size <= 120_000
    kept = part.stat().st_size
    assert part.read_bytes() == payload[:kept]

    download.fetch(f"{server.url}/blob.bin", str(dest), FAST)
    assert dest.read_bytes() == payload and not part.exists()
    assert server.requests[-1] == ("blob.bin", f"bytes={kept}-")


def test_retries_resume_within_one_run(served, tmp_path):
    server, payload = served
    server.drop_after["blob.bin"] = 50_000
    dest = tmp_path / "blob.bin"
    download.fetch(f"{server.url}/blob.bin", str(dest), download.RetryPolicy(5, 2, 0.01))
    assert dest.read_bytes() == payload
    assert [r for _, r in server.requests] == [None, "bytes=50000-"]


def test_a_complete_part_is_finished_without_refetching(served, tmp_path):
    server, payload = served
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload)  # Complete but never renamed.
    download.fetch(f"{server.url}/blob.bin", str(dest), FAST)
    assert dest.read_bytes() == payload
    assert server.requests == [("blob.bin", f"bytes={len(payload)}-")]


def test_a_part_longer_than_the_file_is_discarded_and_refetched(served, tmp_path):
    server, payload = served
    dest = tmp_path / "blob.bin"
    (tmp_path / "blob.bin.part").write_bytes(payload + b"stale tail")
    download.fetch(f"{server.url}/blob.bin", str(dest), download.RetryPolicy(5, 1, 0.01))
    assert dest.read_bytes() == payload
    assert server.requests == [("blob.bin", f"bytes={len(payload) + 10}-"), ("blob.bin", None)]


def test_http_error_is_one_line(served, tmp_path):
    server, _ = served
    with pytest.raises(download.DownloadError, match="404") as info:
        download.fetch(f"{server.url}/missing.bin", str(tmp_path / "m"), FAST)
    assert "\n" not in str(info.value) and f"{server.url}/missing.bin" in str(info.value)


def test_unresponsive_server_fails_within_the_timeout(tmp_path):
    policy = download.RetryPolicy(timeout=0.5, retries=1, backoff=0.1)
    with data_fixtures.SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(download.DownloadError) as info:
            download.fetch(f"{server.url}/blob.bin", str(tmp_path / "b"), policy)
        elapsed = time.monotonic() - start
    # Two attempts of 0.5 s plus a 0.1 s back-off, with slack for a loaded machine.
    assert 1.0 <= elapsed < 10
    assert "timed out" in str(info.value).lower() and "after 2 attempt(s)" in str(info.value)
    assert "\n" not in str(info.value)


def test_refused_connection_is_one_line(tmp_path):
    with data_fixtures.SilentServer() as server:
        url = f"{server.url}/blob.bin"
    with pytest.raises(download.DownloadError, match="Could not download http://127.0.0.1"):
        download.fetch(url, str(tmp_path / "b"), FAST)


def test_locate_files_from_a_mirror_and_from_a_directory(served, tmp_path):
    server, payload = served
    official = {"blob.bin": "https://example.invalid/official/blob.bin"}
    paths = download.locate_files(official, server.url + "/mirror/", str(tmp_path / "dl"), FAST)
    assert paths == {"blob.bin": str(tmp_path / "dl" / "blob.bin")}
    assert server.requests[-1][0] == "blob.bin"
    local = download.locate_files(official, server.directory, str(tmp_path / "unused"), FAST)
    assert local == {"blob.bin": os.path.join(server.directory, "blob.bin")}
    assert not (tmp_path / "unused").exists()
    with pytest.raises(download.DownloadError, match="must hold other.bin"):
        download.locate_files({"other.bin": "x"}, server.directory, str(tmp_path), FAST)


def test_a_download_longer_than_the_expected_size_is_stopped_there(served, tmp_path):
    server, payload = served
    dest = tmp_path / "blob.bin"
    limit = len(payload) - 1
    # Announced too long: refused before any byte is written.
    with pytest.raises(download.TooLargeError, match=f"at most {limit}; stopped") as info:
        download.fetch(f"{server.url}/blob.bin", str(dest), FAST, max_bytes=limit)
    assert "\n" not in str(info.value)
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()
    # No length announced: the stream is counted and cut at the limit, and not retried.
    server.hide_length.add("blob.bin")
    requests_before = len(server.requests)
    retrying = download.RetryPolicy(timeout=5, retries=2, backoff=0.01)
    with pytest.raises(download.TooLargeError):
        download.fetch(f"{server.url}/blob.bin", str(dest), retrying, max_bytes=limit)
    assert len(server.requests) == requests_before + 1
    assert not dest.exists() and not (tmp_path / "blob.bin.part").exists()
    # At the limit exactly, the file is whole.
    download.fetch(f"{server.url}/blob.bin", str(dest), FAST, max_bytes=len(payload))
    assert dest.read_bytes() == payload


def test_size_limits_follow_the_known_sizes():
    official = download.FileChecksum("u", 1000, "0" * 64, "f.gz")
    assert download.size_limit(official, None, verify=True) == 1000
    content = download.ContentDigest(size=70_000, sha256="0" * 64)
    # A re-compressed copy may be a stored gzip of the content: 2 blocks, header, trailer.
    assert download.size_limit(official, content, verify=True) == 70_000 + 10 + 1024
    assert download.size_limit(official, None, verify=False) == 2000 + (1 << 20)
