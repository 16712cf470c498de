"""Tiny PNG charts with numpy + zlib only (no matplotlib): used by ``bench`` and ``packs eval``."""

from __future__ import annotations

import struct
import zlib

import numpy as np

__all__ = ["Canvas", "Color"]

# A 3×5 pixel font (rows top to bottom, 3 bits each) for labels; lower case is drawn upper.
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001001001001", "8": "111101111101111",
    "9": "111101111001111", "A": "010101111101101", "B": "110101110101110",
    "C": "011100100100011", "D": "110101101101110", "E": "111100110100111",
    "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101",
    "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "Q": "010101101110011",
    "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101",
    "X": "101101010101101", "Y": "101101010010010", "Z": "111001010100111",
    " ": "000000000000000", ".": "000000000000010", ",": "000000000010100",
    ":": "000010000010000", "/": "001001010100100", "(": "010100100100010",
    ")": "010001001001010", "-": "000000111000000", "%": "101001010100101",
    "=": "000111000111000", "+": "000010111010000", "_": "000000000000111",
    "!": "010010010000010",
}  # fmt: skip

Color = tuple[int, int, int]


class Canvas:
    """A white RGB image with rectangles, lines and 3×5-pixel text; ``png()`` encodes it."""

    def __init__(self, width: int, height: int) -> None:
        self.px = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        h, w = self.px.shape[:2]
        x0, x1 = max(0, min(x0, x1)), min(w, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(h, max(y0, y1))
        self.px[y0:y1, x0:x1] = color

    def line(
        self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 2
    ) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for x, y in zip(np.linspace(x0, x1, n), np.linspace(y0, y1, n), strict=True):
            xi, yi = round(float(x)), round(float(y))
            self.rect(
                xi - width // 2,
                yi - width // 2,
                xi + (width + 1) // 2,
                yi + (width + 1) // 2,
                color,
            )

    def text(self, x: int, y: int, text: str, color: Color = (0, 0, 0), scale: int = 2) -> None:
        for ch in text.upper():
            bits = _FONT.get(ch, _FONT[" "])
            for i, bit in enumerate(bits):
                if bit == "1":
                    r, c = divmod(i, 3)
                    self.rect(
                        x + c * scale,
                        y + r * scale,
                        x + (c + 1) * scale,
                        y + (r + 1) * scale,
                        color,
                    )
            x += 4 * scale

    def png(self) -> bytes:
        h, w = self.px.shape[:2]
        raw = b"".join(b"\x00" + self.px[row].tobytes() for row in range(h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )
