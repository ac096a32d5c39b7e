"""Fetching and verifying the original files of a dataset.

Known sizes and SHA-256 digests come from the `checksums.tsv` / `url_checksums`
files that the installed `tensorflow_datasets` package ships for its own
builders, read at run time: the official files are then byte-identical to the
ones TFDS's builders would have downloaded.

Downloads are resumable: bytes go to `<name>.part` and an interrupted transfer
is continued with an HTTP `Range` request (by the next retry or the next run);
only a complete file is renamed to `<name>`, so a file without `.part` is
always whole. A transfer that announces or delivers more bytes than the file
can have (`size_limit`) is stopped there and its part removed: the disk never
takes more than the expected size. Every failure raises a `PrepareError` whose
message is one line.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping

import requests
import tensorflow_datasets as tfds
import tqdm
import urllib3
from absl import logging

from pixel_rnn_jax import errors

# Where TFDS keeps the checksums of each builder, relative to its package root.
# Builders in `datasets/<name>/` ship a `checksums.tsv`; older ones in
# `image_classification/` have theirs in `url_checksums/<name>.txt`.
_TFDS_CHECKSUM_FILES = {
    "binarized_mnist": "datasets/binarized_mnist/checksums.tsv",
    "mnist": "url_checksums/mnist.txt",
    "fashion_mnist": "url_checksums/fashion_mnist.txt",
    "cifar10": "url_checksums/cifar10.txt",
    "downsampled_imagenet": "datasets/downsampled_imagenet/checksums.tsv",
}

_CHUNK_BYTES = 1 << 20


class PrepareError(errors.UserError, RuntimeError):
    """A dataset could not be prepared; the message is one line saying why and what to do."""


class DownloadError(PrepareError):
    """A file could not be fetched (network, HTTP status, missing local file)."""


class ChecksumError(PrepareError):
    """A file's size or SHA-256 differs from the known one."""


class TooLargeError(DownloadError):
    """A download is longer than the file it should be (stopped, not retried)."""


@dataclasses.dataclass(frozen=True)
class FileChecksum:
    """The known identity of one original file.

    Attributes:
        url: Official URL (what TFDS downloads).
        size: Size in bytes.
        sha256: Hex SHA-256 digest.
        filename: Base name of the file.
    """

    url: str
    size: int
    sha256: str
    filename: str


@dataclasses.dataclass(frozen=True)
class ContentDigest:
    """The known identity of a gzip file's decompressed content.

    A re-compressed copy of an official `.gz` file (Debian's packages drop the
    file name from the gzip header) has another archive digest but the same
    content, which is what the dataset is made of.

    Attributes:
        size: Decompressed size in bytes.
        sha256: Hex SHA-256 digest of the decompressed bytes.
    """

    size: int
    sha256: str


def tfds_checksums(tfds_builder: str) -> dict[str, FileChecksum]:
    """Reads the checksums TFDS ships for one of its builders.

    Args:
        tfds_builder: Builder name without config, a key of `_TFDS_CHECKSUM_FILES`.

    Returns:
        `{filename: FileChecksum}` for every file the builder downloads.

    Raises:
        PrepareError: If the installed TFDS lacks the file (a TFDS version
            that moved it); the message names the path looked at.
    """
    root = os.path.dirname(tfds.__file__)
    path = os.path.join(root, _TFDS_CHECKSUM_FILES[tfds_builder])
    if not os.path.isfile(path):
        raise PrepareError(
            f"Checksums of {tfds_builder!r} not found at {path} (tensorflow_datasets "
            f"{tfds.__version__}); rerun with --no_verify_checksums to skip verification."
        )
    entries = {}
    with open(path) as handle:
        for line in handle:
            fields = line.split()
            if not fields or line.startswith("#"):
                continue
            # `url size sha256 [filename]`; the filename column is optional in TFDS.
            url, size, sha256 = fields[:3]
            filename = fields[3] if len(fields) > 3 else url.rsplit("/", 1)[-1]
            entries[filename] = FileChecksum(url, int(size), sha256.lower(), filename)
    return entries


