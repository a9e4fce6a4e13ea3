"""The conformance cases as data: what each stream of tests/conformance/ is made from.

Read by tools/make_conformance.py, which builds, checks and writes the suite.
Three kinds of record, numbered in the manifest in this order (001-, 101-, 201-):

- `GeneratorCase`: an integer codec drawn by
  `coolchic_ref.encoder.random_codec.random_codec(default_rng(seed), **options)`,
  then changed by the named codec edits in turn, written by the encoder's
  writer, and optionally rewritten by a named stream edit that keeps the
  samples (tools/conformance/edits.py);
- `EncoderCase`: a crop of a Kodak picture, converted, encoded by the real
  encoder with `options`;
- `InvalidCase`: a valid stream of the suite (`base`, a generator case's slug)
  changed by a named edit so that spec section 9 rule `rule` rejects it.

Edits are named as the recipes of the published v1 manifest name them (with a
leading underscore); the names are resolved in tools/conformance/edits.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GeneratorCase:
    """A stream drawn by `random_codec(default_rng(seed), **options)`, then edited."""

    slug: str
    description: str
    seed: int
    options: dict
    edits: tuple[str, ...] = ()  # codec edits, applied in order
    stream_edit: str | None = None  # rewrites the written stream into an equivalent one


@dataclass(frozen=True)
class EncoderCase:
    """A crop (top, left, height, width) of a Kodak picture, converted, then encoded."""

    slug: str
    description: str
    image: str
    crop: tuple[int, int, int, int]
    convert: str  # "rgb", "grey", "yuv444-8", "yuv420-10"
    options: dict


@dataclass(frozen=True)
class InvalidCase:
    """An edit of valid stream `base` that spec section 9 rule `rule` rejects."""

    slug: str
    description: str
    base: str  # slug of a generator case
    edit: str
    rule: int
    error: str  # a part of the reference decoder's message (informative)


# ---------------------------------------------------------------------------
# Generator-made streams

BENCH_ARM = "16-1-linear-relu,16-1-linear-relu,2-1-linear-none"
OP1000_SYN = "16-1-linear-relu,3-1-linear-none,3-3-residual-relu,3-3-residual-none"
LARGEST_ARM = (  # 24*64 + 64*64 + 64*30 + 30*20 + 20*2 = 8192 MAC per latent
    "64-1-linear-relu,64-1-residual-leakyrelu,30-1-linear-none,20-1-linear-relu,2-1-linear-none"
)
LARGEST_SYN = (  # 7*64 + 64*64 + 9*64*6 + 49*6*6 + 6*13 + 25*13*8 + 9*8*18 + 49*18*3 = 16384
    "64-1-linear-relu,64-1-residual-leakyrelu,6-3-linear-none,6-7-residual-relu,"
    "13-1-linear-leakyrelu,8-5-linear-relu,18-3-linear-leakyrelu,3-7-linear-none"
)

GENERATOR_CASES: list[GeneratorCase] = [
    GeneratorCase(
        "smallest-1x1-grey",
        "Smallest picture and architecture: 1x1 grey 8-bit, 1 grid (one latent, so "
        "constant: no substream), r = 1, T = 1, ARM 2-1-linear-none, synthesis 1-1-linear-none.",
        1,
        dict(
            width=1,
            height=1,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            syn="1-1-linear-none",
            ups_taps=1,
        ),
    ),
    GeneratorCase(
        "smallest-arch-coded-grey-9bit",
        "Smallest architecture with a coded grid: 9x7 grey 9-bit, 1 grid of alphabet 2, "
        "r = 1, T = 1, ARM 2-1-linear-none, synthesis 1-1-linear-none.",
        2,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=9,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            syn="1-1-linear-none",
            ups_taps=1,
            latent_range=3,
        ),
        edits=("_binary_latents",),
    ),
    GeneratorCase(
        "1x1-rgb-7grids",
        "1x1 RGB 8-bit with the maximum of 7 grids, every grid 1x1 (constant), r = 2, T = 8.",
        3,
        dict(width=1, height=1, n_grids=7, color_format=1, bit_depth=8, n_ctx_rowcol=2, ups_taps=8),
    ),
    GeneratorCase(
        "1x37-yuv420-10bit",
        "One column: 1x37 YUV 4:2:0 10-bit (1x19 chroma), 5 grids, r = 3 (picture narrower "
        "than the ARM context), T = 6.",
        4,
        dict(
            width=1, height=37, n_grids=5, color_format=3, bit_depth=10, n_ctx_rowcol=3, ups_taps=6
        ),
    ),
    GeneratorCase(
        "41x1-yuv444-10bit",
        "One row: 41x1 YUV 4:4:4 10-bit, 6 grids, r = 2, T = 7.",
        5,
        dict(
            width=41, height=1, n_grids=6, color_format=2, bit_depth=10, n_ctx_rowcol=2, ups_taps=7
        ),
    ),
    GeneratorCase(
        "2x9-grey-12bit-narrow",
        "2x9 grey 12-bit with r = 3: the picture is narrower than the ARM context, 2 grids, T = 2.",
        6,
        dict(
            width=2, height=9, n_grids=2, color_format=0, bit_depth=12, n_ctx_rowcol=3, ups_taps=2
        ),
    ),
    GeneratorCase(
        "33x17-yuv420-8bit",
        "Odd width and height in YUV 4:2:0 8-bit (17x9 chroma, edge rows and columns of the "
        "2x2 reduction), 4 grids, r = 2, T = 3.",
        7,
        dict(
            width=33, height=17, n_grids=4, color_format=3, bit_depth=8, n_ctx_rowcol=2, ups_taps=3
        ),
    ),
    GeneratorCase(
        "23x19-rgb-10bit-r1",
        "RGB 10-bit 23x19, 3 grids, r = 1, T = 2, an ARM whose output layer is relu, "
        "7 synthesis layers.",
        8,
        dict(
            width=23,
            height=19,
            n_grids=3,
            color_format=1,
            bit_depth=10,
            n_ctx_rowcol=1,
            ups_taps=2,
            arm="6-1-linear-none,2-1-linear-relu",
            syn=(
                "8-1-linear-relu,8-3-residual-relu,8-1-linear-leakyrelu,4-3-linear-relu,"
                "4-1-residual-none,4-5-linear-relu,3-1-linear-none"
            ),
        ),
    ),
    GeneratorCase(
        "19x14-yuv444-8bit-r3",
        "YUV 4:4:4 8-bit 19x14, 4 grids, r = 3, T = 5, 4 ARM and 5 synthesis layers.",
        9,
        dict(
            width=19,
            height=14,
            n_grids=4,
            color_format=2,
            bit_depth=8,
            n_ctx_rowcol=3,
            ups_taps=5,
            arm="24-1-linear-relu,16-1-linear-relu,8-1-linear-relu,2-1-linear-none",
            syn=(
                "12-1-linear-relu,12-1-residual-relu,6-3-linear-relu,3-3-linear-none,"
                "3-1-residual-none"
            ),
        ),
    ),
    GeneratorCase(
        "67x45-rgb-7grids",
        "67x45 RGB 8-bit with all 7 grids (the smallest grid 2x1), r = 2, T = 4, a "
        "Cool-chic-like architecture (ARM 16-16-2, synthesis 16-1, 3-1, two 3x3 residual).",
        10,
        dict(
            width=67,
            height=45,
            n_grids=7,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=2,
            ups_taps=4,
            arm=BENCH_ARM,
            syn=OP1000_SYN,
        ),
    ),
    GeneratorCase(
        "synthesis-all-kernels-types",
        "Synthesis with every kernel size (7, 5, 3, 1) and every layer type and activation "
        "(linear / residual x none / relu / leakyrelu); RGB 14-bit 23x11, 3 grids.",
        11,
        dict(
            width=23,
            height=11,
            n_grids=3,
            color_format=1,
            bit_depth=14,
            syn=(
                "6-7-linear-relu,6-5-residual-leakyrelu,4-3-linear-none,4-1-residual-relu,"
                "3-3-linear-leakyrelu,3-7-residual-none"
            ),
        ),
    ),
    GeneratorCase(
        "arm-all-types",
        "ARM with 5 layers of every type and activation (residual leakyrelu / none / relu, "
        "linear relu, a leakyrelu output layer); grey 15-bit 17x12, r = 2.",
        12,
        dict(
            width=17,
            height=12,
            n_grids=2,
            color_format=0,
            bit_depth=15,
            n_ctx_rowcol=2,
            arm=(
                "12-1-residual-leakyrelu,8-1-linear-relu,8-1-residual-none,"
                "8-1-residual-relu,2-1-linear-leakyrelu"
            ),
        ),
    ),
    GeneratorCase(
        "largest-architecture",
        "Largest architecture: ARM of 5 layers, width 64, 8192 MAC per latent with r = 3; "
        "synthesis of 8 layers, width 64, kernels up to 7, 16384 MAC per pixel; 7 grids, "
        "T = 8; RGB 16-bit 13x11 (last layer scaled so that the samples show the latents).",
        13,
        dict(
            width=13,
            height=11,
            n_grids=7,
            color_format=1,
            bit_depth=16,
            n_ctx_rowcol=3,
            ups_taps=8,
            arm=LARGEST_ARM,
            syn=LARGEST_SYN,
        ),
        edits=("_visible_output",),
    ),
    GeneratorCase(
        "zero-and-constant-grids",
        "All-zero grids 0 and 3 and a constant grid 2 (no substreams) among 5 grids; "
        "RGB 12-bit 16x11.",
        14,
        dict(width=16, height=11, n_grids=5, color_format=1, bit_depth=12),
        edits=("_zero_grids_0_and_3",),
    ),
    GeneratorCase(
        "all-grids-constant",
        "Every grid constant (at 0, -32768 and 32767): no substream at all, upsampling of "
        "extreme constants; grey 13-bit 9x6.",
        15,
        dict(width=9, height=6, n_grids=3, color_format=0, bit_depth=13),
        edits=("_constant_grids_zero_and_extremes",),
    ),
    GeneratorCase(
        "coded-grid-without-substream",
        "Grid 1 declares latent_min -3, latent_max 4 and a 0-byte substream: the rANS state "
        "stays 0 and every latent decodes to latent_min (spec 5.5); grey 8-bit 10x8.",
        16,
        dict(width=10, height=8, n_grids=2, color_format=0, bit_depth=8),
        edits=("_grid1_constant_latent_min", "_visible_output"),
        stream_edit="_declare_grid1_alphabet",
    ),
    GeneratorCase(
        "full-int16-alphabet",
        "Latents over the whole int16 range: grid 0 has alphabet 65536 (one latent at "
        "-32768, one at 32767, the others within +-60 so that the samples show each of "
        "them); YUV 4:4:4 8-bit 10x7, 2 grids.",
        17,
        dict(
            width=10,
            height=7,
            n_grids=2,
            color_format=2,
            bit_depth=8,
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        edits=("_full_int16_alphabet", "_visible_output"),
    ),
    GeneratorCase(
        "full-range-weights",
        "Every weight, bias and tap uniform over the whole int16 range (int32 wrap-around "
        "in every module), synthesis shift 16 and a last 1x1 layer that brings the wrapped "
        "values near the sample range; RGB 8-bit 13x9.",
        18,
        dict(width=13, height=9, color_format=1, bit_depth=8, weight_range=32767),
        edits=("_readable_synthesis",),
    ),
    GeneratorCase(
        "extreme-r1-grey",
        "int16-extreme weights and latents (mostly -32768 / 32767), shifts anywhere in range; "
        "grey 8-bit 7x6, r = 1.",
        19,
        dict(width=7, height=6, n_ctx_rowcol=1, color_format=0, bit_depth=8, extreme=True),
    ),
    GeneratorCase(
        "extreme-r2-yuv420-11bit",
        "int16-extreme weights and latents; YUV 4:2:0 11-bit 6x5, r = 2.",
        20,
        dict(width=6, height=5, n_ctx_rowcol=2, color_format=3, bit_depth=11, extreme=True),
    ),
    GeneratorCase(
        "extreme-r3-rgb-16bit",
        "int16-extreme weights and latents, synthesis shift 16 and a last 1x1 layer that "
        "brings the wrapped values near the sample range; RGB 16-bit 5x7, r = 3.",
        21,
        dict(width=5, height=7, n_ctx_rowcol=3, color_format=1, bit_depth=16, extreme=True),
        edits=("_readable_synthesis",),
    ),
    GeneratorCase(
        "extreme-max-shifts",
        "int16-extreme weights and latents with every shift at its maximum (arm 16/24, "
        "ups 16, synthesis 16/28); YUV 4:2:0 8-bit 5x3.",
        22,
        dict(
            width=5,
            height=3,
            n_grids=2,
            color_format=3,
            bit_depth=8,
            extreme=True,
            shifts=dict(
                arm_w_shift=16, arm_b_shift=24, ups_shift=16, syn_w_shift=16, syn_b_shift=28
            ),
        ),
    ),
    GeneratorCase(
        "extreme-zero-shifts",
        "int16-extreme weights and latents with every shift 0 (round_shift by 0); grey 10-bit 5x3.",
        23,
        dict(
            width=5,
            height=3,
            n_grids=2,
            color_format=0,
            bit_depth=10,
            extreme=True,
            shifts=dict(arm_w_shift=0, arm_b_shift=0, ups_shift=0, syn_w_shift=0, syn_b_shift=0),
        ),
    ),
    GeneratorCase(
        "laplace-flat-fallback",
        "Designed ARM: mu far above every latent and log_scale clipped low, so every "
        "boundary's tail mass is 0, D = 0 and the cdf is the uniform fallback (spec 5.4); "
        "grey 8-bit 12x8.",
        24,
        dict(
            width=12,
            height=8,
            n_grids=2,
            color_format=0,
            bit_depth=8,
            arm="2-1-linear-none",
            latent_range=3,
        ),
        edits=("_flat_laplace",),
    ),
    GeneratorCase(
        "laplace-mu-and-scale-clipped",
        "Designed ARM: mu beyond +2^23 and log_scale beyond 2048, both clipped (spec 5.4): "
        "a nearly flat distribution over a wide alphabet; RGB 8-bit 11x9.",
        25,
        dict(
            width=11,
            height=9,
            n_grids=2,
            color_format=1,
            bit_depth=8,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=200,
            shifts=dict(syn_w_shift=14),
        ),
        edits=("_clipped_laplace", "_visible_output"),
    ),
    GeneratorCase(
        "laplace-negative-mu",
        "Designed ARM: mu driven by the contexts below -2^23 (clipped) away from the top-left "
        "corner, so the tail masses vanish on the upper side of mu; grey 16-bit 12x10, r = 1.",
        26,
        dict(
            width=12,
            height=10,
            n_grids=2,
            color_format=0,
            bit_depth=16,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            latent_range=40,
        ),
        edits=("_negative_mu_laplace",),
    ),
    GeneratorCase(
        "yuv420-chroma-sum-wraps",
        "Designed synthesis: chroma values near +-2^31 whose 2x2 sums wrap in the 4:2:0 "
        "reduction (spec 8.1), latents at -32768 / 0 / 32767; YUV 4:2:0 10-bit 9x7.",
        27,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=3,
            bit_depth=10,
            arm="2-1-linear-none",
            syn="3-1-linear-none",
            latent_range=2,
        ),
        edits=("_chroma_sum_wraps",),
    ),
]


# ---------------------------------------------------------------------------
# Encoder-made streams (Kodak crops)

_TRAIN = dict(preset="instant", n_itr=800, device="cpu", seed=0)

ENCODER_CASES: list[EncoderCase] = [
    EncoderCase(
        "kodim23-64x48-rgb8",
        "Encoder-made: a 64x48 crop of kodim23 (parrot feathers), RGB 8-bit, operating "
        "point 1000 (7 grids, r = 2, T = 4).",
        "kodim23",
        (368, 272, 48, 64),
        "rgb",
        dict(lmbda=1e-3, op="1000", **_TRAIN),
    ),
    EncoderCase(
        "kodim08-96x64-rgb8",
        "Encoder-made: a 96x64 crop of kodim08 (house front), RGB 8-bit, operating point "
        "2000 (r = 3).",
        "kodim08",
        (288, 336, 64, 96),
        "rgb",
        dict(lmbda=2e-3, op="2000", **_TRAIN),
    ),
    EncoderCase(
        "kodim03-67x45-rgb8-7grids",
        "Encoder-made: a 67x45 crop of kodim03 (odd size, 7 grids down to 2x1), RGB 8-bit, "
        "operating point 500.",
        "kodim03",
        (240, 48, 45, 67),
        "rgb",
        dict(lmbda=1e-3, op="500", **_TRAIN),
    ),
    EncoderCase(
        "kodim19-64x48-yuv420-10bit",
        "Encoder-made: a 64x48 crop of kodim19 (lighthouse) converted to YUV 4:2:0 10-bit "
        "(BT.709, limited range), operating point 1000.",
        "kodim19",
        (128, 224, 48, 64),
        "yuv420-10",
        dict(lmbda=1e-3, op="1000", **{**_TRAIN, "n_itr": 1500}),
    ),
    EncoderCase(
        "kodim15-48x40-grey8",
        "Encoder-made: a 48x40 crop of kodim15 converted to grey (BT.709 luma) 8-bit, "
        "operating point 3000.",
        "kodim15",
        (112, 352, 40, 48),
        "grey",
        dict(lmbda=1e-3, op="3000", **_TRAIN),
    ),
    EncoderCase(
        "kodim20-40x32-yuv444-8bit",
        "Encoder-made: a 40x32 crop of kodim20 (aeroplane) converted to YUV 4:4:4 8-bit "
        "(BT.709, limited range), operating point 1000.",
        "kodim20",
        (352, 64, 32, 40),
        "yuv444-8",
        dict(lmbda=2e-3, op="1000", **_TRAIN),
    ),
]


# ---------------------------------------------------------------------------
# Invalid streams (spec section 9)

INVALID_BASE = "33x17-yuv420-8bit"
INVALID_CASES: list[InvalidCase] = [
    InvalidCase(
        "reject-bad-magic",
        "Magic CCRG instead of CCRF.",
        INVALID_BASE,
        "_bad_magic",
        1,
        "not a coolchic-ref stream",
    ),
    InvalidCase(
        "reject-version-3",
        "Version 3 (this decoder reads 1 and 2).",
        INVALID_BASE,
        "_version_3",
        2,
        "unsupported version",
    ),
    InvalidCase(
        "reject-truncated-header",
        "The stream ends inside the header (20 bytes).",
        INVALID_BASE,
        "_cut_in_header",
        3,
        "truncated header",
    ),
    InvalidCase(
        "reject-eight-grids",
        "n_grids = 8, above the maximum of 7.",
        INVALID_BASE,
        "_eight_grids",
        4,
        "n_grids",
    ),
    InvalidCase(
        "reject-synthesis-mac",
        "The largest architecture with one synthesis kernel 3 -> 5: over 16384 MAC per pixel.",
        "largest-architecture",
        "_syn_mac_over_limit",
        4,
        "synthesis needs",
    ),
    InvalidCase(
        "reject-arm-mac",
        "The largest architecture with one ARM layer 30 -> 31 outputs: over 8192 MAC per latent.",
        "largest-architecture",
        "_arm_mac_over_limit",
        4,
        "ARM needs",
    ),
    InvalidCase(
        "reject-bias-shift",
        "arm_b_shift = 8 + arm_w_shift + 1 (spec 3.4).",
        INVALID_BASE,
        "_bias_shift_too_large",
        4,
        "arm_b_shift",
    ),
    InvalidCase(
        "reject-truncated-stream",
        "The last byte of the last substream missing.",
        INVALID_BASE,
        "_drop_last_byte",
        5,
        "truncated stream",
    ),
    InvalidCase(
        "reject-trailing-data",
        "One byte after the last substream.",
        INVALID_BASE,
        "_trailing_byte",
        5,
        "trailing data",
    ),
    InvalidCase(
        "reject-weight-code-too-long",
        "A weight code with 18 leading zeros (order 0).",
        INVALID_BASE,
        "_weight_code_too_long",
        6,
        "weight code too long",
    ),
    InvalidCase(
        "reject-weight-out-of-range",
        "A weight coded as 32768.",
        INVALID_BASE,
        "_weight_out_of_range",
        6,
        "weight out of range",
    ),
    InvalidCase(
        "reject-weights-truncated-zeros",
        "The weights section ends inside a code's run of zeros.",
        INVALID_BASE,
        "_weights_end_in_zero_run",
        6,
        "weights section truncated",
    ),
    InvalidCase(
        "reject-weights-truncated-code",
        "The weights section ends inside a code's value bits.",
        INVALID_BASE,
        "_weights_end_in_code",
        6,
        "weights section truncated",
    ),
    InvalidCase(
        "reject-weights-size-mismatch",
        "Four bytes more in the weights section than its parameters use.",
        INVALID_BASE,
        "_weights_section_longer",
        6,
        "weights section size mismatch",
    ),
    InvalidCase(
        "reject-substream-start",
        "The first word of a substream is 0.",
        INVALID_BASE,
        "_first_word_zero",
        7,
        "invalid substream start",
    ),
    InvalidCase(
        "reject-substream-size",
        "A word more in a substream than its latents use.",
        INVALID_BASE,
        "_extra_substream_word",
        7,
        "substream size mismatch",
    ),
]
