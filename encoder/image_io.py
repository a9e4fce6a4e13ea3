"""Reading the encoder's inputs: PNG (8/16-bit grey and RGB) and raw YUV files.

Raw YUV files follow Cool-chic's naming convention, which carries the geometry:
`<name>_<W>x<H>_<framerate>_<yuv420|yuv444>_<bits>b.yuv`, the frame rate written `50`,
`50p`, `29.97p` or `1fps` (it is not used). Samples are planar Y, U, V, one byte each for
8-bit, 16-bit little-endian words for 9 to 16 bits; a file of several frames codes its
first frame. The file size must be a whole number of frames of the named geometry.

Pillow reduces 16-bit colour PNGs to 8 bits, so 16-bit PNGs are decoded here (zlib and
the five PNG row filters); 8-bit ones go through Pillow. Every problem is reported as
an `InputError` with a one-line message.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .format import MAX_PIXELS, MAX_SIDE, ColorFormat

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
YUV_NAME_FORM = "<name>_<W>x<H>_<framerate>_<yuv420|yuv444>_<bits>b.yuv"
_YUV_NAME = re.compile(
    r"_(?P<w>\d+)x(?P<h>\d+)_(?P<fps>\d+(?:\.\d+)?)(?:p|fps)?_(?P<chroma>yuv420|yuv444)_(?P<bits>\d+)b$"
)


class InputError(Exception):
    """The input picture cannot be encoded; the message is one line."""


@dataclass
class Picture:
    """A picture to encode.

    planes: uint8 (8-bit) or uint16 arrays: grey [Y]; RGB [R, G, B]; YUV [Y, U, V] with
    4:2:0 chroma of ceil(H/2) x ceil(W/2) samples. Sample values are in 0..2^bit_depth-1.
    """

    planes: list[np.ndarray]
    color_format: ColorFormat
    bit_depth: int
    source: str = "<array>"
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.color_format = ColorFormat(self.color_format)

    @property
    def height(self) -> int:
        return int(self.planes[0].shape[0])

    @property
    def width(self) -> int:
        return int(self.planes[0].shape[1])

    @property
    def n_samples(self) -> int:
        return sum(p.size for p in self.planes)

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.color_format.label} {self.bit_depth}-bit"


def _check_size(width: int, height: int, source: str) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{source}: empty image ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise InputError(
            f"{source}: {width}x{height} is too large (at most {MAX_SIDE} per side and "
            f"{MAX_PIXELS} pixels)"
        )


def picture_from_array(
    array: np.ndarray, bit_depth: int | None = None, source: str = "<array>"
) -> Picture:
    """A grey (H, W) or RGB (H, W, 3) uint8 / uint16 array as a Picture.

    bit_depth defaults to 8 for uint8 and 16 for uint16; (H, W, 4) drops alpha with a warning.
    """
    a = np.asarray(array)
    warnings: list[str] = []
    if a.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{source}: samples must be uint8 or uint16, not {a.dtype}")
    if a.ndim == 3 and a.shape[2] in (2, 4):
        warnings.append(f"{source}: alpha channel dropped")
        a = a[..., :-1]
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise InputError(f"{source}: expected an (H, W) or (H, W, 3) image, got shape {a.shape}")
    _check_size(a.shape[1] if a.ndim >= 2 else 0, a.shape[0], source)
    depth = bit_depth or (8 if a.dtype == np.uint8 else 16)
    if not 8 <= depth <= 16:
        raise InputError(f"{source}: bit depth {depth} outside 8..16")
    if int(a.max()) >= 1 << depth:
        raise InputError(f"{source}: sample value {int(a.max())} exceeds {depth} bits")
    dtype = np.uint8 if depth == 8 else np.uint16
    if a.ndim == 2:
        planes = [np.ascontiguousarray(a, dtype=dtype)]
        fmt = ColorFormat.GREY
    else:
        planes = [np.ascontiguousarray(a[..., c], dtype=dtype) for c in range(3)]
        fmt = ColorFormat.RGB
    return Picture(planes, fmt, depth, source, warnings)


def read_picture(path: str | os.PathLike) -> Picture:
    """Read a PNG or raw YUV file (see the module docstring). Raises InputError."""
    path = Path(path)
    source = path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not an image") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror or error})") from None
    if not data:
        raise InputError(f"{source}: empty file")
    if path.suffix.lower() == ".yuv":
        return _read_yuv(data, path)
    if data.startswith(_PNG_SIGNATURE):
        return _read_png(data, source)
    raise InputError(
        f"{source}: not a PNG file and not a .yuv file (inputs: PNG or raw {YUV_NAME_FORM})"
    )


# ----------------------------------------------------------------------------- YUV


def parse_yuv_name(name: str) -> tuple[int, int, ColorFormat, int]:
    """(width, height, color_format, bit_depth) from a Cool-chic style .yuv file name."""
    stem = name[:-4] if name.lower().endswith(".yuv") else name
    match = _YUV_NAME.search(stem)
    if match is None:
        raise InputError(
            f"{name}: a raw YUV file must be named {YUV_NAME_FORM} (framerate e.g. 50, 50p or 1fps)"
        )
    width, height, bits = int(match["w"]), int(match["h"]), int(match["bits"])
    if not 8 <= bits <= 16:
        raise InputError(f"{name}: bit depth {bits} outside 8..16")
    fmt = ColorFormat.from_label(match["chroma"])
    return width, height, fmt, bits


def yuv_frame_shapes(width: int, height: int, color_format: ColorFormat) -> list[tuple[int, int]]:
    """(rows, columns) of the Y, U, V planes of one frame."""
    if color_format.subsampled_chroma:
        chroma = (-(-height // 2), -(-width // 2))
    else:
        chroma = (height, width)
    return [(height, width), chroma, chroma]


def _read_yuv(data: bytes, path: Path) -> Picture:
    source = path.name
    width, height, fmt, bits = parse_yuv_name(path.name)
    _check_size(width, height, source)
    shapes = yuv_frame_shapes(width, height, fmt)
    sample_bytes = 1 if bits == 8 else 2
    frame = sum(h * w for h, w in shapes) * sample_bytes
    if len(data) < frame or len(data) % frame:
        raise InputError(
            f"{source}: size mismatch: {len(data)} bytes is not a whole number of "
            f"{width}x{height} {fmt.label} {bits}-bit frames ({frame} bytes each)"
        )
    dtype = np.dtype(np.uint8) if bits == 8 else np.dtype("<u2")
    samples = np.frombuffer(data, dtype=dtype, count=frame // sample_bytes)
    planes, start = [], 0
    for h, w in shapes:
        planes.append(samples[start : start + h * w].reshape(h, w).astype(dtype.newbyteorder("=")))
        start += h * w
    peak = max(int(p.max()) for p in planes)
    if peak >= 1 << bits:
        raise InputError(f"{source}: sample value {peak} exceeds {bits} bits")
    return Picture(planes, fmt, bits, source)


# ----------------------------------------------------------------------------- PNG


def _png_chunks(data: bytes, source: str) -> list[tuple[bytes, bytes]]:
    chunks, pos = [], len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise InputError(f"{source}: truncated PNG file")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise InputError(f"{source}: corrupt PNG file (bad {kind.decode('latin-1')} CRC)")
        chunks.append((kind, body))
        pos += 12 + length
        if kind == b"IEND":
            return chunks
    raise InputError(f"{source}: truncated PNG file")


def _read_png(data: bytes, source: str) -> Picture:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise InputError(f"{source}: truncated PNG file")
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    _check_size(width, height, source)
    if depth == 16:
        return _read_png16(data, source, width, height, color_type, interlace)
    return _read_png_pillow(data, source)


def _read_png_pillow(data: bytes, source: str) -> Picture:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif mode == "1":
                image = image.convert("L")
            array = np.asarray(image)
    except InputError:
        raise
    except Exception as error:  # Pillow raises many types for broken files
        raise InputError(f"{source}: cannot decode PNG ({' '.join(str(error).split())})") from None
    if array.dtype != np.uint8:
        raise InputError(f"{source}: unsupported PNG sample type {array.dtype}")
    return picture_from_array(array, 8, source)


def _read_png16(
    data: bytes, source: str, width: int, height: int, color_type: int, interlace: int
) -> Picture:
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(color_type)
    if channels is None:
        raise InputError(f"{source}: invalid PNG colour type {color_type} for 16-bit samples")
    if interlace:
        raise InputError(
            f"{source}: interlaced 16-bit PNG is not supported; save it non-interlaced"
        )
    idat = b"".join(body for kind, body in _png_chunks(data, source) if kind == b"IDAT")
    try:
        raw = zlib.decompress(idat)
    except zlib.error:
        raise InputError(f"{source}: corrupt PNG image data") from None
    bpp = 2 * channels  # bytes per pixel
    stride = width * bpp
    if len(raw) < height * (stride + 1):
        raise InputError(f"{source}: truncated PNG image data")
    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (stride + 1)).reshape(height, -1)
    filters = rows[:, 0].copy()
    if int(filters.max()) > 4:
        raise InputError(f"{source}: corrupt PNG image data (filter type {int(filters.max())})")
    pixels = _unfilter(rows[:, 1:].copy(), filters, bpp)
    samples = pixels.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return picture_from_array(samples[..., 0] if channels == 1 else samples, 16, source)


def _unfilter(rows: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo the PNG row filters in place on (height, stride) uint8 rows."""
    height, stride = rows.shape
    prior = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        f = int(filters[y])
        row = rows[y]
        if f == 1:  # Sub: running sum per byte lane
            lanes = row.reshape(-1, bpp).astype(np.uint32)
            row[:] = (np.cumsum(lanes, axis=0) & 0xFF).astype(np.uint8).reshape(-1)
        elif f == 2:  # Up
            row += prior
        elif f in (3, 4):  # Average, Paeth: sequential along the row
            _unfilter_sequential(row, prior, bpp, f)
        prior = row
    return rows


def _unfilter_sequential(row: np.ndarray, prior: np.ndarray, bpp: int, f: int) -> None:
    kernel = _sequential_kernel()
    kernel(row, prior, bpp, f)


_KERNEL = None


def _sequential_kernel():
    """The Average / Paeth row loop, compiled with Numba when available."""
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL

    def kernel(row, prior, bpp, f):  # pragma: no cover - compiled
        for i in range(row.shape[0]):
            a = np.int32(row[i - bpp]) if i >= bpp else np.int32(0)
            b = np.int32(prior[i])
            if f == 3:
                pred = (a + b) >> 1
            else:
                c = np.int32(prior[i - bpp]) if i >= bpp else np.int32(0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            row[i] = (np.int32(row[i]) + pred) & 0xFF

    try:
        import numba

        _KERNEL = numba.njit(cache=True, nogil=True)(kernel)
    except ImportError:  # pragma: no cover - numba is a dependency of the package
        _KERNEL = kernel
    return _KERNEL
