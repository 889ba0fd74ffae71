"""Small patch trees in the Kaggle layout, for the index, cache and reliability tests."""
from __future__ import annotations

import struct
import zlib

import numpy as np
from PIL import Image


def write_png(path, size=(50, 50), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def kaggle_tree(root, patients=(10, 11, 12), per_class=3):
    for pid in patients:
        for c in (0, 1):
            for k in range(per_class):
                write_png(root / str(pid) / str(c) / f"{pid}_idx5_x{1 + 50 * k}_y{1 + 50 * c}_class{c}.png")
    return root


def corrupt_pixels(path):
    """Flip bytes inside the compressed pixel data; header and IEND stay intact."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start:start + 16] = bytes(16)
    path.write_bytes(bytes(data))


def png_header(path, width: int, height: int) -> None:
    """A small PNG whose header claims width x height pixels (a decompression bomb, without the memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64)))
                     + chunk(b"IEND", b""))
