"""Files on disk for the compress/decompress entry points: PNGs in, .prnn and PNGs out.

Nothing already on disk is replaced unless `overwrite` is set: every output name is checked
before any file is written, and files are created exclusively. A directory with bad files
decodes the others, writes them, and then reports the bad ones (`CompressedFileError`).
"""

from __future__ import annotations

import functools
import glob
import json
import math
import os
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from pixel_rnn_jax import errors, likelihood
from pixel_rnn_jax.coding import codec, container, lockstep

EXTENSION = ".prnn"
REPORT_FILE = "report.json"  # written by `compress_to_directory`
LABELS_FILE = "labels.json"  # written by `decompress_to_directory` for class-conditional models
_PNG_MODES = {1: ("L", "1"), 3: ("RGB",)}


# What a decoder can raise on a damaged file whose header passed: Pillow reports broken
# chunks as SyntaxError and struct.error, and lets zlib.error and ValueError through.
_PNG_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


def read_png(path: str, image_shape: Sequence[int], num_levels: int) -> np.ndarray:
    """One PNG file as the model's integer image; nothing is decoded before its size passes.

    The header alone is parsed first (`Image.open` reads it without decoding): a file that
    is not a PNG, or whose size or colour mode is not the model's (`codec.shape_mismatch`,
    the rule of `compress` and `decompress`), is refused before any pixel is allocated, so
    the memory taken is the model's image size whatever the file declares. Binary models
    (2 levels) take black-and-white PNGs (values 0 and 255, or 1-bit); 256-level models
    any 8-bit PNG of their channels (greyscale 'L' or 'RGB').

    Args:
      path: the file.
      image_shape: the model's `(height, width, channels)`.
      num_levels: 2 or 256.

    Returns:
      int32 `[height, width, channels]`.

    Raises:
      ImageFileError: one line naming the file and what the model takes.
    """
    height, width, channels = image_shape
    expected = f"{height}x{width} {'greyscale' if channels == 1 else 'RGB'} PNGs"
    if num_levels not in (2, 256):
        raise errors.ImageFileError(f"PNG input needs a 2- or 256-level model, not {num_levels}.")
    modes = _PNG_MODES.get(channels, ())
    try:
        with Image.open(path, formats=["PNG"]) as image:
            mode, (found_width, found_height) = image.mode, image.size
            if mode not in modes:
                raise errors.ImageFileError(
                    f"{path} is a {mode!r} image; the model takes {expected} (mode "
                    f"{' or '.join(map(repr, modes))}): convert it first."
                )
            mismatch = codec.shape_mismatch(image_shape, (found_height, found_width, channels))
            if mismatch:
                raise errors.ImageFileError(f"{path} is {mismatch} ({expected}): resize it first.")
            pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    except errors.ImageFileError:
        raise
    except (*_PNG_DECODE_ERRORS, Image.DecompressionBombError) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise errors.ImageFileError(f"{path}: not a readable PNG image ({reason}).") from None
    if pixels.shape[:2] != (height, width):  # the decoder's output, not the header's claim
        raise errors.ImageFileError(f"{path}: decoded to {pixels.shape}, not {expected}.")
    pixels = pixels.reshape(height, width, channels).astype(np.int32)
    if num_levels == 2:
        if not np.isin(pixels, (0, 255)).all():
            raise errors.ImageFileError(
                f"{path} has grey levels; the model is binary: give black-and-white PNGs "
                "(values 0 and 255 only), e.g. thresholded."
            )
        pixels = pixels // 255
    return pixels


def read_png_files(paths: Sequence[str], image_shape: Sequence[int], num_levels: int):
    """`read_png` of each path: int32 `[len(paths), height, width, channels]`.

    Raises:
      ImageFileError: at the first file that does not fit (its message names it).
    """
    height, width, channels = image_shape
    images = np.zeros((len(paths), height, width, channels), np.int32)
    for index, path in enumerate(paths):
        images[index] = read_png(path, image_shape, num_levels)
    return images


