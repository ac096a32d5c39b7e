"""Parsers of the datasets' original file formats, written for untrusted input.

Every reader checks declared sizes against the bytes actually present before
it allocates, rejects anything it does not fully understand with a
`FormatError` naming the file, and never unpickles or extracts to disk:
archive members are streamed after passing the standard library's `'data'`
extraction filter (no absolute paths, no `..`, no links out of the archive,
no device files).

* `read_amat`: binarized MNIST's text matrices (one image per line, 784
  space-separated `0`/`1`).
* `read_idx`: MNIST's and Fashion-MNIST's gzipped IDX files (big-endian header, then uint8).
* `read_cifar10_tarball`: `cifar-10-binary.tar.gz` (rows of 1 label byte +
  3072 image bytes, channel-major).
* `iter_image_archive`: the downsampled ImageNet tars (one PNG per member).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image

from pixel_rnn_jax.data.download import PrepareError

MNIST_SIDE = 28
_AMAT_VALUES = MNIST_SIDE * MNIST_SIDE

# IDX magic: two zero bytes, a type code (0x08 = unsigned byte), the rank.
_IDX_UBYTE = 0x08
# MNIST has 60,000 training images; the bound only stops absurd headers. The data is read
# in chunks, so memory follows the bytes present, at most this many items' worth.
_IDX_MAX_ITEMS = 1_000_000
_CHUNK_BYTES = 1 << 20
# The official .amat files are 78 MB (train) and 16 MB; a larger file is refused unread
# (the reader takes a few bytes of memory per byte of file).
_AMAT_MAX_BYTES = 1 << 28

CIFAR10_PREFIX = "cifar-10-batches-bin/"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch.bin",)
CIFAR10_LABELS_FILE = "batches.meta.txt"
_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE
# The real batch files hold 10,000 records each: a larger member is refused unread.
_CIFAR_MAX_RECORDS_PER_FILE = 10_000
_MAX_LABELS_FILE_BYTES = 1 << 16
# The real tarball has 8 members; each listed member costs memory (tarfile keeps them).
_CIFAR_MAX_MEMBERS = 64


_AMAT_BYTE_KIND = np.zeros(256, np.uint8)
_AMAT_BYTE_KIND[[ord("0"), ord("1")]] = 1
_AMAT_BYTE_KIND[[ord(" "), ord("\t"), ord("\r")]] = 2
_AMAT_BYTE_KIND[ord("\n")] = 3


# What Pillow's `Image.open` raises on a damaged header besides OSError: found by
# `python -m experiments.fuzz --target=archive` (a truncated IHDR chunk is a ValueError).
_IMAGE_HEADER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


class FormatError(PrepareError):
    """A file is not in the format its dataset's readers expect."""


def read_amat(path: str) -> np.ndarray:
    """Reads a binarized MNIST `.amat` file.

    The format is text: one image per line, 784 values `0` or `1` separated
    by single spaces, in row-major order. The file is classified byte by byte
    (one uint8 class per byte), so memory stays a small multiple of the file
    size whatever the file claims.

    Args:
        path: The `.amat` file.

    Returns:
        uint8 `[num_lines, 28, 28, 1]` in {0, 1}; blank lines are skipped.

    Raises:
        FormatError: For any other byte, a token longer than one digit, a
            line without exactly 784 values, or a file over `_AMAT_MAX_BYTES`.
    """
    size = os.path.getsize(path)
    if size > _AMAT_MAX_BYTES:
        raise FormatError(
            f"{path}: {size} bytes, more than the {_AMAT_MAX_BYTES} a binarized MNIST .amat "
            "file can be (the official training file is 78 MB)."
        )
    raw = np.fromfile(path, dtype=np.uint8, count=_AMAT_MAX_BYTES)
    kind = _AMAT_BYTE_KIND[raw]  # [num_bytes]: 0 invalid, 1 digit, 2 blank, 3 newline.
    if (kind == 0).any():
        offset = int(np.argmax(kind == 0))
        raise FormatError(
            f"{path}: byte {bytes(raw[offset : offset + 1])!r} at offset {offset} is not 0, 1 "
            "or whitespace (binarized MNIST .amat holds 784 values 0/1 per line)."
        )
    digit = kind == 1
    adjacent = digit[1:] & digit[:-1]
    if adjacent.any():
        offset = int(np.argmax(adjacent))
        raise FormatError(f"{path}: a multi-digit value at offset {offset}; expected 0 or 1.")
    line_starts = np.concatenate([[0], np.flatnonzero(kind == 3) + 1])
    line_starts = line_starts[line_starts < len(raw)]
    # [num_lines]: values on each line; blank lines carry no image.
    counts = np.add.reduceat(digit, line_starts, dtype=np.int64) if len(raw) else np.zeros(0)
    counts = counts[counts > 0]
    wrong = np.flatnonzero(counts != _AMAT_VALUES)
    if len(wrong) or not len(counts):
        line, found = (int(wrong[0]) + 1, int(counts[wrong[0]])) if len(wrong) else (1, 0)
        raise FormatError(
            f"{path}: image {line} has {found} values, expected {_AMAT_VALUES} (28 x 28)."
        )
    values = raw[digit] - np.uint8(ord("0"))
    return values.reshape(len(counts), MNIST_SIDE, MNIST_SIDE, 1)


