"""Files for the app and endpoint-handler tests: good JPEGs and the bad uploads the issue names."""

import io
import os
import struct
import zlib

from PIL import Image

from tests.helpers import random_rgb


def write_jpegs(folder, count: int = 3, size: tuple = (96, 72)) -> list:
    """`count` JPEGs of random content (distinct scores) in `folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = []
    for number in range(count):
        path = os.path.join(folder, f"photo-{number}.jpg")
        Image.fromarray(random_rgb(size[1] + 8 * number, size[0], seed=number)).save(path, quality=90 - 20 * number)
        paths.append(path)
    return paths


def bomb_png_bytes(side: int = 20000) -> bytes:
    """A PNG whose header says `side` x `side` pixels (400 MP, past PIL's decompression-bomb
    limit): a 1x1 PNG with its IHDR chunk rewritten (CRC included), under 100 bytes."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")  # length (4) | "IHDR" | width (4) | height (4) | 5 bytes | CRC (4)
    data[start + 4 : start + 12] = struct.pack(">II", side, side)
    data[start + 17 : start + 21] = struct.pack(">I", zlib.crc32(bytes(data[start : start + 17])))
    return bytes(data)


def strip_png_bytes() -> bytes:
    """A 1x10000 strip: an aspect ratio the processor refuses."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 10000), (128, 64, 32)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_bad_files(folder) -> dict:
    """`{kind: path}` of a text file named .jpg, a decompression bomb and a 1x10000 strip."""
    os.makedirs(folder, exist_ok=True)
    files = {"not-an-image": os.path.join(folder, "notes.jpg"), "bomb": os.path.join(folder, "bomb.png"), "strip": os.path.join(folder, "strip.png")}
    with open(files["not-an-image"], "w") as handle:
        handle.write("not an image\n")
    with open(files["bomb"], "wb") as handle:
        handle.write(bomb_png_bytes())
    with open(files["strip"], "wb") as handle:
        handle.write(strip_png_bytes())
    return files