def read_pngs(pattern: str, image_shape: Sequence[int], num_levels: int):
    """The PNG files matching `pattern`, as the model's integer images (`read_png` each).

    Args:
      pattern: a glob pattern (or one path).
      image_shape: the model's `(height, width, channels)`.
      num_levels: 2 or 256.

    Returns:
      (int32 `[n, height, width, channels]`, the files' stems), sorted by path.

    Raises:
      ImageFileError: no file matches, or a file is unreadable or of another shape,
        colour mode or set of levels (the message names the file and what it should be).
    """
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    paths = [path for path in paths if os.path.isfile(path)]
    if not paths:
        raise errors.ImageFileError(f"No PNG file matches --images={pattern!r}.")
    stems = [os.path.splitext(os.path.basename(path))[0] for path in paths]
    return read_png_files(paths, image_shape, num_levels), stems


def write_png(path: str, image: np.ndarray, num_levels: int, overwrite: bool = False) -> None:
    """Writes an integer image `[height, width, channels]`; binary images as 0/255."""
    pixels = np.asarray(image, np.int64) * (255 if num_levels == 2 else 1)
    pixels = pixels.astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    with open(path, "wb" if overwrite else "xb") as f:
        picture.save(f, format="PNG")


@functools.partial(jax.jit, static_argnames=("model",))
def _log_likelihood(model, variables, images, labels):
    logits = model.apply(variables, images, labels)
    return likelihood.log_likelihood(logits, images, model.num_levels)


def nll_bits(model, variables, images, labels=None) -> np.ndarray:
    """The model's NLL of each image in bits, `[n]` float64 (batches of LOCKSTEP_BATCH)."""
    out = []
    for start in range(0, len(images), lockstep.LOCKSTEP_BATCH):
        chunk = np.asarray(images[start : start + lockstep.LOCKSTEP_BATCH], np.int32)
        chunk_labels = None if labels is None else jnp.asarray(labels[start : start + len(chunk)])
        out.append(np.asarray(_log_likelihood(model, variables, jnp.asarray(chunk), chunk_labels)))
    return -np.concatenate(out).astype(np.float64) / math.log(2.0)


def _check_free(output: str, names: Sequence[str], overwrite: bool) -> None:
    """Raises OutputExistsError when `output` holds any of `names` (unless `overwrite`)."""
    taken = [name for name in names if os.path.lexists(os.path.join(output, name))]
    if taken and not overwrite:
        shown = ", ".join(taken[:5]) + (f" and {len(taken) - 5} more" if len(taken) > 5 else "")
        raise errors.OutputExistsError(
            f"{output} already holds {len(taken)} of the files to write ({shown}); pass "
            "--overwrite to replace them, or choose another --output."
        )


