"""Output samples: 4:2:0 chroma reduction, Q12 to integer samples, canonical raw bytes.

Spec section 8. The chroma reduction is a Numba kernel with the decoder's
wrap32 where the spec asks for int32 wrap-around; the sample conversion is
vectorized NumPy in int64 (no wrap-around there: values are clipped first).
"""

from __future__ import annotations

import hashlib

import numpy as np
from numba import njit

from .layer_kernels import wrap32
from .syntax import SYN_FRAC, StreamHeader

ONE_Q12 = 1 << SYN_FRAC  # 4096 represents the largest sample value


@njit(cache=True)
def reduce_chroma_420(plane: np.ndarray) -> np.ndarray:
    """2x2 average of an int32 Q12 plane (H, W) -> int32 (ceil(H/2), ceil(W/2)), spec 8.1.

    The last row / column is repeated for odd sizes; the sum wraps to int32 and
    the result is rounded half up: wrap32(a + b + c + d + 2) >> 2.
    """
    height, width = plane.shape
    out = np.empty(((height + 1) // 2, (width + 1) // 2), dtype=np.int32)
    for y in range(out.shape[0]):
        top = plane[2 * y]
        bottom = plane[min(2 * y + 1, height - 1)]
        for x in range(out.shape[1]):
            x0 = 2 * x
            x1 = min(x0 + 1, width - 1)
            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1] + 2
            out[y, x] = np.int64(wrap32(total)) >> 2
    return out


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
        if header.color_format.chroma_420 and index > 0:
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
