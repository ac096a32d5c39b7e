"""Compression: a trained model's .prnn files against its NLL and classical lossless codecs.

`run_suite(runs, ...)` takes trained runs as (config name, workdir) pairs. Each run's config
is the named one with the model and data fields its workdir's config.json recorded (so a run
trained with `--config.model.*` overrides loads as trained); `dataset` overrides the data.
For the first `num` images of a split it measures, in bits per sub-pixel (bits/dim):

- the model's NLL (`likelihood`, the runner's formula) and its .prnn files, header included
  and excluded, every file decoded back and compared pixel for pixel;
- encode and decode images/s (after one compiling call: the walk is one program for both);
- PNG (Pillow, optimize=True), WebP lossless (method 6), JPEG-XL lossless (effort 9) and
  JPEG-LS (both through imagecodecs), one file per image and all images tiled into one
  picture; for binary images also 1-bit PNG (the 8-bit codecs see 0/255).

Without runs, `speed_rows` times untrained models of the Fashion-MNIST models' size on random
images against the cached sampler on the same batch (speed does not depend on training).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import imagecodecs
import jax
import numpy as np
from PIL import Image

from experiments import configs
from pixel_rnn_jax import coding, models, sampling, train
from pixel_rnn_jax.coding import files

# Speed rows without a trained run: the Fashion-MNIST models' size (7 layers, h=32, a
# 64-wide output stack, 256 levels, 28x28 greyscale), random parameters and images.
SPEED_MODEL = {"num_layers": 7, "hidden_dim": 32, "output_dim": 64, "num_levels": 256}
SPEED_SHAPE = (28, 28, 1)


def _pillow(image: np.ndarray, **options) -> bytes:
    picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    if options.pop("one_bit", False):
        picture = picture.convert("1")
    buffer = io.BytesIO()
    picture.save(buffer, **options)
    return buffer.getvalue()


def _squeezed(image: np.ndarray) -> np.ndarray:
    return image[..., 0] if image.shape[-1] == 1 else image


# Classical lossless codecs: uint8 [height, width, channels] -> the file's bytes.
CODECS: dict[str, Callable[[np.ndarray], bytes]] = {
    "PNG": lambda im: _pillow(im, format="PNG", optimize=True),
    "WebP lossless": lambda im: _pillow(im, format="WEBP", lossless=True, quality=100, method=6),
    "JPEG-XL lossless": lambda im: imagecodecs.jpegxl_encode(
        _squeezed(im), lossless=True, effort=9
    ),
    "JPEG-LS": lambda im: imagecodecs.jpegls_encode(_squeezed(im)),
}
BINARY_CODECS = {"PNG 1-bit": lambda im: _pillow(im, format="PNG", optimize=True, one_bit=True)}


def tile(images: np.ndarray) -> np.ndarray:
    """All images in one picture, ceil(sqrt(1.6 n)) per row (1,000 -> 25 x 40), zero-padded."""
    n, height, width, channels = images.shape
    columns = math.ceil(math.sqrt(1.6 * n))
    rows = math.ceil(n / columns)
    padded = np.zeros((rows * columns, height, width, channels), images.dtype)
    padded[:n] = images
    grid = padded.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4)
    return grid.reshape(rows * height, columns * width, channels)


def codec_pixels(images: np.ndarray, num_levels: int) -> np.ndarray:
    """The model's integer images as the codecs' 8-bit pixels (binary images as 0 and 255)."""
    return (np.asarray(images) * (255 if num_levels == 2 else 1)).astype(np.uint8)


def classical_sizes(images: np.ndarray, num_levels: int) -> dict[str, tuple[int, int]]:
    """{codec: (total bytes one file per image, bytes of the tiled picture)}."""
    pixels = codec_pixels(images, num_levels)
    codecs = {**CODECS, **(BINARY_CODECS if num_levels == 2 else {})}
    return {
        name: (sum(len(encode(image)) for image in pixels), len(encode(tile(pixels))))
        for name, encode in codecs.items()
    }


def load_config(name: str, workdir: str, dataset: str | None = None):
    """The named config with the model and data fields the workdir's config.json recorded."""
    config = configs.get_config(name)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            recorded = json.load(f)["config"]
        for section in ("model", "data"):
            config[section].update_from_flattened_dict(_flatten(recorded[section]))
    if dataset:
        config.data.name, config.data.strict = dataset, True
    return config


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def benchmark_run(
    name: str, workdir: str, *, which: str, dataset: str | None, split: str | None, num: int, log
) -> list[dict[str, Any]]:
    """The rows of one trained run: the model's files and NLL, then each classical codec."""
    config = load_config(name, workdir, dataset)
    loaded = train.load_checkpoint(config, workdir, which)
    images, labels = train.split_images(config, loaded.spec, split, num)
    images = np.asarray(images, np.int32)
    model, variables = loaded.model, {"params": loaded.params}
    fingerprint = coding.fingerprint(config.model, loaded.params)
    dims = images.size
    compressed, compile_s, encode_s, decode_s, exact, cpu_s = _timed_round_trip(
        model, variables, fingerprint, images, labels
    )
    headers = sum(coding.container.header_size(coding.container.unpack(f)[0]) for f in compressed)
    total = sum(map(len, compressed))
    nll_per_image = files.nll_bits(model, variables, images, labels)
    nll = float(nll_per_image.sum())
    # Per file: payload bytes minus the model's NLL in bytes (the target: within 0.5% or 4).
    excess = np.array([len(coding.container.unpack(f)[1]) for f in compressed]) - nll_per_image / 8
    worst_allowed = np.maximum(0.005 * nll_per_image / 8, 4.0)
    run = {
        "config": name,
        "dataset": loaded.spec.name,
        "split": split or loaded.spec.eval_split,
        "images": len(images),
        "step": loaded.step,
        "which": which,
    }
    log(f"{name}: {8 * total / dims:.4f} bits/dim in files, NLL {nll / dims:.4f}, exact={exact}")
    rows = [
        {**run, "method": "model NLL", "per_image": nll / dims},
        {
            **run,
            "method": ".prnn payload (no header)",
            "per_image": 8 * (total - headers) / dims,
            "over_nll_percent": 100 * (8 * (total - headers) / nll - 1),
            "excess_bytes_max": float(excess.max()),
            "excess_bytes_min": float(excess.min()),
            "files_above_nll_by_more_than_target": int((excess > worst_allowed).sum()),
        },
        {
            **run,
            "method": ".prnn file (header included)",
            "per_image": 8 * total / dims,
            "header_bytes": headers / len(images),
            "exact": exact,
            "encode_images_per_s": len(images) / encode_s,
            "decode_images_per_s": len(images) / decode_s,
            "compile_s": compile_s,
            "encode_decode_cpu_s": cpu_s,
        },
    ]
    for codec, (per_image, tiled) in classical_sizes(images, loaded.spec.num_levels).items():
        rows.append(
            {**run, "method": codec, "per_image": 8 * per_image / dims, "tiled": 8 * tiled / dims}
        )
    files_row = rows[2]
    for row in rows:
        if row["method"] == "JPEG-XL lossless":
            files_row["jpegxl_per_image_ratio"] = row["per_image"] / files_row["per_image"]
            files_row["jpegxl_tiled_ratio"] = row["tiled"] / files_row["per_image"]
    return rows