def compress_to_directory(
    model,
    variables,
    fingerprint: bytes,
    images: np.ndarray,
    names: Sequence[str],
    output: str,
    *,
    image_shape: Sequence[int],
    labels=None,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes `output/<name>.prnn` per image and `output/report.json`.

    Args:
      model, variables, fingerprint: as for `codec.compress`.
      images: integer `[n, height, width, channels]`.
      names: n distinct file stems.
      output: directory (created if missing).
      image_shape: the model's `(height, width, channels)`; images of another are refused.
      labels: integer `[n]` for a class-conditional model.
      overwrite: replace existing files of the same names.
      info: extra fields for the report (config, workdir, checkpoint).

    Returns:
      The report: per file its name, bytes and the model's NLL in bits, and the totals.
    """
    if len(set(names)) != len(names):
        raise errors.ImageFileError("Two input images have the same file name; rename one.")
    targets = [name + EXTENSION for name in names]
    os.makedirs(output, exist_ok=True)
    _check_free(output, [*targets, REPORT_FILE], overwrite)
    files = codec.compress(model, variables, fingerprint, images, labels, image_shape=image_shape)
    nll = nll_bits(model, variables, images, labels)
    for target, data in zip(targets, files, strict=True):
        with open(os.path.join(output, target), "wb" if overwrite else "xb") as f:
            f.write(data)
    headers = [container.header_size(container.unpack(data)[0]) for data in files]
    dims = int(np.prod(images.shape[1:]))
    total_bytes, total_nll = sum(map(len, files)), float(nll.sum())
    report = {
        **(info or {}),
        "fingerprint": fingerprint.hex(),
        "image_shape": list(images.shape[1:]),
        "num_levels": model.num_levels,
        "files": [
            {"name": target, "bytes": len(data), "header_bytes": size, "nll_bits": float(bits)}
            for target, data, size, bits in zip(targets, files, headers, nll, strict=True)
        ],
        "totals": {
            "files": len(files),
            "bytes": total_bytes,
            "header_bytes": sum(headers),
            "nll_bits": total_nll,
            "bits_per_dim": 8 * total_bytes / (dims * len(files)),
            "payload_bits_per_dim": 8 * (total_bytes - sum(headers)) / (dims * len(files)),
            "nll_bits_per_dim": total_nll / (dims * len(files)),
        },
    }
    with open(os.path.join(output, REPORT_FILE), "w" if overwrite else "x") as f:
        json.dump(report, f, indent=1)
    return report


def input_files(path: str) -> list[str]:
    """A .prnn file, or every .prnn file in a directory (sorted)."""
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(glob.escape(path), "*" + EXTENSION)))
        if not found:
            raise errors.CompressedFileError(f"{path} holds no {EXTENSION} files.")
        return found
    if not os.path.isfile(path):
        raise errors.CompressedFileError(f"{path}: no such file or directory.")
    return [path]


def read_prnn(path: str, image_shape: Sequence[int]) -> bytes:
    """A .prnn file's bytes, reading no more than `codec.max_file_bytes(image_shape)` + 1.

    A longer file is returned cut at that length, which `codec.decompress` refuses by its
    length: a huge file costs neither memory nor time.

    Raises:
      OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        return f.read(codec.max_file_bytes(image_shape) + 1)


def decompress_to_directory(
    model,
    variables,
    fingerprint: bytes,
    inputs: Sequence[str],
    output: str,
    overwrite=False,
    *,
    image_shape: Sequence[int],
) -> list[str]:
    """Writes `output/<stem>.png` for every input file that decodes exactly.

    A class-conditional model's labels go to `output/labels.json` ({png name: label}).
    `image_shape` is the model's `(height, width, channels)`: a file of another is refused
    from its header, before anything is decoded.

    Returns:
      The PNG paths written.

    Raises:
      OutputExistsError: an output name exists (checked before anything is decoded).
      CompressedFileError: some inputs could not be decoded (the message lists each with its
        reason); the others were decoded and written first.
    """
    stems = [os.path.splitext(os.path.basename(path))[0] for path in inputs]
    if len(set(stems)) != len(stems):
        raise errors.CompressedFileError("Two input files have the same name; rename one.")
    targets = [stem + ".png" for stem in stems]
    os.makedirs(output, exist_ok=True)
    _check_free(output, [*targets, *([LABELS_FILE] if model.num_classes else [])], overwrite)
    contents, failed = [], {}
    for path in inputs:
        try:
            contents.append(read_prnn(path, image_shape))
        except OSError as error:
            contents.append(b"")
            failed[path] = f"unreadable ({error.strerror})"
    results = codec.decompress(model, variables, fingerprint, contents, image_shape=image_shape)
    written, labels = [], {}
    for path, target, result in zip(inputs, targets, results, strict=True):
        if path in failed:
            continue
        if result.error is not None:
            failed[path] = result.error
            continue
        write_png(os.path.join(output, target), result.image, model.num_levels, overwrite)
        written.append(os.path.join(output, target))
        labels[target] = result.label
    if model.num_classes and labels:
        with open(os.path.join(output, LABELS_FILE), "w" if overwrite else "x") as f:
            json.dump(labels, f, indent=1)
    if len(inputs) == 1 and failed:
        raise errors.CompressedFileError(f"{inputs[0]}: {failed[inputs[0]]}")
    if failed:
        by_reason: dict[str, list[str]] = {}
        for path, reason in failed.items():
            by_reason.setdefault(reason, []).append(os.path.basename(path))
        listed = "; ".join(
            f"{', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}: "
            f"{reason}"
            for reason, names in by_reason.items()
        )
        done = f"the other {len(written)} were written to {output}" if written else "none decoded"
        raise errors.CompressedFileError(
            f"{len(failed)} of {len(inputs)} files could not be decoded ({listed}); {done}."
        )
    return written
