"""Hypothesis strategies that damage real files as an attacker or a bad disk would.

Shared by the property tests of every reader of outside bytes (one per library module's test
file). A mutation starts from a real file the project wrote and applies a few edits:
truncation, bit flips, a huge varint, a wrong magic, two fields swapped, random bytes
inserted, a chunk repeated. The readers must return a right result or raise the project's
own error; these strategies only make the inputs.
"""

from __future__ import annotations

import zlib

from hypothesis import strategies as st

# A LEB128 varint of 2^63 - 1, and big-endian uint32 maxima: sizes that overflow allocation.
HUGE_VARINT = b"\xff" * 8 + b"\x7f"
HUGE_FIELDS = (HUGE_VARINT, b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x98\x96\x80")


@st.composite
def _edit(draw, data: bytes) -> bytes:
    n = len(data)
    at = draw(st.integers(0, max(n - 1, 0)))
    kind = draw(
        st.sampled_from(["truncate", "flip", "huge", "magic", "swap", "insert", "repeat", "set"])
    )
    if kind == "truncate":
        return data[:at]
    if kind == "flip" and n:
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if kind == "huge":
        field = draw(st.sampled_from(HUGE_FIELDS))
        return data[:at] + field + data[at + len(field) :]
    if kind == "magic":
        return draw(st.binary(min_size=2, max_size=8)) + data[2:]
    if kind == "swap" and n > 2:
        size = draw(st.integers(1, max(1, min(8, n // 2))))
        other = draw(st.integers(0, max(n - size, 0)))
        a, b = sorted((min(at, n - size), other))
        if a + size <= b:
            return (
                data[:a]
                + data[b : b + size]
                + data[a + size : b]
                + data[a : a + size]
                + data[b + size :]
            )
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "repeat":
        return (
            data[:at]
            + data[at : at + draw(st.integers(1, 64))] * draw(st.integers(2, 8))
            + data[at:]
        )
    if kind == "set" and n:
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    return data


@st.composite
def mutated(draw, data: bytes, max_edits: int = 3) -> bytes:
    """`data` after 1 to `max_edits` random edits."""
    for _ in range(draw(st.integers(1, max_edits))):
        data = draw(_edit(data))
    return data


def fix_png_crcs(data: bytes) -> bytes:
    """Recomputes the CRC of every whole chunk, so edits reach the parser behind the CRCs."""
    out, offset = bytearray(data[:8]), 8
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        end = offset + 8 + length
        if end + 4 > len(data):
            break
        body = data[offset + 4 : end]
        out += data[offset:end] + zlib.crc32(body).to_bytes(4, "big")
        offset = end + 4
    return bytes(out + data[offset:])
