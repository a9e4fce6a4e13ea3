"""Conformance cases of bitstream version 2 (spec/bitstream-v2.md): the cross-grid context.

Numbered in the manifest from 301 (generator-made), 351 (encoder-made) and 371
(invalid), after the version-1 streams, which stay as they are. Each generator case
draws a v2 codec with `random_codec(..., version=2, cross_grids=C)`; the expected
samples come from the encoder's integer simulation, as for version 1.

What they cover (v2 5.1, 5.2a, 9): C from 1 to 6; 1xN and Nx1 pictures (a coarse
position `y >> k` that is always 0); odd sizes, where `ceil` sizes make the last
coarse row and column serve one fine row or column; C larger than the number of
coarser grids some grids have (the missing values are 0); constant coarser grids;
int16-extreme latents (cross-grid values of +-2^23) with extreme weights (wrap-around
in the ARM); the largest ARM (8192 MAC with 30 inputs); and streams that a decoder
must reject although every other part of them is consistent.
"""

from __future__ import annotations

import numpy as np

from .cases import EncoderCase, GeneratorCase
from .gap_cases import GapInvalidCase, StreamParts, _edit

V2 = dict(version=2)

# 30 inputs (r = 3: 24, C = 6): 30*64 + 64*64 + 64*30 + 30*8 + 8*2 = 8192 MAC per latent.
LARGEST_ARM_C6 = (
    "64-1-linear-relu,64-1-residual-leakyrelu,30-1-linear-none,8-1-linear-relu,2-1-linear-none"
)

