"""The .prnn file: a small header, then the range coder's bytes.

Byte layout (version 1); integers big-endian, "varint" = unsigned LEB128 (1 byte below 128):

  offset  size  field
  0       2     magic b"PR"
  2       1     format version (1)
  3       4     model fingerprint (`fingerprint`): model fields + parameters, truncated SHA-256
  7       1+    height (varint)
  .       1+    width (varint)
  .       1     mode: bits 0-1 channels - 1, bit 2 a label follows, bits 3-5 log2(levels) - 1,
                bits 6-7 zero
  .       1+    label (varint), only when mode bit 2 is set
  .       4     CRC-32 (zlib) of the pixels, one byte per sub-pixel, raster-then-channel order
  .       rest  payload: the range coder's stream (`entropy`), to the end of the file

14 bytes for an unlabelled 28x28 image (15 with a label below 128). The payload has no
length field: a truncated payload decodes to other pixels and fails the checksum.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib

import jax
import ml_collections
import numpy as np

from pixel_rnn_jax import errors, model_fields

MAGIC = b"PR"
VERSION = 1
FINGERPRINT_BYTES = 4
CHECKSUM_BYTES = 4
# Version-1 files written before 2026-12-07 hashed `schedule` with the function's fields;
# every file now hashes its default in its place, so that a file written under the default
# config keeps its fingerprint (`model_fields`: the schedule is execution-only).
_HASHED_SCHEDULE = "auto"


@dataclasses.dataclass(frozen=True)
class Header:
    """The fields of a .prnn header."""

    fingerprint: bytes  # FINGERPRINT_BYTES
    height: int
    width: int
    channels: int  # 1..4
    levels: int  # a power of two, 2..256
    label: int | None  # the class of a class-conditional model's image, else None
    checksum: int  # `pixel_checksum` of the image


def fingerprint(model_config: ml_collections.ConfigDict, params) -> bytes:
    """The model's identity in a file: its model fields and a digest of its parameters.

    Args:
      model_config: the run's `config.model`; only the fields that define the function
        count (`model_fields.function_fields`: not `schedule`, `unroll` or `remat`, nor
        the `multiscale` fields of another model).
      params: the parameter tree (`variables['params']`).

    Returns:
      The first FINGERPRINT_BYTES bytes of SHA-256 over the fields' canonical JSON and, for
      every parameter in path order, its path, dtype, shape and little-endian bytes.
    """
    fields = model_fields.function_fields(model_config.to_dict())
    fields["schedule"] = _HASHED_SCHEDULE
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    for path, leaf in sorted(leaves, key=lambda item: jax.tree_util.keystr(item[0])):
        array = np.asarray(leaf)
        little_endian = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{jax.tree_util.keystr(path)}|{array.dtype}|{array.shape}".encode())
        digest.update(np.ascontiguousarray(little_endian).tobytes())
    return digest.digest()[:FINGERPRINT_BYTES]


def pixel_checksum(image: np.ndarray) -> int:
    """CRC-32 of an integer image `[height, width, channels]` (levels <= 256), one byte each."""
    return zlib.crc32(np.ascontiguousarray(image, np.uint8).tobytes())


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data):
            raise errors.CompressedFileError("truncated header")
        byte = data[offset]
        value |= (byte & 0x7F) << shift
        offset, shift = offset + 1, shift + 7
        if not byte & 0x80:
            return value, offset
        if shift > 63:
            raise errors.CompressedFileError("malformed header (varint too long)")


def check_storable(height: int, width: int, channels: int, levels: int) -> None:
    """Raises ValueError when the format cannot describe images of this kind."""
    if not 1 <= channels <= 4:
        raise ValueError(f"the .prnn format stores 1 to 4 channels, not {channels}.")
    if levels not in {2**bits for bits in range(1, 9)}:
        raise ValueError(f"the .prnn format stores 2, 4, ..., 256 levels, not {levels}.")
    if height < 1 or width < 1:
        raise ValueError(f"images must be at least 1x1, got {height}x{width}.")


def pack(header: Header, payload: bytes) -> bytes:
    """The file's bytes: the header (layout in the module docstring), then the payload."""
    check_storable(header.height, header.width, header.channels, header.levels)
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes.")
    has_label = header.label is not None
    mode = (header.channels - 1) | has_label << 2 | (header.levels.bit_length() - 2) << 3
    parts = [MAGIC, bytes([VERSION]), header.fingerprint]
    parts += [_varint(header.height), _varint(header.width), bytes([mode])]
    if has_label:
        parts.append(_varint(header.label))
    parts += [header.checksum.to_bytes(CHECKSUM_BYTES, "big"), payload]
    return b"".join(parts)


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parses a file's bytes into its header and payload.

    Raises:
      CompressedFileError: not a .prnn file, another format version, or a header that is
        truncated or malformed.
    """
    if len(data) < len(MAGIC) + 1 or data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data):
            raise errors.CompressedFileError("truncated header")
        raise errors.CompressedFileError(f"not a .prnn file (no {MAGIC!r} magic bytes)")
    if data[len(MAGIC)] != VERSION:
        raise errors.CompressedFileError(
            f"format version {data[len(MAGIC)]}, this program reads version {VERSION}"
        )
    offset = len(MAGIC) + 1
    model = data[offset : offset + FINGERPRINT_BYTES]
    offset += FINGERPRINT_BYTES
    height, offset = _read_varint(data, offset)
    width, offset = _read_varint(data, offset)
    if offset >= len(data):
        raise errors.CompressedFileError("truncated header")
    mode = data[offset]
    offset += 1
    if mode >> 6 or height < 1 or width < 1:
        raise errors.CompressedFileError("malformed header")
    label = None
    if mode & 4:
        label, offset = _read_varint(data, offset)
    if offset + CHECKSUM_BYTES > len(data):
        raise errors.CompressedFileError("truncated header")
    checksum = int.from_bytes(data[offset : offset + CHECKSUM_BYTES], "big")
    header = Header(
        fingerprint=model,
        height=height,
        width=width,
        channels=(mode & 3) + 1,
        levels=2 ** (((mode >> 3) & 7) + 1),
        label=label,
        checksum=checksum,
    )
    return header, data[offset + CHECKSUM_BYTES :]


def header_size(header: Header) -> int:
    """Bytes the header takes in the file."""
    return len(pack(header, b""))
