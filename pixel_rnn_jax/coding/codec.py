"""Images <-> .prnn byte strings: the header checks around the lockstep coder.

`compress` gives one file (bytes) per image; `decompress` checks every file's size and header
against the model before any decoding (a file of another model or config, or of another image
shape, is refused, naming both), decodes the rest in lockstep, and verifies each image's pixel
checksum. One bad file never stops the others: each result carries its image or its error.

The files are untrusted bytes: nothing is allocated or computed from a header's sizes before
they pass `shape_mismatch`, the one rule that `compress` applies to its images too (so the
two cannot drift), and a file longer than `max_file_bytes` is refused unread.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from pixel_rnn_jax import errors
from pixel_rnn_jax.coding import container, lockstep
from pixel_rnn_jax.nn import layers

_FIX = "get an intact copy"
# The largest header: magic, version, fingerprint, three varints of up to 10 bytes (the
# height, width and label of any 64-bit value), the mode byte and the checksum.
MAX_HEADER_BYTES = len(container.MAGIC) + 1 + container.FINGERPRINT_BYTES + 3 * 10 + 1 + 4
# The coder caps a sub-pixel's cost at 24 bits (`entropy.TOTAL`); the seal adds at most two
# 32-bit words. One byte per sub-pixel on top is margin, not a measured need.
_MAX_BYTES_PER_SUBPIXEL = 4
_MAX_SEAL_BYTES = 8


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One file's result: its image and label, or why it could not be decoded."""

    image: np.ndarray | None  # int32 [height, width, channels]
    label: int | None
    error: str | None  # None when the image is exact (its checksum verified)


def shape_mismatch(image_shape: Sequence[int], found: Sequence[int]) -> str | None:
    """Why an image of shape `found` cannot go through this model, or None when it can.

    The one rule of `compress` (its images), `decompress` (a header's sizes) and the PNG
    reader (`files.read_png`): an image is exactly the model's `[height, width, channels]`,
    the shape it was trained on, so no file can make the coder walk another size.

    Args:
      image_shape: the model's `(height, width, channels)` (the dataset spec's).
      found: the image's `(height, width, channels)`.

    Returns:
      "HxWxC, the model takes hxwxc images", or None.
    """
    expected, got = tuple(int(v) for v in image_shape), tuple(int(v) for v in found)
    if got == expected:
        return None
    return f"{'x'.join(map(str, got))}, the model takes {'x'.join(map(str, expected))} images"


def max_file_bytes(image_shape: Sequence[int]) -> int:
    """The most bytes a .prnn file of one image of `image_shape` can hold (a generous bound).

    A file above it cannot be one `compress` wrote; `files` reads no more than this plus one.
    """
    return MAX_HEADER_BYTES + _MAX_BYTES_PER_SUBPIXEL * math.prod(image_shape) + _MAX_SEAL_BYTES


def compress(
    model, variables, fingerprint: bytes, images, labels=None, *, image_shape: Sequence[int]
) -> list[bytes]:
    """One .prnn file's bytes per image.

    Args:
      model: a model from `models.build_model`.
      variables: its variables.
      fingerprint: `container.fingerprint(config.model, variables['params'])`.
      images: integer `[batch, height, width, channels]` in `[0, model.num_levels)`.
      labels: integer `[batch]` for a class-conditional model (stored in each file), None
        otherwise.
      image_shape: the model's `(height, width, channels)`; other images are refused.

    Returns:
      `batch` byte strings.

    Raises:
      ImageFileError: the images are not of `image_shape`.
    """
    images = np.asarray(images)
    mismatch = shape_mismatch(image_shape, images.shape[1:]) if images.ndim == 4 else None
    if mismatch:
        raise errors.ImageFileError(f"The images are {mismatch}: resize them first.")
    layers.validate_images(images, model.num_channels, model.num_levels)
    _, height, width, channels = images.shape
    container.check_storable(height, width, channels, model.num_levels)
    payloads = lockstep.encode(model, variables, images, labels)
    files = []
    for index, payload in enumerate(payloads):
        header = container.Header(
            fingerprint=fingerprint,
            height=height,
            width=width,
            channels=channels,
            levels=model.num_levels,
            label=None if labels is None else int(labels[index]),
            checksum=container.pixel_checksum(images[index]),
        )
        files.append(container.pack(header, payload))
    return files


