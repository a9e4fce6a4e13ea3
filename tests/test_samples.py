"""Output samples (spec section 8): 4:2:0 reduction, sample conversion, canonical raw."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from coolchic_ref.chroma import reduce_chroma_420
from coolchic_ref.layer_kernels import wrap32
from coolchic_ref.samples import (
    canonical_raw_bytes,
    make_planes,
    sha256_hex,
    to_samples,
)
from coolchic_ref.syntax import ColorFormat


def wrap(x: int) -> int:
    return (x + (1 << 31)) % (1 << 32) - (1 << 31)


def reduce_by_hand(c: np.ndarray) -> np.ndarray:
    """Spec 8.1, literally, with Python integers."""
    height, width = c.shape
    out = np.zeros(((height + 1) // 2, (width + 1) // 2), dtype=np.int64)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            y0, y1 = 2 * y, min(2 * y + 1, height - 1)
            x0, x1 = 2 * x, min(2 * x + 1, width - 1)
            total = int(c[y0, x0]) + int(c[y0, x1]) + int(c[y1, x0]) + int(c[y1, x1]) + 2
            out[y, x] = wrap(total) >> 2
    return out


@pytest.mark.parametrize("shape", [(1, 1), (1, 2), (2, 1), (1, 5), (5, 1), (2, 2), (3, 3), (4, 7)])
def test_chroma_reduction_edge_sizes(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 10 + shape[1])
    c = rng.integers(-5000, 9000, size=shape).astype(np.int32)
    out = reduce_chroma_420(c)
    assert out.shape == ((shape[0] + 1) // 2, (shape[1] + 1) // 2)
    assert out.dtype == np.int32
    assert np.array_equal(out, reduce_by_hand(c))


def test_chroma_reduction_odd_edges_repeat() -> None:
    c = np.array([[1, 2, 3], [5, 6, 7], [9, 10, 11]], dtype=np.int32)
    # bottom-right: 11 four times, +2, >> 2 = 11; right column: (3 + 3 + 7 + 7 + 2) >> 2 = 5
    assert reduce_chroma_420(c).tolist() == [
        [(1 + 2 + 5 + 6 + 2) >> 2, 5],
        [(9 + 10 + 9 + 10 + 2) >> 2, 11],
    ]


def test_chroma_reduction_rounds_half_up_and_floors_negatives() -> None:
    c = np.array([[1, 0], [0, 1]], dtype=np.int32)  # (2 + 2) >> 2 = 1
    assert reduce_chroma_420(c)[0, 0] == 1
    c = np.array([[-1, -1], [-1, -2]], dtype=np.int32)  # (-5 + 2) >> 2 = -1
    assert reduce_chroma_420(c)[0, 0] == -1


def test_chroma_reduction_wraps() -> None:
    big = (1 << 31) - 1
    c = np.full((2, 2), big, dtype=np.int32)
    expected = wrap(4 * big + 2) >> 2
    assert reduce_chroma_420(c)[0, 0] == expected == -1  # 2^33 - 2 wraps to -2; -2 >> 2 = -1
    c = np.full((2, 2), -(1 << 31), dtype=np.int32)
    assert reduce_chroma_420(c)[0, 0] == wrap(-(1 << 33) + 2) >> 2 == 0


def test_wrap32() -> None:
    values = [0, 1 << 31, -(1 << 31) - 1, (1 << 32) + 5, -(1 << 40) - 3, (1 << 63) - 1]
    for v in values:
        assert wrap32(np.int64(v)) == wrap32.py_func(np.int64(v)) == wrap(v)


@pytest.mark.parametrize("bit_depth", [8, 10, 12, 16])
def test_sample_conversion(bit_depth: int) -> None:
    maxval = (1 << bit_depth) - 1
    c = np.array(
        [-(1 << 31), -1, 0, 1, 2047, 2048, 4095, 4096, 4097, (1 << 31) - 1], dtype=np.int32
    )
    expected = [(min(max(int(v), 0), 4096) * maxval + 2048) >> 12 for v in c]
    out = to_samples(c, bit_depth)
    assert out.dtype == (np.uint8 if bit_depth == 8 else np.uint16)
    assert out.tolist() == expected
    assert out[0] == 0 and out[-1] == maxval and out[7] == maxval


def test_sample_conversion_values() -> None:
    c = np.array([2048, 1], dtype=np.int32)
    assert to_samples(c, 8).tolist() == [(2048 * 255 + 2048) >> 12, 0]  # 128, 0
    assert to_samples(c, 10).tolist() == [512, 0]
    assert to_samples(c, 16).tolist() == [32768, 16]


class FakeHeader:
    def __init__(self, color_format: ColorFormat, bit_depth: int) -> None:
        self.color_format = color_format
        self.bit_depth = bit_depth


@pytest.mark.parametrize(
    ("color_format", "shapes"),
    [
        (ColorFormat.GREY, [(5, 7)]),
        (ColorFormat.RGB, [(5, 7)] * 3),
        (ColorFormat.YUV444, [(5, 7)] * 3),
        (ColorFormat.YUV420, [(5, 7), (3, 4), (3, 4)]),
    ],
)
def test_planes(color_format: ColorFormat, shapes: list[tuple[int, int]]) -> None:
    n = color_format.n_channels
    synthesis = np.random.default_rng(1).integers(-100, 4200, size=(n, 5, 7)).astype(np.int32)
    planes = make_planes(FakeHeader(color_format, 10), synthesis)
    assert [p.shape for p in planes] == shapes
    assert all(p.dtype == np.uint16 for p in planes)
    assert np.array_equal(planes[0], to_samples(synthesis[0], 10))
    if color_format.chroma_420:
        assert np.array_equal(planes[2], to_samples(reduce_chroma_420(synthesis[2]), 10))


def test_canonical_raw_layout_8bit() -> None:
    planes = [np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8), np.array([[7]], dtype=np.uint8)]
    assert canonical_raw_bytes(planes, 8) == bytes([1, 2, 3, 4, 5, 6, 7])


def test_canonical_raw_layout_16bit_little_endian() -> None:
    planes = [
        np.array([[0x0102, 0x0304]], dtype=np.uint16),
        np.array([[0xFFFE], [0x0010]], dtype=np.uint16),
    ]
    raw = canonical_raw_bytes(planes, 10)
    assert raw == bytes([0x02, 0x01, 0x04, 0x03, 0xFE, 0xFF, 0x10, 0x00])
    # Big-endian or non-contiguous inputs give the same bytes.
    swapped = [p.astype(">u2") for p in planes]
    assert canonical_raw_bytes(swapped, 10) == raw
    transposed = [np.asfortranarray(p) for p in planes]
    assert canonical_raw_bytes(transposed, 16) == raw
    assert sha256_hex(planes, 10) == hashlib.sha256(raw).hexdigest()