def _timed_round_trip(model, variables, fingerprint, images, labels=None):
    """(files, compile s, encode s, decode s, exact, CPU s of this process encoding and
    decoding) of compress + decompress of `images` (wall seconds unless said)."""
    first = None if labels is None else labels[:1]
    shape = images.shape[1:]
    start = time.perf_counter()  # compiles the walk (one program encodes and decodes)
    coding.decompress(
        model,
        variables,
        fingerprint,
        coding.compress(model, variables, fingerprint, images[:1], first, image_shape=shape),
        image_shape=shape,
    )
    compile_s = time.perf_counter() - start
    start, cpu = time.perf_counter(), time.process_time()
    compressed = coding.compress(model, variables, fingerprint, images, labels, image_shape=shape)
    encode_s, encode_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    decoded = coding.decompress(model, variables, fingerprint, compressed, image_shape=shape)
    decode_s, decode_cpu_s = time.perf_counter() - start, time.process_time() - cpu
    exact = all(
        result.error is None and np.array_equal(result.image, image)
        for result, image in zip(decoded, images, strict=True)
    )
    return compressed, compile_s, encode_s, decode_s, exact, (encode_cpu_s, decode_cpu_s)


def speed_rows(names: Sequence[str], num: int, log) -> list[dict[str, Any]]:
    """Encode/decode images/s of untrained models of `SPEED_MODEL` size, one row per body."""
    rows = []
    for name in names:
        config = models.default_model_config()
        config.name, config.num_channels = name, SPEED_SHAPE[-1]
        config.update(SPEED_MODEL)
        model = models.build_model(config)
        images = np.random.default_rng(0).integers(0, 256, (num, *SPEED_SHAPE)).astype(np.int32)
        variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])
        fingerprint = coding.fingerprint(config, variables["params"])
        compressed, compile_s, encode_s, decode_s, exact, cpu_s = _timed_round_trip(
            model, variables, fingerprint, images
        )
        # The cached sampler walks the same positions with the same bodies, on device alone:
        # the ceiling of the coder, which adds one host callback per position.
        batch = jax.numpy.asarray(images[: coding.LOCKSTEP_BATCH])
        sampling.sample(model, variables, jax.random.PRNGKey(0), batch).block_until_ready()
        start = time.perf_counter()
        sampling.sample(model, variables, jax.random.PRNGKey(1), batch).block_until_ready()
        sample_s = time.perf_counter() - start
        log(
            f"{name}: encode {num / encode_s:.0f} images/s, decode {num / decode_s:.0f}, "
            f"cached sampler {len(batch) / sample_s:.0f}"
        )
        rows.append(
            {
                "config": f"{name}, untrained, 7 layers, h=32, 256 levels",
                "dataset": "random",
                "split": "images",
                "images": num,
                "method": ".prnn file (header included)",
                "per_image": 8 * sum(map(len, compressed)) / images.size,
                "exact": exact,
                "encode_images_per_s": num / encode_s,
                "decode_images_per_s": num / decode_s,
                "compile_s": compile_s,
                "encode_decode_cpu_s": cpu_s,
                "sampler_images_per_s": len(batch) / sample_s,
            }
        )
    return rows


