"""The entropy coder: quantised probability tables and one range coder per image.

The coder is `constriction`'s range coder (`constriction.stream.queue`), which keeps the
order of the symbols, so the encoder can write each position as the walk reaches it, just as
the decoder must read it. What both sides give the coder is a pure function of the model's
float32 logits:

  logits -> float32 softmax (of [0, l] for a Bernoulli logit l) -> integer frequencies,
  each >= 1, summing to exactly `TOTAL` = 2^24 (floor, then the rest to the most likely
  level) -> float32 tables of those integers (exact: every value <= 2^24).

`coder_tables` is JAX, computed inside the walk's compiled program (`lockstep`), so the
encoder and the decoder quantise with the same compiled code, as they compute the logits
(a numpy version on the host cost more than the model at 256 levels: WORKSPACE_NOTES.md).
constriction rescales a table by its sum (a power of two, so exactly) and re-quantises it
to its own 24-bit fixed point with `perfect=False`: deterministic integer-derived code, the
same on both sides for the same integers. The floor of 1 keeps every level codable, and
caps a sub-pixel's cost at 24 bits where the model gives less.

A coded stream ends at the shortest byte string that still decodes: the range coder seals
with a point of its final interval written as whole 32-bit words; `terminate` replaces it
by the point of the interval with the fewest bytes (the encoder's `pos()` gives the
interval), which saves most of the seal's bytes (measured in WORKSPACE_NOTES.md). The
decoder pads the bytes with zeros back to whole words; constriction reads words past the
end as zeros.
"""

from __future__ import annotations

import constriction
import jax
import jax.numpy as jnp
import numpy as np

TOTAL = 1 << 24  # every frequency table sums to this; constriction's precision is 24 bits
# The family of categorical models whose table is given per symbol (lazy construction; the
# `perfect=False` quantisation is part of the format: encoder and decoder must agree on it).
_MODEL = constriction.stream.model.Categorical(perfect=False)
_WORD_BITS = 32
_STATE_MASK = (1 << 64) - 1  # the range coder's state is 64 bits: two words


def frequencies(logits, num_levels: int) -> jax.Array:
    """Integer frequency tables of one sub-pixel per image, from the model's logits.

    Args:
      logits: float32 [batch] Bernoulli logits (num_levels == 2) or [batch, num_levels].
      num_levels: 2 or the number of categorical levels.

    Returns:
      int32 [batch, num_levels], every entry >= 1, every row summing to `TOTAL`.
    """
    logits = jnp.asarray(logits, jnp.float32)
    if num_levels == 2:
        logits = jnp.stack([jnp.zeros_like(logits), logits], axis=-1)  # [1 - s(l), s(l)]
    p = jax.nn.softmax(logits, axis=-1)
    counts = jnp.floor(p * (TOTAL - num_levels)).astype(jnp.int32) + 1
    rest = TOTAL - counts.sum(axis=-1, keepdims=True)  # small; the most likely level takes it
    top = jax.nn.one_hot(jnp.argmax(p, axis=-1), num_levels, dtype=jnp.int32)
    return counts + rest * top


def coder_tables(logits, num_levels: int) -> jax.Array:
    """`frequencies` as the float32 tables given to constriction (exact integers)."""
    return frequencies(logits, num_levels).astype(jnp.float32)


def ideal_bits(logits, symbols, num_levels: int) -> np.ndarray:
    """-log2 of each symbol's quantised probability: what the coder spends, before its ends."""
    counts = np.asarray(frequencies(logits, num_levels))
    chosen = counts[np.arange(counts.shape[0]), np.asarray(symbols)]
    return np.log2(TOTAL) - np.log2(chosen)


class Encoder:
    """One image's stream: `encode` each position in coding order, then `finish`."""

    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()

    def encode(self, symbols: np.ndarray, tables: np.ndarray) -> None:
        """Writes symbols (int32 [n]) in order, each under its table (float32 [n, levels])."""
        self._coder.encode(symbols, _MODEL, tables)

    def finish(self) -> bytes:
        """The stream as the shortest byte string that decodes to the same symbols."""
        return terminate(self._coder)


class Decoder:
    """Reads one image's stream back, one symbol per call, under the encoder's tables."""

    def __init__(self, payload: bytes):
        padded = payload + b"\0" * (-len(payload) % 4)
        self._coder = constriction.stream.queue.RangeDecoder(
            np.frombuffer(padded, ">u4").astype(np.uint32)
        )

    def decode(self, table: np.ndarray) -> int:
        """The next symbol under `table` (float32 [1, levels]).

        Raises:
          ValueError: the stream is not one the encoder can have written (a damaged file);
            constriction reports it as an AssertionError, which is converted here.
        """
        try:
            return int(self._coder.decode(_MODEL, table)[0])
        except AssertionError as error:
            raise ValueError(f"invalid compressed data ({error})") from None


def terminate(coder) -> bytes:
    """The range coder's words as big-endian bytes, cut to the shortest valid ending.

    `get_compressed()` ends with the seal: one or two words holding a point of the final
    interval [lower, lower + range) of the 64-bit state window; the words before it are
    settled. Any point of the interval decodes the same symbols, so the seal is replaced by
    the fewest leading bytes of the window that, followed by zeros, fall in the interval: the
    smallest multiple of 2^(8 (8 - k)) at or above `lower`, for the smallest k. (If the
    interval wraps past 2^64 and the seal carried into the settled words, the wrapped point
    0 is in it: no byte at all.) Trailing zero bytes are dropped too: the decoder reads them
    back as zeros. So no shorter prefix of the result is a valid stream: a truncated file
    decodes to other symbols. When the words do not have the expected shape they are kept
    whole: a few bytes more, never a wrong stream.

    Args:
      coder: a `constriction.stream.queue.RangeEncoder` after its last symbol.

    Returns:
      The bytes to store.
    """
    words = coder.get_compressed()
    position, (lower, size) = coder.pos()
    whole = words.astype(">u4").tobytes()
    seal = [int(word) for word in words[position:]]
    if not 1 <= len(seal) <= 2:
        return whole
    point = seal[0] << _WORD_BITS | (seal[1] if len(seal) == 2 else 0)
    if (point - lower) & _STATE_MASK >= size:
        return whole
    settled = whole[: 4 * position]
    if point < lower:  # the seal wrapped past 2^64 and carried into the settled words
        return settled.rstrip(b"\0")
    for keep in range(9):  # bytes of the 64-bit window kept after the settled words
        unit = 1 << (8 * (8 - keep))
        candidate = -(-lower // unit) * unit
        if candidate <= _STATE_MASK and candidate < lower + size:
            return (settled + candidate.to_bytes(8, "big")[:keep]).rstrip(b"\0")
    return whole
