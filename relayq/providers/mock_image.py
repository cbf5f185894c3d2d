"""The mock provider's images: small deterministic PNGs, written with ``zlib`` and ``struct``.

A PNG (https://www.w3.org/TR/png-3/) is an 8-byte signature and chunks, each
its length, its type, its data and a CRC-32 of type and data: ``IHDR`` (width,
height, bit depth 8, colour type 2: RGB), one ``IDAT`` of the zlib-compressed
rows (each row a filter byte, 0, then its pixels) and ``IEND``. The colours
come from a hash of the prompt and the image's index, so the same request
always draws the same images, and two images of one request differ.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Final

__all__ = ["MOCK_IMAGE_SIDE", "PNG_SIGNATURE", "mock_png"]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
MOCK_IMAGE_SIDE: Final = 16
"""Width and height of every mock image, whatever ``size`` asks: small on the wire."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def mock_png(prompt: str, index: int = 0, *, side: int = MOCK_IMAGE_SIDE) -> bytes:
    """A ``side`` x ``side`` RGB PNG: four quadrants of colours drawn from a hash of
    ``prompt`` and ``index``."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    colours = [digest[i : i + 3] for i in range(0, 12, 3)]
    half = side // 2
    rows = bytearray()
    for y in range(side):
        rows.append(0)  # filter type: none
        for x in range(side):
            rows += colours[(y >= half) * 2 + (x >= half)]
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows)))
        + _chunk(b"IEND", b"")
    )
