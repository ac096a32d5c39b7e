"""Images <-> .prnn byte strings: the header checks around the lockstep coder.

`compress` gives one file (bytes) per image; `decompress` checks every file's header against
the model before any decoding (a file of another model or config is refused, naming both
fingerprints), decodes the rest in lockstep, and verifies each image's pixel checksum.
One bad file never stops the others: each result carries its image or its error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pixel_rnn_jax import errors
from pixel_rnn_jax.coding import container, lockstep
from pixel_rnn_jax.nn import layers

_FIX = "get an intact copy"


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One file's result: its image and label, or why it could not be decoded."""

    image: np.ndarray | None  # int32 [height, width, channels]
    label: int | None
    error: str | None  # None when the image is exact (its checksum verified)


def compress(model, variables, fingerprint: bytes, images, labels=None) -> list[bytes]:
    """One .prnn file's bytes per image.

    Args:
      model: a model from `models.build_model`.
      variables: its variables.
      fingerprint: `container.fingerprint(config.model, variables['params'])`.
      images: integer `[batch, height, width, channels]` in `[0, model.num_levels)`.
      labels: integer `[batch]` for a class-conditional model (stored in each file), None
        otherwise.

    Returns:
      `batch` byte strings.
    """
    images = np.asarray(images)
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


def check_header(model, fingerprint: bytes, header: container.Header) -> None:
    """Raises CompressedFileError when the file cannot be decoded by this model."""
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


def decompress(model, variables, fingerprint: bytes, files: Sequence[bytes]) -> list[Decoded]:
    """Decodes .prnn files' bytes; every file gets its image or its error.

    Headers are checked first (magic, version, truncation, this model's fingerprint, its
    channels, levels and classes); the files that pass are decoded in lockstep, grouped by
    image size, and each decoded image is checked against its header's pixel checksum.

    Args:
      model: the model that compressed them.
      variables: its variables.
      fingerprint: `container.fingerprint(config.model, variables['params'])`.
      files: the files' bytes.

    Returns:
      One `Decoded` per file, in order.
    """
    results: list[Decoded | None] = [None] * len(files)
    groups: dict[tuple[int, int], list[tuple[int, container.Header, bytes]]] = {}
    for index, data in enumerate(files):
        try:
            header, payload = container.unpack(data)
            check_header(model, fingerprint, header)
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
