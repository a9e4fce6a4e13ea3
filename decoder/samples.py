"""Output samples: 4:2:0 chroma reduction, Q12 to integer samples, canonical raw bytes.

Spec section 8. Vectorized NumPy in int64 with an explicit wrap32 where the
spec asks for int32 wrap-around, so the result does not depend on how NumPy
casts out-of-range integers.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .syntax import SYN_FRAC, ColorFormat, StreamHeader

ONE_Q12 = 1 << SYN_FRAC  # 4096 represents the largest sample value


def wrap32(x: np.ndarray) -> np.ndarray:
    """Two's-complement int32 reduction of an int64 array, as int64."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def reduce_chroma_420(plane: np.ndarray) -> np.ndarray:
    """2x2 average of a Q12 plane (H, W) -> (ceil(H/2), ceil(W/2)), spec 8.1.

    The last row / column is repeated for odd sizes; the sum wraps to int32 and
    the result is rounded half up: wrap32(a + b + c + d + 2) >> 2.
    """
    c = np.asarray(plane, dtype=np.int64)
    height, width = c.shape
    y0 = np.arange(0, height, 2)
    y1 = np.minimum(y0 + 1, height - 1)
    x0 = np.arange(0, width, 2)
    x1 = np.minimum(x0 + 1, width - 1)
    top, bottom = c[y0], c[y1]
    total = top[:, x0] + top[:, x1] + bottom[:, x0] + bottom[:, x1] + 2
    return (wrap32(total) >> 2).astype(np.int32)


def to_samples(plane: np.ndarray, bit_depth: int) -> np.ndarray:
    """Q12 values -> samples (clip(c, 0, 4096) * maxval + 2048) >> 12, spec 8.2.

    Returns uint8 for 8-bit, uint16 otherwise.
    """
    maxval = (1 << bit_depth) - 1
    c = np.clip(np.asarray(plane, dtype=np.int64), 0, ONE_Q12)
    samples = (c * maxval + (ONE_Q12 >> 1)) >> SYN_FRAC
    return samples.astype(np.uint8 if bit_depth == 8 else np.uint16)


def make_planes(header: StreamHeader, synthesis_out: np.ndarray) -> list[np.ndarray]:
    """Synthesis output (n_channels, H, W) int32 Q12 -> the picture's sample planes.

    Grey [Y]; RGB [R, G, B]; YUV [Y, U, V], with U and V at ceil(W/2) x ceil(H/2)
    for 4:2:0.
    """
    planes = []
    for index, channel in enumerate(synthesis_out):
        if header.color_format == ColorFormat.YUV420 and index > 0:
            channel = reduce_chroma_420(channel)
        planes.append(to_samples(channel, header.bit_depth))
    return planes


def canonical_raw_bytes(planes: list[np.ndarray], bit_depth: int) -> bytes:
    """Planes in order, row-major; one byte per sample at 8 bits, else u16 little-endian.

    Spec 8.3: the byte string the conformance suite hashes.
    """
    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")
    return b"".join(np.ascontiguousarray(plane, dtype=dtype).tobytes() for plane in planes)


def sha256_hex(planes: list[np.ndarray], bit_depth: int) -> str:
    """SHA-256 (hex) of the canonical raw samples."""
    return hashlib.sha256(canonical_raw_bytes(planes, bit_depth)).hexdigest()