def sha256_file(path: str) -> str:
    """Returns the hex SHA-256 of a file, reading it in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def gunzip_sha256(path: str, max_size: int) -> tuple[int, str]:
    """Returns `(size, SHA-256)` of a gzip file's content, reading at most `max_size + 1` bytes.

    The content is streamed through the digest in 1 MiB chunks, so memory stays
    bounded whatever the file claims; a content longer than `max_size` stops the
    read and reports `max_size + 1` as its size.

    Raises:
        ChecksumError: If the file is not a complete gzip stream (a truncated
            file, or one whose CRC or length trailer fails).
    """
    digest = hashlib.sha256()
    size = 0
    try:
        with gzip.open(path, "rb") as handle:
            while size <= max_size and (
                chunk := handle.read(min(_CHUNK_BYTES, max_size + 1 - size))
            ):
                digest.update(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError.
        raise ChecksumError(f"{path}: not a complete gzip file ({error}).") from error
    return size, digest.hexdigest()


def verify_file(path: str, expected: FileChecksum, content: ContentDigest | None = None) -> None:
    """Accepts a file whose archive matches `expected`, or whose content matches `content`.

    The size is compared before the SHA-256, so a file of the wrong size is
    refused without hashing it. Without a known content digest only the
    original archive is accepted, and the message says so.

    Args:
        path: The file.
        expected: The official archive's identity (TFDS's checksum list).
        content: The identity of its decompressed content, where known (a
            re-compressed copy of the official archive is then accepted).

    Raises:
        ChecksumError: Naming the file, the expected and the actual value.
    """
    size = os.path.getsize(path)
    if size == expected.size:
        actual = sha256_file(path)
        if actual == expected.sha256:
            return
        archive = f"SHA-256 {actual}, expected {expected.sha256}"
    else:
        archive = f"size {size} bytes, expected {expected.size} bytes"
    what = f"{expected.filename} ({expected.url})"
    if content is None:
        raise ChecksumError(
            f"{path}: {archive} for {what}; no digest of its decompressed content is known, so "
            "only the original archive is accepted (rerun with --no_verify_checksums to skip "
            "verification of a copy you trust)."
        )
    expected_content = f"{content.size} bytes with SHA-256 {content.sha256}"
    try:
        content_size, content_sha = gunzip_sha256(path, content.size)
    except ChecksumError as error:
        raise ChecksumError(
            f"{error} Expected {what}, or a re-compression of its content ({expected_content})."
        ) from error
    if (content_size, content_sha) != (content.size, content.sha256):
        got = (
            f"more than {content.size} bytes"
            if content_size > content.size
            else f"{content_size} bytes with SHA-256 {content_sha}"
        )
        raise ChecksumError(
            f"{path}: neither the archive ({archive}) nor its decompressed content ({got}, "
            f"expected {expected_content}) is that of {what}."
        )
    logging.info("%s: a re-compressed copy of %s, accepted by its content digest.", path, what)


def size_limit(expected: FileChecksum, content: ContentDigest | None, verify: bool) -> int:
    """The most bytes a download of `expected` may take before it is stopped.

    Args:
        expected: The official file's identity.
        content: Its decompressed content's, where a re-compressed copy is accepted.
        verify: Whether the file will be verified; without verification a copy may
            differ, so twice the bound (plus 1 MiB) is allowed.

    Returns:
        The official size, or where a re-compressed copy is accepted the larger of it and
        the largest gzip of the content (stored blocks: 5 bytes per 64 KiB block, plus a
        1 KiB header and trailer).
    """
    limit = expected.size
    if content is not None:
        limit = max(limit, content.size + 5 * (content.size // 65535 + 1) + 1024)
    return limit if verify else 2 * limit + _CHUNK_BYTES


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one download.

    Attributes:
        timeout: Seconds to wait for a connection and between received bytes.
        retries: Further attempts after the first failure.
        backoff: Seconds before the first retry, doubled before each next one.
    """

    timeout: float = 30.0
    retries: int = 3
    backoff: float = 1.0


DEFAULT_POLICY = RetryPolicy()


def _content_range_start(header: str | None) -> int | None:
    # "bytes 100-199/200" -> 100.
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", header or "")
    return int(match.group(1)) if match else None


def _too_large(url: str, part: str, size: int, limit: int) -> TooLargeError:
    if os.path.exists(part):
        os.remove(part)  # its bytes are not the expected file's: a rerun must not resume them
    return TooLargeError(
        f"Could not download {url}: it is {size} bytes or more, the file it should be has at "
        f"most {limit}; stopped (a wrong --source or mirror?)."
    )


