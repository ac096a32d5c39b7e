"""The model's conditionals in coding order, shared by the encoder and the decoder.

Both sides run one jitted program: the sampler's walk (`sampling.cached.run_incremental`,
each layer's cached one-pixel body) in which the value of every coded position comes from
the host through `jax.experimental.io_callback`. The encoder's host step writes the true
value (given in the images) to each image's range coder and returns it; the decoder's host
step reads each image's symbol from its stream and returns that. The logits of every
position therefore come from the same compiled program fed the same earlier values, so
both sides quantise identical float32 logits into identical tables (`entropy.frequencies`,
in the same program).

The batch is always `LOCKSTEP_BATCH` images, padded with zero images (and label 0), so that
the compiled program, and with it every float rounding, is the same whatever the number of
files; on XLA's CPU backend the logits of an image do not depend on its slot in the batch
nor on the other images (tested), so a file decodes alone or among others.

Coding order, by model type (`WALKS`): a PixelRNN in raster-then-R,G,B order; the
Multi-Scale model's small image s = x[::f, ::f] first (its own raster order), then every
position off the grid in raster order given s (the grid positions are walked but not coded).

What this guarantees: a file decodes exactly with the same model, parameters, program
(these sources, JAX/XLA and constriction versions) and backend. What it does not: a file
encoded on one backend (CPU) and decoded on another (GPU, TPU), or under other library
versions, may see logits that differ in the last bit and quantise differently; the decoder
then produces other pixels, and the pixel checksum in the header reports the file as
undecodable.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from pixel_rnn_jax.coding import entropy
from pixel_rnn_jax.models import multiscale
from pixel_rnn_jax.models.multiscale import MultiScalePixelRNN
from pixel_rnn_jax.models.pixel_rnn import PixelRNN
from pixel_rnn_jax.nn import layers
from pixel_rnn_jax.sampling import cached
from pixel_rnn_jax.sampling import multiscale as multiscale_sampling

# Images per run of the walk, padded: part of the format (see the module docstring). Each
# position costs one host callback whatever the batch, so a large batch amortises it.
LOCKSTEP_BATCH = 256
_FLUSH_POSITIONS = 64  # the encoder writes its streams every this many positions

# Host-side state of the walks in progress, by the id the jitted program passes back.
_SESSIONS: dict[int, _Session] = {}
_SESSION_IDS = itertools.count()
_SESSIONS_LOCK = threading.Lock()


class _Session:
    """What the host does at each position of one walk: encode or decode every image."""

    def step(self, coded: bool, tables: np.ndarray, current: np.ndarray) -> np.ndarray:
        """The values of one position: `tables` float32 [G, levels], `current` int32 [G]."""
        raise NotImplementedError


class _EncodeSession(_Session):
    """Writes the true values (the walk's `current`) to one range coder per real image.

    The tables of up to `_FLUSH_POSITIONS` positions are kept and then written with one
    coder call per image (the range coder keeps the order, so the stream is the same as
    one call per symbol), which costs a fraction of a call per symbol.
    """

    def __init__(self, count: int):
        self.coders = [entropy.Encoder() for _ in range(count)]
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []

    def step(self, coded, tables, current):
        values = np.asarray(current, np.int32)
        if coded:
            # Copies: the callback's buffers are not ours to keep.
            count = len(self.coders)
            self.pending.append((values[:count].copy(), np.array(tables[:count])))
            if len(self.pending) == _FLUSH_POSITIONS:
                self.flush()
        return values

    def flush(self) -> None:
        if not self.pending:
            return
        symbols = np.stack([values for values, _ in self.pending], axis=1)  # [count, positions]
        tables = np.stack([tables for _, tables in self.pending], axis=1)  # [count, positions, K]
        for index, coder in enumerate(self.coders):
            coder.encode(symbols[index], np.ascontiguousarray(tables[index]))
        self.pending = []

    def finish(self) -> list[bytes]:
        self.flush()
        return [coder.finish() for coder in self.coders]


class _DecodeSession(_Session):
    """Reads each real image's next symbol; a damaged stream stops only its own image."""

    def __init__(self, payloads: Sequence[bytes]):
        self.coders = [entropy.Decoder(payload) for payload in payloads]
        self.errors: list[str | None] = [None] * len(payloads)

    def step(self, coded, tables, current):
        values = np.array(current, np.int32)  # padding slots and uncoded positions: as given
        if coded:
            for index, coder in enumerate(self.coders):
                values[index] = 0
                if self.errors[index] is None:
                    try:
                        values[index] = coder.decode(tables[index : index + 1])
                    except ValueError as error:
                        self.errors[index] = str(error)
        return values


def _on_host(session_id, coded, tables, current):
    return _SESSIONS[int(session_id)].step(bool(coded), np.asarray(tables), np.asarray(current))


def _host_choice(session_id, coded, logits, current, num_levels):
    """The value of a position, from the host session `session_id` (traced).

    The coder's tables are quantised here, in the compiled program, from the logits.
    """
    tables = entropy.coder_tables(logits, num_levels)
    result = jax.ShapeDtypeStruct(current.shape, jnp.int32)
    return io_callback(_on_host, result, session_id, coded, tables, current, ordered=True)


def _raster(model: PixelRNN, variables, images, labels, session_id):
    """Every position in raster-then-channel order, each one coded."""

    def choose(position, logits, current):
        return _host_choice(session_id, True, logits, current, model.num_levels)

    images, _ = cached.run_incremental(model, variables, images, choose, labels=labels)
    return images


_walk_pixel_rnn = jax.jit(_raster, static_argnames=("model",))


@functools.partial(jax.jit, static_argnames=("model",))
def _walk_multiscale(model: MultiScalePixelRNN, variables, images, labels, session_id):
    """s = x[::f, ::f] first, then the positions off the grid given s (the sampler's walk)."""
    f = model.factor
    small = _raster(
        model.small,
        multiscale.small_variables(variables),
        multiscale.subsample(images, f),
        labels,
        session_id,
    )
    images = images.at[:, ::f, ::f].set(small)

    def choose(position, logits, current, on_grid):
        return _host_choice(session_id, ~on_grid, logits, current, model.num_levels)

    return multiscale_sampling.walk_conditional(model, variables, images, choose, labels)


# The walk of each model type: (model, variables, images [LOCKSTEP_BATCH, H, W, C] int32,
# labels int32 [LOCKSTEP_BATCH] or None, session id int32) -> the images as coded.
WALKS = {PixelRNN: _walk_pixel_rnn, MultiScalePixelRNN: _walk_multiscale}


def _run(model, variables, images: np.ndarray, labels, session: _Session) -> np.ndarray:
    """One walk of a padded batch with `session` answering every position."""
    walk = WALKS.get(type(model))
    if walk is None:
        raise ValueError(
            f"No coding order for a {type(model).__name__}; the coder knows "
            f"{sorted(t.__name__ for t in WALKS)}."
        )
    with _SESSIONS_LOCK:
        session_id = next(_SESSION_IDS) % (1 << 31)
        _SESSIONS[session_id] = session
    try:
        out = walk(
            model,
            variables,
            jnp.asarray(images, jnp.int32),
            None if labels is None else jnp.asarray(labels, jnp.int32),
            jnp.int32(session_id),
        )
        return np.asarray(out)
    finally:
        with _SESSIONS_LOCK:
            del _SESSIONS[session_id]


def _padded(array: np.ndarray | None, start: int) -> np.ndarray | None:
    """Rows start..start + LOCKSTEP_BATCH of `array`, zero-padded to LOCKSTEP_BATCH rows."""
    if array is None:
        return None
    chunk = np.asarray(array[start : start + LOCKSTEP_BATCH], np.int32)
    padding = np.zeros((LOCKSTEP_BATCH - len(chunk), *chunk.shape[1:]), np.int32)
    return np.concatenate([chunk, padding])


def _check_labels(model, labels, batch: int) -> np.ndarray | None:
    if labels is not None:
        labels = np.asarray(labels)
    layers.validate_labels(labels, batch, model.num_classes)
    return labels


def encode(model, variables, images, labels=None) -> list[bytes]:
    """Entropy-codes each image under the model: one byte string (payload) per image.

    Args:
      model: a model from `models.build_model` (a type in `WALKS`).
      variables: its variables.
      images: integer `[batch, height, width, channels]` in `[0, model.num_levels)`.
      labels: integer `[batch]` for a class-conditional model, None otherwise.

    Returns:
      `batch` byte strings; `decode` with the same model and variables gives the images back.
    """
    images = np.asarray(images)
    layers.validate_images(images, model.num_channels, model.num_levels)
    labels = _check_labels(model, labels, images.shape[0])
    payloads = []
    for start in range(0, images.shape[0], LOCKSTEP_BATCH):
        count = min(LOCKSTEP_BATCH, images.shape[0] - start)
        session = _EncodeSession(count)
        _run(model, variables, _padded(images, start), _padded(labels, start), session)
        payloads += session.finish()
    return payloads


def decode(
    model, variables, payloads: Sequence[bytes], shape: tuple[int, int], labels=None
) -> tuple[np.ndarray, list[str | None]]:
    """Decodes payloads of `encode` in lockstep, LOCKSTEP_BATCH images per walk.

    Args:
      model: the model that encoded them.
      variables: its variables.
      payloads: byte strings from `encode`, all of images of one `shape`.
      shape: `(height, width)` of the images.
      labels: integer `[len(payloads)]` for a class-conditional model, None otherwise.

    Returns:
      (int32 `[len(payloads), height, width, channels]`, one error message or None per
      payload): an error means the coder rejected the stream (a damaged payload); the image
      is then meaningless. A damaged payload the coder accepts decodes to other pixels:
      the caller's checksum catches it.
    """
    labels = _check_labels(model, labels, len(payloads))
    height, width = shape
    images = np.zeros((len(payloads), height, width, model.num_channels), np.int32)
    errors: list[str | None] = []
    for start in range(0, len(payloads), LOCKSTEP_BATCH):
        chunk = payloads[start : start + LOCKSTEP_BATCH]
        session = _DecodeSession(chunk)
        out = _run(model, variables, _padded(images, start), _padded(labels, start), session)
        images[start : start + len(chunk)] = out[: len(chunk)]
        errors += session.errors
    return images, errors
