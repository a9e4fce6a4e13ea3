"""Writing decoded pictures: PNG, raw YUV (.yuv) and canonical raw samples (.raw).

Every file is written to a temporary file in the target directory and then
renamed over the target (os.replace), so an interrupted or failed write never
leaves a partial file under the requested name.
"""

from __future__ import annotations

import os
import re
import secrets
import struct
import zlib
from pathlib import Path

import numpy as np

from .decode import DecodedImage
from .samples import canonical_raw_bytes
from .syntax import ColorFormat, StreamHeader

FORMATS = (".png", ".yuv", ".raw")
_SIZE_IN_NAME = re.compile(r"_(\d+)x(\d+)_")


class OutputError(Exception):
    """The requested output cannot be written; the message is one line."""


def yuv_file_name(stem: str, width: int, height: int, color_format: ColorFormat, bits: int) -> str:
    """Cool-chic's naming convention: `<stem>_<W>x<H>_<fps>p_yuv420_<bits>b.yuv`.

    The frame rate is not coded in the stream: 1 is written.
    """
    chroma = "yuv420" if color_format.chroma_420 else "yuv444"
    return f"{stem}_{width}x{height}_1p_{chroma}_{bits}b.yuv"


def resolve_output(header: StreamHeader, path: str | os.PathLike) -> Path:
    """The path that will actually be written for `path`, after checking it fits the stream.

    Only the header is needed, so a bad output choice is reported before decoding.
    Raises OutputError.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    fmt = header.color_format
    name = fmt.long_name
    if suffix not in FORMATS:
        raise OutputError(
            f"cannot write '{target.suffix or target.name}' files: use .png, .yuv or .raw"
        )
    if suffix == ".png":
        if fmt.is_yuv:
            raise OutputError(f"PNG cannot hold a {name} picture: write .yuv or .raw instead")
        if header.bit_depth not in (8, 16):
            raise OutputError(
                f"PNG holds 8- or 16-bit samples, this stream is {header.bit_depth}-bit: "
                "write .raw instead"
            )
    elif suffix == ".yuv":
        if not fmt.is_yuv:
            raise OutputError(f"a {name} picture is not YUV: write .png or .raw instead")
        match = _SIZE_IN_NAME.search(target.stem)
        if match is None:
            target = target.with_name(
                yuv_file_name(target.stem, header.width, header.height, fmt, header.bit_depth)
            )
        elif (int(match[1]), int(match[2])) != (header.width, header.height):
            raise OutputError(
                f"output name says {match[1]}x{match[2]} but the picture is "
                f"{header.width}x{header.height}"
            )
    directory = target.parent
    if not directory.is_dir():
        raise OutputError(f"cannot write {target}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {target}: directory {directory} is not writable")
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a directory")
    return target


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory + os.replace.

    On any failure, KeyboardInterrupt included, the temporary file is removed and
    `path` is left as it was. Raises OutputError for OS errors.
    """
    target = Path(path)
    temp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    try:
        # 0o666 filtered by the umask, like a plain open(): not mkstemp's 0o600.
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temp, target)
    except BaseException as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise OutputError(f"cannot write {target}: {error.strerror}") from error
        raise


# zlib level of the PNG files. Level 1 compresses a 768x512 RGB picture in about
# 11 ms where level 6 took 80 ms (and imageio with Pillow 160-250 ms, a tenth of
# a fresh `coolchic-ref decode`), for files about 1.5 times larger.
PNG_LEVEL = 1


def png_bytes(image: DecodedImage) -> bytes:
    """PNG file of a grey or RGB picture, 8-bit (uint8) or 16-bit (uint16) samples.

    Colour type 0 (grey) or 2 (RGB), filter 0 on every row, no interlace: written
    here with zlib rather than imported from an image library.
    """
    if len(image.planes) == 1:
        pixels = image.planes[0][:, :, np.newaxis]
    else:
        pixels = np.stack(image.planes, axis=-1)
    height, width, channels = pixels.shape
    depth = 8 if pixels.dtype == np.uint8 else 16
    samples = np.ascontiguousarray(pixels, dtype=np.uint8 if depth == 8 else ">u2")
    row_bytes = width * channels * depth // 8
    raw = np.zeros((height, 1 + row_bytes), dtype=np.uint8)  # column 0: filter type 0
    raw[:, 1:] = samples.view(np.uint8).reshape(height, row_bytes)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    colour_type = 0 if channels == 1 else 2
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL))
        + chunk(b"IEND", b"")
    )


def encode_image(image: DecodedImage, path: Path) -> bytes:
    """The file content for `path`'s format (.png, .yuv or .raw)."""
    if path.suffix.lower() == ".png":
        return png_bytes(image)
    # .yuv is planar Y, U, V with the canonical sample layout; .raw is canonical.
    return canonical_raw_bytes(image.planes, image.bit_depth)


def write_image(image: DecodedImage, path: str | os.PathLike) -> Path:
    """Write `image` to `path` (format from the extension); return the path written.

    A .yuv name without `_<W>x<H>_` gets Cool-chic's full name (`yuv_file_name`).
    Raises OutputError.
    """
    target = resolve_output(image.header, path)
    atomic_write(target, encode_image(image, target))
    return target