def _cell(key, digits=4):
    def cell(row):
        value = row.get(key)
        return (
            ""
            if value is None
            else f"{value:.{digits}f}"
            if isinstance(value, float)
            else str(value)
        )

    return cell


COLUMNS = [
    ("run", lambda r: f"{r['config']} ({r['dataset']} {r['split']}, {r['images']} images)"),
    ("method", lambda r: r["method"]),
    ("bits/dim, one file per image", _cell("per_image")),
    ("bits/dim, tiled", _cell("tiled")),
    ("payload over NLL %", _cell("over_nll_percent", 2)),
    (
        "payload - NLL per file, bytes (min, max)",
        lambda r: (
            f"{r['excess_bytes_min']:.1f}, {r['excess_bytes_max']:.1f}"
            if "excess_bytes_max" in r
            else ""
        ),
    ),
    (
        "JPEG-XL / .prnn (per image, tiled)",
        lambda r: (
            f"{r['jpegxl_per_image_ratio']:.2f}x, {r['jpegxl_tiled_ratio']:.2f}x"
            if "jpegxl_per_image_ratio" in r
            else ""
        ),
    ),
    (
        "encode / decode images/s",
        lambda r: (
            f"{r['encode_images_per_s']:.0f} / {r['decode_images_per_s']:.0f}"
            if "encode_images_per_s" in r
            else ""
        ),
    ),
    ("exact", _cell("exact")),
    ("cached sampler images/s", _cell("sampler_images_per_s", 0)),
]


def run_suite(
    names: Sequence[str],
    workdirs: Sequence[str],
    *,
    which: str = "best",
    dataset: str | None = None,
    split: str | None = None,
    num: int = 1000,
    speed_models: Sequence[str] = (),
    log=print,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every run's rows (or, with no run, `speed_rows` of `speed_models`); (header, rows)."""
    if len(names) != len(workdirs):
        raise ValueError("--config and --workdir must name the same number of runs.")
    rows = [] if names else speed_rows(speed_models, num, log)
    for name, workdir in zip(names, workdirs, strict=True):
        rows += benchmark_run(
            name, workdir, which=which, dataset=dataset, split=split, num=num, log=log
        )
    header = {
        "title": "Lossless compression: .prnn files against the model's NLL and classical codecs",
        "timing": (
            "encode/decode images/s: wall time of coding.compress / coding.decompress of all "
            f"images after one compiling call, {coding.LOCKSTEP_BATCH} images per lockstep walk "
            f"on {jax.default_backend()}"
        ),
        "notes": (
            "bits/dim = 8 x bytes / sub-pixels; .prnn header bytes per file in the JSON; the "
            "8-bit codecs see binary images as 0/255"
        ),
        "columns": COLUMNS,
    }
    return header, rows