V2_GENERATOR_CASES: list[GeneratorCase] = [
    GeneratorCase(
        "v2-1x1-rgb-2grids",
        "v2, smallest: 1x1 RGB 8-bit, 2 grids (both constant), C = 1, r = 1, T = 1.",
        301,
        dict(
            width=1,
            height=1,
            n_grids=2,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=1,
            ups_taps=1,
            cross_grids=1,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-9x7-grey-3grids-c2",
        "v2: 9x7 grey 8-bit, 3 grids, C = 2 (grid 0 reads grids 1 and 2, grid 1 reads grid 2 "
        "and one missing grid), r = 1, T = 2.",
        302,
        dict(
            width=9,
            height=7,
            n_grids=3,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            ups_taps=2,
            cross_grids=2,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-1x37-yuv420-10bit-c4",
        "v2, one column: 1x37 YUV 4:2:0 10-bit, 5 grids, C = 4, r = 3, T = 6.",
        303,
        dict(
            width=1,
            height=37,
            n_grids=5,
            color_format=3,
            bit_depth=10,
            n_ctx_rowcol=3,
            ups_taps=6,
            cross_grids=4,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-41x1-yuv444-10bit-c5",
        "v2, one row: 41x1 YUV 4:4:4 10-bit, 6 grids, C = 5, r = 2, T = 7.",
        304,
        dict(
            width=41,
            height=1,
            n_grids=6,
            color_format=2,
            bit_depth=10,
            n_ctx_rowcol=2,
            ups_taps=7,
            cross_grids=5,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-67x45-rgb-7grids-c6",
        "v2: 67x45 RGB 8-bit, all 7 grids (the smallest 2x1), C = 6 (every coarser grid), "
        "r = 2, T = 4, ARM 16-16-2.",
        305,
        dict(
            width=67,
            height=45,
            n_grids=7,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=2,
            ups_taps=4,
            arm="16-1-linear-relu,16-1-linear-relu,2-1-linear-none",
            cross_grids=6,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-33x17-rgb-4grids-c3",
        "v2: 33x17 RGB 8-bit (odd sizes), 4 grids, C = 3: grids 1 and 2 have fewer than 3 "
        "coarser grids, their missing cross-grid values are 0; r = 2, T = 3.",
        306,
        dict(
            width=33,
            height=17,
            n_grids=4,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=2,
            ups_taps=3,
            arm="12-1-linear-relu,2-1-linear-none",
            cross_grids=3,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-40x24-rgb-constant-coarse",
        "v2: 40x24 RGB 8-bit, 5 grids with grids 2 and 4 constant (cross-grid values from "
        "constant grids), C = 4, r = 1, T = 4.",
        307,
        dict(
            width=40,
            height=24,
            n_grids=5,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=1,
            ups_taps=4,
            constant_grids=(2, 4),
            cross_grids=4,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-23x19-rgb-10bit-extreme",
        "v2 with int16-extreme weights and latents: cross-grid values of +-2^23 and ARM "
        "accumulators that wrap; 23x19 RGB 10-bit, 5 grids, C = 2, r = 2.",
        308,
        dict(
            width=23,
            height=19,
            n_grids=5,
            color_format=1,
            bit_depth=10,
            n_ctx_rowcol=2,
            ups_taps=3,
            extreme=True,
            cross_grids=2,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-24x20-yuv420-8bit-largest-arm",
        "v2 with the largest ARM: r = 3 and C = 6 (30 inputs), 8192 MAC per latent "
        "(64-64 residual-30-8-2); 24x20 YUV 4:2:0 8-bit, 7 grids, T = 4.",
        309,
        dict(
            width=24,
            height=20,
            n_grids=7,
            color_format=3,
            bit_depth=8,
            n_ctx_rowcol=3,
            ups_taps=4,
            arm=LARGEST_ARM_C6,
            cross_grids=6,
            **V2,
        ),
    ),
    GeneratorCase(
        "v2-30x26-grey-12bit-c1",
        "v2: 30x26 grey 12-bit, 7 grids, C = 1 (only the next coarser grid), r = 3, T = 8.",
        310,
        dict(
            width=30,
            height=26,
            n_grids=7,
            color_format=0,
            bit_depth=12,
            n_ctx_rowcol=3,
            ups_taps=8,
            cross_grids=1,
            **V2,
        ),
    ),
]

_V2_TRAIN = dict(preset="instant", n_itr=800, device="cpu", seed=0, version=2)

V2_ENCODER_CASES: list[EncoderCase] = [
    EncoderCase(
        "v2-kodim23-64x48-rgb8",
        "Encoder-made v2: a 64x48 crop of kodim23 (parrot feathers), RGB 8-bit, operating "
        "point 2000 with its cross-grid context.",
        "kodim23",
        (368, 272, 48, 64),
        "rgb",
        dict(lmbda=1e-3, op="2000", **_V2_TRAIN),
    ),
    EncoderCase(
        "v2-kodim19-64x48-yuv420-10bit",
        "Encoder-made v2: a 64x48 crop of kodim19 (lighthouse) converted to YUV 4:2:0 10-bit "
        "(BT.709, limited range), operating point 1000 with its cross-grid context.",
        "kodim19",
        (128, 224, 48, 64),
        "yuv420-10",
        dict(lmbda=1e-3, op="1000", **_V2_TRAIN),
    ),
]


def _cross_grids_to(value: int):
    """cross_grids = value, the first ARM layer given a zero weight column per added input
    (so that everything else in the stream stays consistent)."""

    def edit(parts: StreamParts) -> None:
        added = value - parts.head[16]
        parts.head[16] = value
        w, b = parts.arm[0]
        pad = np.zeros((w.shape[0], added), dtype=np.int64)
        parts.arm[0] = [np.concatenate([w, pad], axis=1), b]

    edit.__name__ = f"_cross_grids_{value}"
    return edit


V2_INVALID_CASES: list[GapInvalidCase] = [
    GapInvalidCase(
        "v2-reject-cross-grids-above-n-minus-1",
        "v2: cross_grids = 3 with 3 grids (v2 3.2: at most n_grids - 1); the ARM has the "
        "inputs it declares.",
        "v2-9x7-grey-3grids-c2",
        _edit(_cross_grids_to(3)),
        4,
        "cross_grids",
    ),
    GapInvalidCase(
        "v2-reject-cross-grids-above-n-minus-1-7grids",
        "v2: cross_grids = 5 with 5 grids (v2 3.2: at most n_grids - 1).",
        "v2-1x37-yuv420-10bit-c4",
        _edit(_cross_grids_to(5)),
        4,
        "cross_grids",
    ),
    GapInvalidCase(
        "v2-reject-cross-grids-7",
        "v2: cross_grids = 7 with 7 grids (v2 3.2: 0..6).",
        "v2-67x45-rgb-7grids-c6",
        _edit(_cross_grids_to(7)),
        4,
        "cross_grids",
    ),
    GapInvalidCase(
        "v2-reject-cross-grids-above-n-minus-1-rgb",
        "v2: cross_grids = 4 with 4 grids (v2 3.2: at most n_grids - 1).",
        "v2-33x17-rgb-4grids-c3",
        _edit(_cross_grids_to(4)),
        4,
        "cross_grids",
    ),
]