def check_header(
    model, fingerprint: bytes, header: container.Header, image_shape: Sequence[int]
) -> None:
    """Raises CompressedFileError when the file cannot be decoded by this model.

    Args:
      model: the model.
      fingerprint: its fingerprint.
      header: the file's parsed header (its sizes not yet trusted).
      image_shape: the model's `(height, width, channels)`.
    """
    if header.fingerprint != fingerprint:
        raise errors.CompressedFileError(
            f"made by model {header.fingerprint.hex()}, not by this model "
            f"{fingerprint.hex()} (another config, run or checkpoint: decompress with the "
            "--config, --workdir and --which that compressed it)"
        )
    kind = (header.channels, header.levels, header.label is not None)
    expected = (model.num_channels, model.num_levels, model.num_classes > 0)
    if kind != expected or (header.label is not None and header.label >= model.num_classes):
        raise errors.CompressedFileError(
            f"malformed header: {header.channels} channels, {header.levels} levels, label "
            f"{header.label} for a model of {model.num_channels} channels, "
            f"{model.num_levels} levels, {model.num_classes} classes"
        )
    mismatch = shape_mismatch(image_shape, (header.height, header.width, header.channels))
    if mismatch:
        raise errors.CompressedFileError(f"malformed header: an image of {mismatch}")


def decompress(
    model, variables, fingerprint: bytes, files: Sequence[bytes], *, image_shape: Sequence[int]
) -> list[Decoded]:
    """Decodes .prnn files' bytes; every file gets its image or its error.

    Sizes and headers are checked first (length, magic, version, truncation, this model's
    fingerprint, its channels, levels, classes and image shape); the files that pass are
    decoded in lockstep, and each decoded image is checked against its header's pixel
    checksum.

    Args:
      model: the model that compressed them.
      variables: its variables.
      fingerprint: `container.fingerprint(config.model, variables['params'])`.
      files: the files' bytes.
      image_shape: the model's `(height, width, channels)`: a header of another is refused.

    Returns:
      One `Decoded` per file, in order.
    """
    results: list[Decoded | None] = [None] * len(files)
    groups: dict[tuple[int, int], list[tuple[int, container.Header, bytes]]] = {}
    limit = max_file_bytes(image_shape)
    for index, data in enumerate(files):
        try:
            if len(data) > limit:
                raise errors.CompressedFileError(
                    f"{len(data)} bytes, more than any .prnn file of a "
                    f"{'x'.join(map(str, image_shape))} image ({limit})"
                )
            header, payload = container.unpack(data)
            check_header(model, fingerprint, header, image_shape)
        except errors.CompressedFileError as error:
            results[index] = Decoded(None, None, str(error))
            continue
        groups.setdefault((header.height, header.width), []).append((index, header, payload))
    for shape, members in groups.items():
        labels = None
        if model.num_classes:
            labels = np.array([header.label for _, header, _ in members], np.int32)
        images, coder_errors = lockstep.decode(
            model, variables, [payload for _, _, payload in members], shape, labels
        )
        for (index, header, _), image, coder_error in zip(
            members, images, coder_errors, strict=True
        ):
            error = None
            if coder_error is not None:
                error = f"damaged or truncated ({coder_error}): {_FIX}"
            elif container.pixel_checksum(image) != header.checksum:
                error = f"damaged or truncated (the decoded pixels fail the checksum): {_FIX}"
            results[index] = Decoded(None if error else image, header.label, error)
    return results
