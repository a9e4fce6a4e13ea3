"""Output samples: Q12 to integer samples, canonical raw bytes (spec section 8).

Vectorized NumPy in int64 (no wrap-around here: values are clipped first). The
4:2:0 chroma reduction, which wraps to int32, is a Numba kernel (`chroma`),
imported on the first call so that this module stays light for the CLI.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .syntax import SYN_FRAC, StreamHeader

ONE_Q12 = 1 << SYN_FRAC  # 4096 represents the largest sample value


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
    from .chroma import reduce_chroma_420

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
