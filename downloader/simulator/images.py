"""Real, valid image bytes of a chosen size, generated fast and deterministically (pure).

PNG: 8-bit grayscale with random pixels, so zlib cannot shrink it and the file size
follows the pixel count. JPEG: a tiny valid 8x8 baseline JPEG padded with COM segments.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from collections.abc import Iterator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
MIN_SIZE = 5_000
MAX_SIZE = 200_000
MEDIAN_SIZE = 30_000
_PNG_WIDTH = 400
_COM_MAX_PAYLOAD = 65_533  # a segment length field is 16 bits and counts itself


def _segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload


def _tiny_jpeg_parts() -> tuple[bytes, bytes]:
    """An 8x8 mid-gray baseline JPEG, split after its JFIF header (where padding goes)."""
    soi = b"\xff\xd8"
    app0 = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    dqt = _segment(0xDB, b"\x00" + b"\x01" * 64)
    sof0 = _segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00")
    # One-symbol Huffman tables: DC category 0 and AC end-of-block, each coded "0".
    one_code = b"\x01" + b"\x00" * 15 + b"\x00"
    dht = _segment(0xC4, b"\x00" + one_code) + _segment(0xC4, b"\x10" + one_code)
    sos = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    # Entropy data: DC "0" + EOB "0", padded with 1-bits -> 0b00111111.
    scan = b"\x3f" + b"\xff\xd9"
    return soi + app0, dqt + sof0 + dht + sos + scan


_JPEG_HEAD, _JPEG_TAIL = _tiny_jpeg_parts()
TINY_JPEG = _JPEG_HEAD + _JPEG_TAIL


def pick_size(rng: random.Random) -> int:
    """A lognormal-ish size with median ~30 KB, clipped to 5–200 KB."""
    size = math.exp(rng.gauss(math.log(MEDIAN_SIZE), 0.7))
    return int(min(MAX_SIZE, max(MIN_SIZE, size)))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """PNG signature plus an IHDR chunk for an 8-bit grayscale image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _png_chunk(b"IHDR", ihdr)


def make_png(rng: random.Random, size: int) -> bytes:
    """A valid grayscale PNG of roughly `size` bytes."""
    height = max(1, -(-size // (_PNG_WIDTH + 1)))
    raw = bytearray(rng.randbytes(height * (_PNG_WIDTH + 1)))
    raw[:: _PNG_WIDTH + 1] = bytes(height)  # filter type 0 at the start of every row
    idat = zlib.compress(bytes(raw), 1)
    return png_header(_PNG_WIDTH, height) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def make_jpeg(rng: random.Random, size: int) -> bytes:
    """A valid baseline JPEG of exactly `size` bytes (at least the tiny one)."""
    parts = [_JPEG_HEAD]
    missing = size - len(TINY_JPEG)
    while missing > 4:
        payload = min(_COM_MAX_PAYLOAD, missing - 4)
        parts.append(_segment(0xFE, rng.randbytes(payload)))
        missing -= payload + 4
    parts.append(_JPEG_TAIL)
    return b"".join(parts)


def huge_png_chunks(total: int, chunk: int = 65_536) -> Iterator[bytes]:
    """`total` bytes: a PNG header claiming a vast image, then zero padding, made lazily."""
    head = png_header(50_000, 50_000)[:total]
    yield head
    left = total - len(head)
    zeros = bytes(chunk)
    while left > 0:
        piece = min(chunk, left)
        yield zeros if piece == chunk else bytes(piece)
        left -= piece