def _read_exactly(handle: io.BufferedIOBase, size: int, path: str, what: str) -> bytes:
    """`size` bytes, read in chunks: memory follows the bytes present, not the claim."""
    data = bytearray()
    while len(data) < size and (chunk := handle.read(min(_CHUNK_BYTES, size - len(data)))):
        data += chunk
    if len(data) != size:
        raise FormatError(f"{path}: truncated {what}: {len(data)} of {size} bytes.")
    return bytes(data)


def read_idx(path: str, item_shape: tuple[int, ...], max_items: int | None = None) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes (MNIST images or labels).

    Header: bytes `0, 0, 0x08, rank`, then `rank` big-endian uint32 sizes.
    The sizes are checked against `item_shape` and a bound before anything is
    allocated, the data is read in 1 MiB chunks (a header that claims more than
    the file holds costs only what it holds), and the data must end exactly
    where the header says.

    Args:
        path: A `*-idx?-ubyte.gz` file.
        item_shape: Expected sizes after the first: `(28, 28)` for images,
            `()` for labels.
        max_items: The most items the header may declare (the official count
            of a verified file); None: a generous bound against absurd headers.

    Returns:
        uint8 `[num_items, *item_shape]`.

    Raises:
        FormatError: For a bad magic number, rank or size, a truncated file
            or trailing bytes.
    """
    try:
        with gzip.open(path, "rb") as handle:
            magic = _read_exactly(handle, 4, path, "IDX header")
            zero, zero2, dtype, rank = magic
            if zero or zero2 or dtype != _IDX_UBYTE or rank != 1 + len(item_shape):
                raise FormatError(
                    f"{path}: IDX magic {magic.hex()}, expected 0000{_IDX_UBYTE:02x}"
                    f"{1 + len(item_shape):02x} (unsigned bytes of rank {1 + len(item_shape)})."
                )
            dims = struct.unpack(f">{rank}I", _read_exactly(handle, 4 * rank, path, "IDX sizes"))
            limit = _IDX_MAX_ITEMS if max_items is None else max_items
            if tuple(dims[1:]) != tuple(item_shape) or dims[0] > limit:
                raise FormatError(
                    f"{path}: IDX sizes {dims}, expected (n <= {limit}, "
                    f"{', '.join(map(str, item_shape))})."
                )
            count = int(np.prod(dims))
            data = _read_exactly(handle, count, path, "IDX data")
            if handle.read(1):
                raise FormatError(f"{path}: bytes after the {count} the IDX header declares.")
    # gzip.BadGzipFile is an OSError; a damaged deflate stream raises zlib.error.
    except (OSError, EOFError, zlib.error) as error:
        raise FormatError(f"{path}: not a readable gzip file ({error}).") from error
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _safe_members(
    tar: tarfile.TarFile, path: str, max_members: int | None = None
) -> Iterator[tarfile.TarInfo]:
    """Yields the archive's regular files that pass the standard `'data'` filter.

    With `max_members`, an archive listing more members is refused; without it the
    member list tarfile keeps is emptied as it goes (a streamed archive of millions of
    members then costs one member's memory).
    """
    for count, member in enumerate(tar, 1):
        if max_members is not None and count > max_members:
            raise FormatError(f"{path}: more than {max_members} archive members.")
        if max_members is None:
            tar.members.clear()  # tarfile.__iter__ then reads the next header from the stream.
        try:
            # The filter that `extractall(filter='data')` applies; the
            # destination only anchors the path checks.
            member = tarfile.data_filter(member, "/nonexistent-extraction-root")
        except (tarfile.FilterError, ValueError) as error:  # ValueError: a NUL in the name
            raise FormatError(f"{path}: unsafe archive member {member.name!r} ({error}).") from None
        if member.isfile():
            yield member


def _cifar_records(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % _CIFAR_RECORD:
        raise FormatError(
            f"{where}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte records."
        )
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = rows[:, 0].astype(np.int64)
    if labels.max(initial=0) >= 10:
        raise FormatError(f"{where}: label {labels.max()} outside [0, 10).")
    # Stored channel-major (R plane, G plane, B plane): -> [n, 32, 32, 3].
    images = rows[:, 1:].reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def read_cifar10_tarball(path: str) -> dict:
    """Reads `cifar-10-binary.tar.gz` without extracting it.

    Args:
        path: The tarball (members under `cifar-10-batches-bin/`).

    Returns:
        `{'train': (images, labels), 'test': (images, labels), 'label_names':
        [10 names]}`, images uint8 `[n, 32, 32, 3]`, labels int64 `[n]`, train
        in the order `data_batch_1.bin` ... `data_batch_5.bin`.

    Raises:
        FormatError: For an unreadable or unsafe archive, a missing or
            oversized member, a partial record or a label outside [0, 10).
    """
    wanted = {CIFAR10_PREFIX + name for name in (*CIFAR10_TRAIN_FILES, *CIFAR10_TEST_FILES)}
    wanted.add(CIFAR10_PREFIX + CIFAR10_LABELS_FILE)
    contents = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in _safe_members(tar, path, _CIFAR_MAX_MEMBERS):
                if member.name not in wanted:
                    continue
                limit = (
                    _MAX_LABELS_FILE_BYTES
                    if member.name.endswith(CIFAR10_LABELS_FILE)
                    else _CIFAR_MAX_RECORDS_PER_FILE * _CIFAR_RECORD
                )
                if member.size > limit:
                    raise FormatError(
                        f"{path}: member {member.name} is {member.size} bytes, more than "
                        f"its {limit} (CIFAR-10's batches hold 10,000 records)."
                    )
                contents[member.name] = _read_exactly(
                    tar.extractfile(member), member.size, path, f"member {member.name}"
                )
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise FormatError(f"{path}: not a readable .tar.gz ({error}).") from error
    missing = sorted(wanted - set(contents))
    if missing:
        raise FormatError(f"{path}: missing members {missing}.")
    out = {}
    for split, files in (("train", CIFAR10_TRAIN_FILES), ("test", CIFAR10_TEST_FILES)):
        parts = [_cifar_records(contents[CIFAR10_PREFIX + f], f"{path}:{f}") for f in files]
        out[split] = (
            np.concatenate([images for images, _ in parts]),
            np.concatenate([labels for _, labels in parts]),
        )
    try:
        text = contents[CIFAR10_PREFIX + CIFAR10_LABELS_FILE].decode("utf-8", errors="strict")
    except UnicodeDecodeError as error:
        raise FormatError(f"{path}: {CIFAR10_LABELS_FILE} is not UTF-8 text ({error}).") from None
    names = [name for name in text.split("\n") if name]  # As TFDS's cifar builder reads it.
    if len(names) != 10:
        raise FormatError(f"{path}: {CIFAR10_LABELS_FILE} has {len(names)} names, expected 10.")
    out["label_names"] = names
    return out


def iter_image_archive(
    path: str, side: int, max_member_bytes: int = 1 << 20
) -> Iterator[tuple[str, bytes]]:
    """Streams the images of a downsampled ImageNet tar (`train_32x32.tar`, ...).

    Each regular member is one PNG (or JPEG) of `side x side` RGB pixels; its
    bytes are passed on unchanged (as TFDS's builder stores them). Only the
    image header is parsed here, so a wrong size or mode is caught without
    decoding.

    Args:
        path: The uncompressed tar.
        side: Expected width and height (32 or 64).
        max_member_bytes: Larger members are rejected before being read.

    Yields:
        `(member path as TFDS names it, encoded image bytes)` in archive order.

    Raises:
        FormatError: For an unreadable or unsafe archive or a member that is
            not a `side x side` RGB image.
    """
    try:
        with tarfile.open(path, "r|") as tar:  # Stream: the train tars are 4-12 GB.
            for member in _safe_members(tar, path):
                if member.size > max_member_bytes:
                    raise FormatError(f"{path}: member {member.name} is {member.size} bytes.")
                encoded = tar.extractfile(member).read()
                try:
                    with Image.open(io.BytesIO(encoded)) as image:
                        size, mode, kind = image.size, image.mode, image.format
                except _IMAGE_HEADER_ERRORS as error:
                    raise FormatError(
                        f"{path}: member {member.name} is not an image ({error})."
                    ) from None
                if size != (side, side) or mode != "RGB" or kind not in ("PNG", "JPEG"):
                    raise FormatError(
                        f"{path}: member {member.name} is a {kind} {mode} image of size "
                        f"{size}, expected a {side}x{side} RGB PNG."
                    )
                # TFDS keys examples by the normalised member path.
                yield os.path.normpath(member.name), encoded
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise FormatError(f"{path}: not a readable .tar ({error}).") from error