def _attempt(
    url: str,
    part: str,
    timeout: float,
    progress: Callable[[int, int | None], tqdm.tqdm],
    max_bytes: int | None = None,
) -> None:
    """Streams `url` into `part`, continuing from its current size, stopping past `max_bytes`.

    Raises:
        TooLargeError: The server announced, or sent, more than `max_bytes`; `part` is
            removed.
        requests.RequestException / urllib3.exceptions.HTTPError / OSError: On
            any transfer problem; `part` then holds every byte received so far.
        _IncompleteError: If the server closed the connection early.
    """
    offset = os.path.getsize(part) if os.path.exists(part) else 0
    # identity: the bytes on disk must be the file's bytes, not a re-encoding to undo.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if offset and response.status_code == 416:
            # "bytes */N": nothing at or after `offset`. A part of exactly N bytes is
            # the whole file; any other (a longer, stale part) is discarded.
            match = re.fullmatch(r"bytes \*/(\d+)", response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return
            os.remove(part)
            raise _IncompleteError(f"{part} is longer than the remote file; starting again")
        response.raise_for_status()
        if offset and (
            response.status_code != 206
            or _content_range_start(response.headers.get("Content-Range")) != offset
        ):
            offset = 0  # The server ignored the range: start again from byte 0.
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        if max_bytes is not None and total is not None and total > max_bytes:
            raise _too_large(url, part, total, max_bytes)
        received = offset
        with open(part, "ab" if offset else "wb") as handle, progress(offset, total) as bar:
            # read1 returns whatever has arrived, so a dropped connection loses
            # nothing already received (iter_content would drop a partial chunk).
            while chunk := response.raw.read1(_CHUNK_BYTES, decode_content=False):
                if max_bytes is not None and received + len(chunk) > max_bytes:
                    handle.close()
                    raise _too_large(url, part, received + len(chunk), max_bytes)
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise _IncompleteError(f"connection closed after {received} of {total} bytes")


class _IncompleteError(OSError):
    """The server sent fewer bytes than it announced."""


def _progress_bar(name: str) -> Callable[[int, int | None], tqdm.tqdm]:
    def make(initial: int, total: int | None) -> tqdm.tqdm:
        # unit_scale shows MB/GB and MB/s; tqdm adds the ETA when `total` is known.
        return tqdm.tqdm(
            desc=name, initial=initial, total=total, unit="B", unit_scale=True, unit_divisor=1024
        )

    return make


def fetch(
    url: str, dest: str, policy: RetryPolicy = DEFAULT_POLICY, max_bytes: int | None = None
) -> str:
    """Downloads `url` to `dest` unless `dest` already exists.

    Bytes go to `dest + '.part'`; a failed attempt keeps them, and the next
    attempt (a retry, or the next run) asks only for the rest with an HTTP
    `Range` request. `dest` appears, by rename, only once the transfer ended
    with every announced byte.

    Args:
        url: `http(s)://` URL.
        dest: Final path; its directory is created.
        policy: Timeout and retries.
        max_bytes: The most bytes the file can have (`size_limit`); a transfer
            past it is stopped at once (no retry) and its part removed.

    Returns:
        `dest`.

    Raises:
        DownloadError: After the last failed attempt, one line naming the URL
            and the error.
        TooLargeError: The file is longer than `max_bytes`.
    """
    if os.path.exists(dest):
        return dest
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    part = dest + ".part"
    progress = _progress_bar(os.path.basename(dest))
    for attempt in range(policy.retries + 1):
        try:
            _attempt(url, part, policy.timeout, progress, max_bytes)
        # urllib3 errors come from reading `response.raw` directly (not wrapped by requests).
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as error:
            if attempt == policy.retries:
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise DownloadError(
                    f"Could not download {url}: {first_line} (after {attempt + 1} attempt(s); "
                    f"{os.path.getsize(part) if os.path.exists(part) else 0} bytes kept in "
                    f"{part}, a rerun resumes)."
                ) from error
            time.sleep(policy.backoff * 2**attempt)
            continue
        os.replace(part, dest)
        return dest
    raise AssertionError("unreachable")


def is_url(source: str) -> bool:
    """True for an `http://` or `https://` source, False for a local path."""
    return source.startswith(("http://", "https://"))


def locate_files(
    filenames: Mapping[str, str],
    source: str,
    download_dir: str,
    policy: RetryPolicy = DEFAULT_POLICY,
    limits: Mapping[str, int] | None = None,
) -> dict[str, str]:
    """Returns local paths of the named files, downloading them if `source` is a URL.

    Args:
        filenames: `{filename: official URL}`.
        source: `'official'` (each file's own URL), a URL prefix (a mirror:
            `<prefix>/<filename>`), or a local directory holding the files.
        download_dir: Where downloads are kept (reused by later runs).
        policy: Timeout and retries of each download.
        limits: `{filename: most bytes}` (`size_limit`): a download is stopped past it.

    Returns:
        `{filename: local path}`.

    Raises:
        DownloadError: For a file missing from a local directory or a failed
            download.
    """
    paths = {}
    for filename, official_url in filenames.items():
        if source == "official" or is_url(source):
            url = official_url if source == "official" else f"{source.rstrip('/')}/{filename}"
            limit = (limits or {}).get(filename)
            paths[filename] = fetch(url, os.path.join(download_dir, filename), policy, limit)
        else:
            path = os.path.join(os.path.expanduser(source), filename)
            if not os.path.isfile(path):
                raise DownloadError(f"{path} not found (--source={source} must hold {filename}).")
            paths[filename] = path
    return paths
