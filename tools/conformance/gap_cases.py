"""Conformance streams that close the gaps the mutation analysis found (tools/mutation.py).

Generator-made streams numbered from 050 on, and invalid streams appended after the
existing ones (217 on). Each generator case is an integer codec drawn by `random_codec`
and edited so that one rule of the spec decides the samples; `exposes` names the
misreadings that the case must make visible, and `build()` checks each of them on the
ENCODER's integer model (coolchic_ref.encoder.integer_model): the samples (or, for the
ARM, mu and log_scale) computed with the misreading must differ from the spec's. The
reference decoder is not used here; `python -m tools.make_conformance` then checks that it
reproduces every hash.

The cases have the interface of make_conformance's GeneratorCase and InvalidCase (slug,
description, build(), recipe(); base, mutate, rule, error) plus `number`, the stream
number they take in the suite.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import (
    INT16_MAX,
    INT16_MIN,
    IntegerCodec,
    context_size,
    egk_code,
    write_stream,
)
from coolchic_ref.encoder.format import ColorFormat
from coolchic_ref.encoder.random_codec import random_codec

FIRST_GENERATOR_NUMBER = 50
TWO31 = 1 << 31


# ---------------------------------------------------------------------------
# Misreadings simulated on the encoder's integer model


def _round_shift_wide(x: np.ndarray, n: int) -> np.ndarray:
    """round_shift misread: the addition of 2^(n-1) in a wider type, wrap after the shift."""
    half = (1 << (n - 1)) if n > 0 else 0
    return im.wrap32((im.wrap32(x) + half) >> n)


@contextmanager
def _round_shift_replaced(function) -> Iterator[None]:
    """The integer model's round_shift replaced by `function` (for a misreading)."""
    original = im.round_shift
    im.round_shift = function
    try:
        yield
    finally:
        im.round_shift = original


def _planes_with(
    codec: IntegerCodec, ups=None, syn=None, chroma: Callable | None = None
) -> list[np.ndarray]:
    """The samples of `codec` with round_shift replaced in the upsampling (`ups`) or the
    synthesis (`syn`), or the 4:2:0 reduction replaced by `chroma`."""
    if ups is not None:
        with _round_shift_replaced(ups):
            dense = im.upsample_dense(codec)
    else:
        dense = im.upsample_dense(codec)
    if syn is not None:
        with _round_shift_replaced(syn):
            out = im.synthesis_output(codec, dense)
    else:
        out = im.synthesis_output(codec, dense)
    planes = []
    for channel, c in enumerate(out):
        if codec.color_format == ColorFormat.YUV420 and channel > 0:
            c = (chroma or im.subsample_chroma)(c)
        planes.append(im.to_samples(c, codec.bit_depth))
    return planes


def _chroma_no_wrap(c: np.ndarray) -> np.ndarray:
    c = np.pad(c, ((0, c.shape[0] % 2), (0, c.shape[1] % 2)), mode="edge")
    return (c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2] + 2) >> 2


def _chroma_no_plus_2(c: np.ndarray) -> np.ndarray:
    c = np.pad(c, ((0, c.shape[0] % 2), (0, c.shape[1] % 2)), mode="edge")
    return im.wrap32(c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2]) >> 2


def _chroma_clip_first(c: np.ndarray) -> np.ndarray:
    return im.subsample_chroma(np.clip(c, 0, 1 << im.SYN_FRAC))


def _arm_differs(codec: IntegerCodec, function) -> bool:
    """Whether mu or log_scale of some coded latent changes when the ARM's round_shift is
    `function` (a decoder with other (mu, log_scale) decodes other symbols)."""
    for level, latent in enumerate(codec.latents):
        if np.min(latent) == np.max(latent):
            continue
        spec = im.arm_mu_log_scale(codec, level)
        with _round_shift_replaced(function):
            misread = im.arm_mu_log_scale(codec, level)
        if any(not np.array_equal(a, b) for a, b in zip(spec, misread, strict=True)):
            return True
    return False


def _differs(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _bias_term_saturated(bias: np.ndarray, frac: int, w_shift: int, b_shift: int) -> np.ndarray:
    """The bias term of spec 2.3 misread: saturated to int32 instead of wrapped."""
    value = np.asarray(bias, dtype=np.int64) << (frac + w_shift - b_shift)
    return np.clip(value, -TWO31, TWO31 - 1)


@contextmanager
def _replaced(name: str, value) -> Iterator[None]:
    """Attribute `name` of the integer model replaced by `value` (for a misreading)."""
    original = getattr(im, name)
    setattr(im, name, value)
    try:
        yield
    finally:
        setattr(im, name, original)


def _coded_cdf_tables(codec: IntegerCodec, cdf=None) -> list[np.ndarray]:
    """The cdf table (spec 5.4) of every coded latent, grid after grid; `cdf(mu, log_scale,
    latent_min, K)` replaces the integer model's table function."""
    tables = []
    for level, latent in enumerate(codec.latents):
        low, high = int(np.min(latent)), int(np.max(latent))
        if low == high:
            continue
        mu, log_scale = im.arm_mu_log_scale(codec, level)
        tables.append((cdf or im.laplace_cdf_table)(mu, log_scale, low, high - low + 1))
    return tables


def _cdf_without_fallback(mu, log_scale, latent_min, alphabet) -> np.ndarray:
    """Spec 5.4 misread: no uniform fallback, the division by D guarded by max(D, 1)."""
    m, inv = im._clipped_params(np.reshape(mu, (-1, 1)), np.reshape(log_scale, (-1, 1)))
    i = np.arange(alphabet + 1, dtype=np.int64)
    g = im._laplace_g(((latent_min + i) << 8) - 128, m, inv)
    g = g - g[:, :1]
    return i + g * ((1 << im.PRECISION) - alphabet) // np.maximum(g[:, -1:], 1)


def _clipped_params_low_1535(mu, log_scale) -> tuple[np.ndarray, np.ndarray]:
    """Spec 5.4 misread: log_scale clipped to -1535..2048 (table index unchanged)."""
    _, inv_scale = im.tables()
    s = np.clip(np.asarray(log_scale, dtype=np.int64), im.LOG_SCALE_MIN + 1, im.LOG_SCALE_MAX)
    m = np.clip(np.asarray(mu, dtype=np.int64), -im.MU_LIMIT, im.MU_LIMIT)
    return m, inv_scale[s - im.LOG_SCALE_MIN]


def _laplace_differs(codec: IntegerCodec, name: str, value) -> bool:
    spec = _coded_cdf_tables(codec)
    with _replaced(name, value):
        misread = _coded_cdf_tables(codec)
    return _differs(spec, misread)


# Misreading name -> whether the codec makes it visible (encoder model only).
EXPOSURES: dict[str, Callable[[IntegerCodec], bool]] = {
    "arm-round-shift-wide": lambda codec: _arm_differs(codec, _round_shift_wide),
    "ups-round-shift-wide": lambda codec: _differs(
        im.simulate_decode(codec), _planes_with(codec, ups=_round_shift_wide)
    ),
    "syn-round-shift-wide": lambda codec: _differs(
        im.simulate_decode(codec), _planes_with(codec, syn=_round_shift_wide)
    ),
    "chroma-sum-no-wrap": lambda codec: _differs(
        im.simulate_decode(codec), _planes_with(codec, chroma=_chroma_no_wrap)
    ),
    "chroma-no-plus-2": lambda codec: _differs(
        im.simulate_decode(codec), _planes_with(codec, chroma=_chroma_no_plus_2)
    ),
    "chroma-clip-first": lambda codec: _differs(
        im.simulate_decode(codec), _planes_with(codec, chroma=_chroma_clip_first)
    ),
    "arm-bias-saturate": lambda codec: _arm_bias_differs(codec),
    "syn-bias-saturate": lambda codec: _syn_bias_differs(codec),
    "laplace-log-scale-clip-2047": lambda codec: _laplace_differs(
        codec, "LOG_SCALE_MAX", im.LOG_SCALE_MAX - 1
    ),
    "laplace-log-scale-clip-low": lambda codec: _laplace_differs(
        codec, "_clipped_params", _clipped_params_low_1535
    ),
    "laplace-mu-clip": lambda codec: _laplace_differs(codec, "MU_LIMIT", im.MU_LIMIT - 1),
    "laplace-no-fallback": lambda codec: _differs(
        _coded_cdf_tables(codec), _coded_cdf_tables(codec, _cdf_without_fallback)
    ),
}


def _arm_bias_differs(codec: IntegerCodec) -> bool:
    spec = [im.arm_mu_log_scale(codec, g) for g in range(codec.n_grids)]
    with _replaced("_bias_term", _bias_term_saturated):
        misread = [im.arm_mu_log_scale(codec, g) for g in range(codec.n_grids)]
    return any(_differs(a, b) for a, b in zip(spec, misread, strict=True))


def _syn_bias_differs(codec: IntegerCodec) -> bool:
    spec = im.simulate_decode(codec)
    with _replaced("_bias_term", _bias_term_saturated):
        misread = im.simulate_decode(codec)
    return _differs(spec, misread)


# ---------------------------------------------------------------------------
# Generator cases


@dataclass(frozen=True)
class GapCase:
    """A stream drawn by `random_codec(default_rng(seed), **options)`, then `edit`ed;
    it must make each misreading of `exposes` visible (checked by `build`)."""

    number: int
    slug: str
    description: str
    seed: int
    options: dict
    edit: Callable[[IntegerCodec], None]
    exposes: tuple[str, ...]

    def build_codec(self) -> IntegerCodec:
        codec = random_codec(np.random.default_rng(self.seed), **self.options)
        self.edit(codec)
        return codec

    def build(self) -> tuple[bytes, IntegerCodec]:
        """(stream, the codec whose simulation gives the expected samples)."""
        codec = self.build_codec()
        hidden = [name for name in self.exposes if not EXPOSURES[name](codec)]
        if hidden:
            raise RuntimeError(f"{self.slug}: does not expose {', '.join(hidden)}")
        return write_stream(codec), codec

    def recipe(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        return f"random_codec(default_rng({self.seed}), {options}), then {self.edit.__name__}"


def _arm_overflow_single_layer(codec: IntegerCodec) -> None:
    """One ARM layer, w_shift 16, biases Q8: mu's accumulator is 32767 << 16 plus
    (left neighbour << 8) * 128, so a left neighbour of 1 makes it 2^31 - 2^15, whose
    round_shift addition of 2^15 wraps: mu = -32768 (-128 latents), not +32768.
    log_scale = 1000 (scale e^3.9)."""
    ((w, b),) = codec.arm_weights
    w[:] = 0
    w[0, codec.dim_arm - 1] = 128  # context (0, -1): the left neighbour
    b[:] = (INT16_MAX, 1000)


def _arm_overflow_hidden_layer(codec: IntegerCodec) -> None:
    """Two ARM layers (w_shift 16, biases Q8): hidden unit 0 = relu(round_shift(32767 << 16
    + 128 * (top neighbour << 8))), which wraps to -32768 (then 0) where the top neighbour
    is 1; mu = hidden 0 / 2, log_scale = 900."""
    (w0, b0), (w1, b1) = codec.arm_weights
    top = context_offsets_index(codec.n_ctx_rowcol, -1, 0)
    w0[:] = 0
    w0[0, top] = 128
    b0[:] = 0
    b0[0] = INT16_MAX
    w1[:] = 0
    w1[0, 0] = INT16_MAX
    b1[:] = (0, 900)


def _arm_overflow_relu_output(codec: IntegerCodec) -> None:
    """One ARM layer with a relu output: mu = relu(round_shift(acc, 16)) with acc =
    32767 << 16 + 64 * (sum of the two left neighbours << 8): where they add up to 2 the
    addition of 2^15 wraps and mu = 0 instead of 32768. log_scale = 1200."""
    ((w, b),) = codec.arm_weights
    w[:] = 0
    w[0, context_offsets_index(codec.n_ctx_rowcol, 0, -1)] = 64
    w[0, context_offsets_index(codec.n_ctx_rowcol, 0, -2)] = 64
    b[:] = (INT16_MAX, 1200)


def context_offsets_index(n_ctx_rowcol: int, dy: int, dx: int) -> int:
    """Index of context offset (dy, dx) in spec 5.2 order."""
    return im.context_offsets(n_ctx_rowcol).index((dy, dx))


def _syn_overflow_last_layer(codec: IntegerCodec) -> None:
    """Synthesis 1x1, w_shift 16, biases Q12 (bias term B << 16): output = round_shift(
    32767 << 16 + 8 * (latent << 12), 16); a latent of 1 gives 2^31 - 2^15, whose addition
    of 2^15 wraps (-32768: sample 0, not the largest sample)."""
    ((w, b),) = codec.syn_weights
    w[:] = 8
    b[:] = INT16_MAX


def _syn_overflow_hidden_3x3(codec: IntegerCodec) -> None:
    """Synthesis 4-3-linear-relu, 3-1-linear-none (w_shift 16, biases Q12): hidden channel 0
    = relu(round_shift(32767 << 16 + 8 * (grid-0 latent << 12) at the kernel centre)),
    which wraps to -32768 (then 0) where the latent is 1; the outputs show hidden 0 / 16
    plus the other hidden channels."""
    (w0, b0), (w1, b1) = codec.syn_weights
    w0[0] = 0
    w0[0, 0, 1, 1] = 8
    b0[0] = INT16_MAX
    w1[:, 0, 0, 0] = 4096
    b1[:] = 2048


def _syn_overflow_5x5_leaky(codec: IntegerCodec) -> None:
    """Synthesis 2-5-linear-leakyrelu, 3-1-linear-none (w_shift 16, biases Q12): hidden
    channel 0 = leakyrelu(round_shift(32767 << 16 + 8 * latent << 12 at the centre)); the
    wrap of the round_shift addition turns +32768 into -32768 (then -2048)."""
    (w0, b0), (w1, b1) = codec.syn_weights
    w0[0] = 0
    w0[0, 0, 2, 2] = 8
    b0[0] = INT16_MAX
    w1[:, 0, 0, 0] = (4096, -4096, 2048)
    b1[:] = 2048


@functools.cache
def overflowing_tap(shift: int) -> tuple[int, int]:
    """(tap, latent): the largest odd tap in int16 and a latent L in int16 such that
    wrap32(tap * (L << 12)) lies in [2^31 - 2^(shift-1), 2^31): the round_shift addition
    of 2^(shift-1) then wraps (spec 2.2)."""
    half = 1 << (shift - 1)
    for tap in range(INT16_MAX, 0, -2):
        for magnitude in range(1, INT16_MAX + 1):
            for latent in (magnitude, -magnitude):
                value = int(im.wrap32(np.int64(tap) * (latent << im.SYN_FRAC)))
                if TWO31 - half <= value:
                    return tap, latent
    raise ValueError(f"no tap and latent overflow at shift {shift}")


def _ups_overflow(codec: IntegerCodec) -> None:
    """Upsampling with one non-zero tap v[0] at ups_shift 16 (T taps, the others 0): a third
    of the latents of grid 1 and deeper take a value L whose vertical-pass accumulator
    v[0] * (L << 12) wraps into [2^31 - 2^15, 2^31), so the round_shift addition wraps
    (-32768 instead of +32768); the last synthesis layer weights every upsampled channel
    1/16 so that the samples show it."""
    tap, special = overflowing_tap(codec.ups_shift)
    codec.ups_taps = np.array([tap] + [0] * (len(codec.ups_taps) - 1), dtype=np.int64)
    rng = np.random.default_rng(codec.width * 100 + codec.height)
    for level in range(1, codec.n_grids):
        latent = codec.latents[level]
        pick = rng.integers(0, 3, size=latent.shape)
        codec.latents[level] = np.where(pick == 0, special, latent)
    w, b = codec.syn_weights[-1]
    w[:] = 0
    w[:, 1:, 0, 0] = 256  # 1/16 of each upsampled channel (Q12)
    w[:, 0, 0, 0] = 512
    b[:] = 2048


CHROMA_TAPS = (11001, 3503)  # at ups_shift 15: upsampled values of every residue mod 4


def _chroma_420_rules(codec: IntegerCodec) -> None:
    """Two grids; synthesis one 1x1 layer with w_shift 0 and b_shift 12 (dense Q12 in,
    Q12 out): Y = x1 + 2048, U = 8 x0 + x1 + 2048, V = 2048 - x1, where x0 = L0 << 12 is
    grid 0 and x1 grid 1 upsampled with taps (11001, 3503) at ups_shift 15 (values about
    800 L1 of every residue mod 4, that differ within 2x2 blocks, L1 in -4..4). Grid 0 is
    constant on most 2x2 blocks, mostly 32767 (U about 2^30: the block sum passes 2^31
    and wraps, spec 8.1), else -32768 or -1..1. So the + 2 of the reduction changes
    results, and Y, U, V straddle 0..4096 within blocks (clipping comes after the
    reduction)."""
    rng = np.random.default_rng(codec.width * 1000 + codec.height)
    codec.ups_taps = np.array(CHROMA_TAPS, dtype=np.int64)
    rows, cols = codec.latents[0].shape
    blocks = (-(-rows // 2), -(-cols // 2))
    pick = rng.integers(0, 10, size=blocks)
    small = rng.integers(-1, 2, size=blocks)
    value = np.where(pick < 4, INT16_MAX, np.where(pick < 5, INT16_MIN, small))
    grid0 = np.repeat(np.repeat(value, 2, axis=0), 2, axis=1)[:rows, :cols]
    noise = rng.integers(0, 8, size=(rows, cols)) == 0  # a few blocks not constant
    codec.latents[0] = np.where(noise, rng.integers(-2, 3, size=(rows, cols)), grid0).astype(
        np.int64
    )
    codec.latents[1] = rng.integers(-4, 5, size=codec.latents[1].shape).astype(np.int64)
    w = np.array([[0, 1], [8, 1], [0, -1]]).reshape(3, 2, 1, 1)
    codec.syn_weights = [(w, np.full(3, 2048))]


def _arm_bias_wraps(codec: IntegerCodec) -> None:
    """ARM biases 300 and -200 at arm_w_shift 16, arm_b_shift 0: the bias terms
    B << 24 wrap int32 (spec 2.3) to 738197504 and 939524096, so mu is about 44 latents
    and log_scale 14336 (clipped to 2048); saturated they would give +-2^31."""
    ((w, b),) = codec.arm_weights
    w[:] = np.clip(w // 64, INT16_MIN, INT16_MAX)
    b[:] = (300, -200)


def _syn_bias_wraps(codec: IntegerCodec) -> None:
    """Last synthesis layer (syn_w_shift 16, syn_b_shift 1): biases 33 and -31, whose bias
    terms B << 27 wrap int32 to exactly +2^27 (mid-grey 2048 after the shift; saturated:
    +-2^31, the largest sample or 0); weights 4800 on grid 0 (300 / 4096 per latent)."""
    w, b = codec.syn_weights[-1]
    w[:] = 0
    w[:, 0, w.shape[2] // 2, w.shape[3] // 2] = 4800
    b[:] = [33 if c % 2 == 0 else -31 for c in range(b.size)]


def _far_mu_scale(mu_sign: int, log_scale: int) -> Callable[[IntegerCodec], None]:
    """Two ARM layers (w_shift 0, biases Q8): hidden = (32767, log_scale), then
    mu = mu_sign * 32767 * 32767 (beyond 2^23 in magnitude: clipped) and log_scale
    unchanged, whatever the contexts."""

    def edit(codec: IntegerCodec) -> None:
        (w0, b0), (w1, b1) = codec.arm_weights
        w0[:] = 0
        b0[:] = (INT16_MAX, log_scale)
        w1[:] = ((mu_sign * INT16_MAX, 0), (0, 1))
        b1[:] = 0
        codec.arm_w_shift, codec.arm_b_shift = 0, im.ARM_FRAC

    edit.__name__ = f"_mu_{'high' if mu_sign > 0 else 'low'}_log_scale_{log_scale}"
    return edit


def _mu_clip_visible(mu_sign: int) -> Callable[[IntegerCodec], None]:
    """As `_far_mu_scale(mu_sign, s)`, with s the largest log_scale <= 2048 for which the
    cdf of the stream's alphabet with mu clipped to +-2^23 differs from the one with mu
    clipped to +-(2^23 - 1): a change of 1/256 in a mu 32768 latents away must show."""

    def edit(codec: IntegerCodec) -> None:
        for log_scale in range(im.LOG_SCALE_MAX, 0, -1):
            _far_mu_scale(mu_sign, log_scale)(codec)
            if _laplace_differs(codec, "MU_LIMIT", im.MU_LIMIT - 1):
                return
        raise ValueError("no log_scale makes the mu clip visible")

    edit.__name__ = f"_mu_{'high' if mu_sign > 0 else 'low'}_clip_visible"
    return edit


def _mu_near_boundary(offset: int) -> Callable[[IntegerCodec], None]:
    """One ARM layer of biases (w_shift 0, b_shift 8): mu = 128 + offset (Q8: `offset`
    / 256 above the boundary between latents 0 and 1), log_scale = -4000 (clipped to
    -1536, the narrowest Laplace): only that boundary has a tail mass, and it depends on
    the INV_SCALE entry of the clipped log_scale."""

    def edit(codec: IntegerCodec) -> None:
        ((w, b),) = codec.arm_weights
        w[:] = 0
        b[:] = (128 + offset, -4000)
        codec.arm_w_shift, codec.arm_b_shift = 0, im.ARM_FRAC

    edit.__name__ = f"_mu_near_boundary_{offset}"
    return edit


def _flat_far_mu(codec: IntegerCodec) -> None:
    """One ARM layer of biases: mu = -(32767 / 256) latents below every latent and
    log_scale clipped to -1536: every tail mass is 0, D = 0 (spec 5.4 fallback)."""
    ((w, b),) = codec.arm_weights
    w[:] = 0
    b[:] = (INT16_MIN + 1, INT16_MIN)
    codec.arm_w_shift, codec.arm_b_shift = 0, im.ARM_FRAC


def _dead_hidden_units(codec: IntegerCodec) -> None:
    """ARM hidden units 0 and 1 always 0: zero weights and biases of -5 before a relu (so
    a residual last layer would add 0 to mu and log_scale)."""
    (w0, b0), _ = codec.arm_weights
    w0[:2] = 0
    b0[:2] = -5


def _visible_last_layer(codec: IntegerCodec) -> None:
    """The last synthesis layer redrawn for the scale of its input (about 800 / 4096 of
    output spread around mid-grey), so that the samples show the latents."""
    rng = np.random.default_rng(codec.width * 7 + codec.height)
    x = im.upsample_dense(codec)
    for layer, (w, b) in zip(codec.syn_layers[:-1], codec.syn_weights[:-1], strict=True):
        x = im.conv_layer(x, layer, w, b, codec.syn_w_shift, codec.syn_b_shift)
    w, b = codec.syn_weights[-1]
    scale = max(1.0, float(np.percentile(np.abs(x), 90)))
    std = 800 / (scale * np.sqrt(w[0].size)) * (1 << codec.syn_w_shift)
    w[:] = np.clip(np.rint(rng.normal(0, std, size=w.shape)), INT16_MIN, INT16_MAX)
    b[:] = min(INT16_MAX, (1 << codec.syn_b_shift) >> 1)


_ARM_SHIFTS = dict(arm_w_shift=16, arm_b_shift=8)
_SYN_SHIFTS = dict(syn_w_shift=16, syn_b_shift=12)
_CHROMA = dict(
    n_grids=2,
    color_format=3,
    ups_taps=2,
    syn="3-1-linear-none",
    latent_range=3,
    shifts=dict(ups_shift=15, syn_w_shift=0, syn_b_shift=12),
)


def _chroma_case(number: int, width: int, height: int, bit_depth: int, exposes) -> GapCase:
    return GapCase(
        number,
        f"yuv420-rules-{width}x{height}-{bit_depth}bit",
        f"4:2:0 reduction rules (spec 8.1) on a {width}x{height} {bit_depth}-bit picture: "
        "chroma 2x2 sums that wrap int32, sums whose + 2 changes the result, and blocks "
        "straddling 0..4096 (clipping comes after the reduction). Exposes on the encoder's "
        f"model: {', '.join(exposes)}.",
        number,
        dict(width=width, height=height, bit_depth=bit_depth, **_CHROMA),
        _chroma_420_rules,
        exposes,
    )


_ALL_CHROMA = ("chroma-sum-no-wrap", "chroma-no-plus-2", "chroma-clip-first")

GAP_GENERATOR_CASES: list[GapCase] = [
    GapCase(
        50,
        "arm-round-shift-overflow-r1",
        "ARM round_shift overflow (spec 2.2): one ARM layer whose mu accumulator reaches "
        "2^31 - 2^15 where the left neighbour is 1, so adding 2^15 wraps; grey 8-bit 12x9, "
        "r = 1.",
        50,
        dict(
            width=12,
            height=9,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            latent_range=2,
            shifts=_ARM_SHIFTS,
        ),
        _arm_overflow_single_layer,
        ("arm-round-shift-wide",),
    ),
    GapCase(
        51,
        "arm-round-shift-overflow-hidden",
        "ARM round_shift overflow in a hidden relu layer (where the top neighbour is 1); "
        "YUV 4:4:4 8-bit 16x10, 2 grids, r = 2.",
        51,
        dict(
            width=16,
            height=10,
            n_grids=2,
            color_format=2,
            bit_depth=8,
            n_ctx_rowcol=2,
            arm="8-1-linear-relu,2-1-linear-none",
            latent_range=2,
            shifts=_ARM_SHIFTS,
        ),
        _arm_overflow_hidden_layer,
        ("arm-round-shift-wide",),
    ),
    GapCase(
        52,
        "arm-round-shift-overflow-relu-out",
        "ARM round_shift overflow in a relu output layer (where the two left neighbours add "
        "up to 2); RGB 10-bit 11x13, 3 grids, r = 3.",
        52,
        dict(
            width=11,
            height=13,
            n_grids=3,
            color_format=1,
            bit_depth=10,
            n_ctx_rowcol=3,
            arm="2-1-linear-relu",
            latent_range=2,
            shifts=_ARM_SHIFTS,
        ),
        _arm_overflow_relu_output,
        ("arm-round-shift-wide",),
    ),
    GapCase(
        53,
        "syn-round-shift-overflow-1x1",
        "Synthesis round_shift overflow (spec 2.2) in a 1x1 output layer: accumulators of "
        "2^31 - 2^15 where the latent is 1; grey 8-bit 9x7, 1 grid.",
        53,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            syn="1-1-linear-none",
            latent_range=2,
            shifts=_SYN_SHIFTS,
        ),
        _syn_overflow_last_layer,
        ("syn-round-shift-wide",),
    ),
    GapCase(
        54,
        "syn-round-shift-overflow-3x3",
        "Synthesis round_shift overflow in a hidden 3x3 relu layer; RGB 12-bit 10x8, 2 grids.",
        54,
        dict(
            width=10,
            height=8,
            n_grids=2,
            color_format=1,
            bit_depth=12,
            syn="4-3-linear-relu,3-1-linear-none",
            latent_range=2,
            shifts=_SYN_SHIFTS,
        ),
        _syn_overflow_hidden_3x3,
        ("syn-round-shift-wide",),
    ),
    GapCase(
        55,
        "syn-round-shift-overflow-5x5",
        "Synthesis round_shift overflow in a hidden 5x5 leakyrelu layer; YUV 4:4:4 16-bit "
        "7x5, 1 grid.",
        55,
        dict(
            width=7,
            height=5,
            n_grids=1,
            color_format=2,
            bit_depth=16,
            syn="2-5-linear-leakyrelu,3-1-linear-none",
            latent_range=2,
            shifts=_SYN_SHIFTS,
        ),
        _syn_overflow_5x5_leaky,
        ("syn-round-shift-wide",),
    ),
    GapCase(
        56,
        "ups-round-shift-overflow-2grids",
        "Upsampling round_shift overflow (spec 2.2, 6): vertical-pass accumulators that wrap "
        "into [2^31 - 2^15, 2^31) at ups_shift 16, so adding 2^15 wraps; grey 8-bit 10x9, "
        "2 grids, T = 1.",
        56,
        dict(
            width=10,
            height=9,
            n_grids=2,
            color_format=0,
            bit_depth=8,
            ups_taps=1,
            syn="1-1-linear-none",
            latent_range=2,
            shifts=dict(ups_shift=16, syn_w_shift=12, syn_b_shift=12),
        ),
        _ups_overflow,
        ("ups-round-shift-wide",),
    ),
    GapCase(
        57,
        "ups-round-shift-overflow-4grids",
        "Upsampling round_shift overflow at every level of 4 grids; RGB 10-bit 13x11, T = 3 "
        "(taps 1 and 2 zero).",
        57,
        dict(
            width=13,
            height=11,
            n_grids=4,
            color_format=1,
            bit_depth=10,
            ups_taps=3,
            syn="3-1-linear-none",
            latent_range=2,
            shifts=dict(ups_shift=16, syn_w_shift=12, syn_b_shift=12),
        ),
        _ups_overflow,
        ("ups-round-shift-wide",),
    ),
    GapCase(
        58,
        "ups-round-shift-overflow-yuv420",
        "Upsampling round_shift overflow; YUV 4:2:0 12-bit 6x14, 3 grids, T = 2 (tap 1 zero).",
        58,
        dict(
            width=6,
            height=14,
            n_grids=3,
            color_format=3,
            bit_depth=12,
            ups_taps=2,
            syn="3-1-linear-none",
            latent_range=2,
            shifts=dict(ups_shift=16, syn_w_shift=12, syn_b_shift=12),
        ),
        _ups_overflow,
        ("ups-round-shift-wide",),
    ),
    _chroma_case(59, 16, 12, 16, _ALL_CHROMA),
    _chroma_case(60, 9, 7, 12, _ALL_CHROMA),
    _chroma_case(61, 1, 9, 14, _ALL_CHROMA),
    _chroma_case(62, 13, 1, 10, _ALL_CHROMA),
    _chroma_case(63, 4, 3, 9, ("chroma-sum-no-wrap", "chroma-clip-first")),
    _chroma_case(64, 7, 5, 8, _ALL_CHROMA),
    GapCase(
        65,
        "arm-bias-term-wraps",
        "ARM bias terms B << (8 + 16 - 0) that wrap int32 (spec 2.3), not saturate; grey "
        "8-bit 10x8, r = 1.",
        65,
        dict(
            width=10,
            height=8,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            latent_range=3,
            shifts=dict(arm_w_shift=16, arm_b_shift=0),
        ),
        _arm_bias_wraps,
        ("arm-bias-saturate",),
    ),
    GapCase(
        66,
        "syn-bias-term-wraps-grey",
        "Synthesis bias term 33 << 27 that wraps int32 to 2^27 (spec 2.3); grey 10-bit 9x6.",
        66,
        dict(
            width=9,
            height=6,
            n_grids=1,
            color_format=0,
            bit_depth=10,
            syn="1-1-linear-none",
            latent_range=3,
            shifts=dict(syn_w_shift=16, syn_b_shift=1),
        ),
        _syn_bias_wraps,
        ("syn-bias-saturate",),
    ),
    GapCase(
        67,
        "syn-bias-term-wraps-rgb",
        "Synthesis bias terms 33 << 27 and -31 << 27 that wrap int32 (spec 2.3) after a 3x3 "
        "layer; RGB 12-bit 8x7, 2 grids.",
        67,
        dict(
            width=8,
            height=7,
            n_grids=2,
            color_format=1,
            bit_depth=12,
            syn="3-3-linear-none",
            latent_range=3,
            shifts=dict(syn_w_shift=16, syn_b_shift=1),
        ),
        _syn_bias_wraps,
        ("syn-bias-saturate",),
    ),
    GapCase(
        68,
        "laplace-scale-2048-mu-high",
        "log_scale exactly 2048 (the top of its range, not clipped) and mu beyond +2^23 "
        "(clipped): the tail masses depend on INV_SCALE[3584] and on the clip value; grey "
        "8-bit 11x7, latents within +-60.",
        68,
        dict(
            width=11,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        _far_mu_scale(1, 2048),
        ("laplace-log-scale-clip-2047",),
    ),
    GapCase(
        69,
        "laplace-scale-2048-mu-low",
        "log_scale 2048 and mu below -2^23 (clipped); YUV 4:4:4 10-bit 8x9, 2 grids.",
        69,
        dict(
            width=8,
            height=9,
            n_grids=2,
            color_format=2,
            bit_depth=10,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        _far_mu_scale(-1, 2048),
        ("laplace-log-scale-clip-2047",),
    ),
    GapCase(
        76,
        "laplace-mu-clip-high",
        "mu beyond +2^23 (clipped) with the largest log_scale at which clipping mu to "
        "2^23 - 1 instead would change the cdf of the alphabet; grey 9-bit 10x7.",
        76,
        dict(
            width=10,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=9,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        _mu_clip_visible(1),
        ("laplace-mu-clip",),
    ),
    GapCase(
        77,
        "laplace-mu-clip-low",
        "mu below -2^23 (clipped) with a log_scale at which clipping to -(2^23 - 1) would "
        "change the cdf; RGB 8-bit 8x6, 2 grids.",
        77,
        dict(
            width=8,
            height=6,
            n_grids=2,
            color_format=1,
            bit_depth=8,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        _mu_clip_visible(-1),
        ("laplace-mu-clip",),
    ),
    GapCase(
        78,
        "laplace-mu-clip-high-16bit",
        "mu beyond +2^23 (clipped), log_scale chosen as in 076; YUV 4:4:4 16-bit 7x7.",
        78,
        dict(
            width=7,
            height=7,
            n_grids=1,
            color_format=2,
            bit_depth=16,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=30,
            shifts=dict(syn_w_shift=14),
        ),
        _mu_clip_visible(1),
        ("laplace-mu-clip",),
    ),
    GapCase(
        70,
        "laplace-scale-min-near-boundary",
        "log_scale clipped to -1536 (the narrowest Laplace) with mu 3/256 above a boundary: "
        "the one non-zero tail mass depends on INV_SCALE[0]; grey 8-bit 12x8.",
        70,
        dict(
            width=12,
            height=8,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            arm="2-1-linear-none",
            latent_range=2,
        ),
        _mu_near_boundary(3),
        ("laplace-log-scale-clip-low",),
    ),
    GapCase(
        71,
        "laplace-scale-min-near-boundary-rgb",
        "log_scale clipped to -1536 with mu 1/256 below a boundary; RGB 10-bit 9x9, 2 grids.",
        71,
        dict(
            width=9,
            height=9,
            n_grids=2,
            color_format=1,
            bit_depth=10,
            arm="2-1-linear-none",
            latent_range=2,
        ),
        _mu_near_boundary(-1),
        ("laplace-log-scale-clip-low",),
    ),
    GapCase(
        72,
        "laplace-flat-fallback-low-mu",
        "mu far below every latent and log_scale clipped to -1536: D = 0, the uniform "
        "fallback of spec 5.4; grey 12-bit 9x7, latents within +-5.",
        72,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=12,
            arm="2-1-linear-none",
            latent_range=5,
        ),
        _flat_far_mu,
        ("laplace-no-fallback",),
    ),
    GapCase(
        73,
        "laplace-flat-fallback-yuv420",
        "D = 0 (uniform fallback of spec 5.4) in every coded grid; YUV 4:2:0 8-bit 10x6, 3 grids.",
        73,
        dict(
            width=10,
            height=6,
            n_grids=3,
            color_format=3,
            bit_depth=8,
            arm="2-1-linear-none",
            latent_range=4,
        ),
        _flat_far_mu,
        ("laplace-no-fallback",),
    ),
    GapCase(
        74,
        "arm-mac-limit-only",
        "ARM of exactly 8192 MAC per latent (r = 3, widths 64-64-30-20-2), small synthesis; "
        "RGB 8-bit 5x4, 1 grid.",
        74,
        dict(
            width=5,
            height=4,
            n_grids=1,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=3,
            ups_taps=1,
            arm="64-1-linear-relu,64-1-residual-leakyrelu,30-1-linear-none,20-1-linear-relu,"
            "2-1-linear-none",
            syn="3-1-linear-none",
        ),
        _visible_last_layer,
        (),
    ),
    GapCase(
        75,
        "synthesis-mac-limit-only",
        "Synthesis of exactly 16384 MAC per pixel (7 grids, 8 layers), small ARM; RGB 8-bit 4x3.",
        75,
        dict(
            width=4,
            height=3,
            n_grids=7,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=1,
            ups_taps=2,
            arm="2-1-linear-none",
            syn="64-1-linear-relu,64-1-residual-leakyrelu,6-3-linear-none,6-7-residual-relu,"
            "13-1-linear-leakyrelu,8-5-linear-relu,18-3-linear-leakyrelu,3-7-linear-none",
        ),
        _visible_last_layer,
        (),
    ),
]


GAP_GENERATOR_CASES.append(
    GapCase(
        79,
        "arm-dead-hidden-units",
        "ARM 4-1-linear-relu, 2-1-linear-none whose hidden units 0 and 1 are always 0 (zero "
        "weights, negative biases); grey 8-bit 11x6, r = 1. Base of an invalid stream that "
        "marks the last ARM layer residual.",
        79,
        dict(
            width=11,
            height=6,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            arm="4-1-linear-relu,2-1-linear-none",
            latent_range=4,
        ),
        _dead_hidden_units,
        (),
    )
)
GAP_GENERATOR_CASES.append(
    GapCase(
        80,
        "laplace-scale-min-near-boundary-16bit",
        "log_scale clipped to -1536 with mu 2/256 above a boundary; grey 16-bit 7x10, 2 grids.",
        80,
        dict(
            width=7,
            height=10,
            n_grids=2,
            color_format=0,
            bit_depth=16,
            arm="2-1-linear-none",
            latent_range=2,
        ),
        _mu_near_boundary(2),
        ("laplace-log-scale-clip-low",),
    )
)
GAP_GENERATOR_CASES.sort(key=lambda case: case.number)


# ---------------------------------------------------------------------------
# Invalid cases: a stream taken apart (header, weights, substreams) and put back with
# one rule of spec section 9 broken, every other part consistent, so that a decoder
# that skips the rule outputs a picture.


@dataclass
class StreamParts:
    """A stream's fields (spec 3.2), parameters (4.3) and substreams (5.1), editable."""

    head: bytearray  # magic .. n_syn_layers (16 bytes), v2: .. cross_grids (17 bytes)
    arm_layers: list[list[int]]  # [out, type, act]
    syn_layers: list[list[int]]  # [out, kernel, type, act]
    quant: list[int]  # the 10 shift / order bytes
    grids: list[list[int]]  # [latent_min, latent_max, substream_bytes]
    arm: list[list[np.ndarray]]  # per layer [W (out, in), B]
    taps: np.ndarray
    syn: list[list[np.ndarray]]  # per layer [W (out, in, k, k), B]
    substreams: list[bytes]
    padding: int = 0  # value of the weights section's padding bits
    extra_weight_bytes: bytes = b""  # appended to the weights section

    @property
    def dim_arm(self) -> int:
        return context_size(self.head[12])

    @property
    def arm_inputs(self) -> int:
        """Inputs of the first ARM layer: v2 adds the `cross_grids` values (v2 5.2a)."""
        return self.dim_arm + (self.head[16] if len(self.head) > 16 else 0)


def _read_egk(bits: str, pos: int, k: int) -> tuple[int, int]:
    zeros = bits.index("1", pos) - pos
    end = pos + 2 * zeros + k + 1
    u = int(bits[pos + zeros : end], 2) - (1 << k)
    return ((u + 1) >> 1 if u & 1 else -(u >> 1)), end


def split_stream(data: bytes) -> StreamParts:
    """The parts of a valid stream (read as spec 3-5 define them)."""
    head = bytearray(data[: 17 if data[4] >= 2 else 16])  # v2: cross_grids at offset 16
    n_grids, n_arm, n_syn = head[11], head[14], head[15]
    pos = len(head)
    arm_layers = [list(data[pos + 3 * i : pos + 3 * i + 3]) for i in range(n_arm)]
    pos += 3 * n_arm
    syn_layers = [list(data[pos + 4 * i : pos + 4 * i + 4]) for i in range(n_syn)]
    pos += 4 * n_syn
    quant = list(data[pos : pos + 10])
    (weights_bytes,) = struct.unpack_from("<I", data, pos + 10)
    pos += 14
    grids = [list(struct.unpack_from("<hhI", data, pos + 8 * g)) for g in range(n_grids)]
    pos += 8 * n_grids
    section = data[pos : pos + weights_bytes]
    bits = "".join(format(byte, "08b") for byte in section)
    at = 0

    def values(count: int, k: int) -> np.ndarray:
        nonlocal at
        out = []
        for _ in range(count):
            value, at = _read_egk(bits, at, k)
            out.append(value)
        return np.array(out, dtype=np.int64)

    arm, c_in = [], context_size(head[12]) + (head[16] if len(head) > 16 else 0)
    for out, _, _ in arm_layers:
        arm.append([values(out * c_in, quant[2]).reshape(out, c_in), values(out, quant[3])])
        c_in = out
    taps = values(head[13], quant[5])
    syn, c_in = [], n_grids
    for out, kernel, _, _ in syn_layers:
        w = values(out * c_in * kernel * kernel, quant[8]).reshape(out, c_in, kernel, kernel)
        syn.append([w, values(out, quant[9])])
        c_in = out
    padding = int(bits[at:], 2) if at < len(bits) else 0
    pos += weights_bytes
    substreams = []
    for _, _, size in grids:
        substreams.append(data[pos : pos + size])
        pos += size
    return StreamParts(
        head, arm_layers, syn_layers, quant, grids, arm, taps, syn, substreams, padding
    )


def join_stream(parts: StreamParts) -> bytes:
    """The stream of `parts`: weights re-coded with the header's exp-Golomb orders."""
    codes = []
    for w, b in parts.arm:
        codes += [egk_code(int(v), parts.quant[2]) for v in w.reshape(-1)]
        codes += [egk_code(int(v), parts.quant[3]) for v in b]
    codes += [egk_code(int(v), parts.quant[5]) for v in parts.taps]
    for w, b in parts.syn:
        codes += [egk_code(int(v), parts.quant[8]) for v in w.reshape(-1)]
        codes += [egk_code(int(v), parts.quant[9]) for v in b]
    bits = "".join(codes)
    spare = -len(bits) % 8
    bits += format(parts.padding, f"0{spare}b") if spare else ""
    section = int(bits, 2).to_bytes(len(bits) // 8, "big") + parts.extra_weight_bytes
    out = bytearray(parts.head)
    for layer in parts.arm_layers + parts.syn_layers:
        out += bytes(layer)
    out += bytes(parts.quant) + struct.pack("<I", len(section))
    for low, high, size in parts.grids:
        out += struct.pack("<hhI", low, high, size)
    out += section
    return bytes(out) + b"".join(parts.substreams)


def _edit(function: Callable[[StreamParts], None]) -> Callable[[bytes], bytes]:
    """A stream edit from a function that edits the stream's parts in place."""

    def mutate(data: bytes) -> bytes:
        parts = split_stream(data)
        assert join_stream(parts) == data, "the stream does not split and join back"
        function(parts)
        return join_stream(parts)

    mutate.__name__ = function.__name__
    return mutate


def _first_coded(parts: StreamParts) -> int:
    return next(g for g, (low, high, size) in enumerate(parts.grids) if size and high > low)


def _padding_bit_set(parts: StreamParts) -> None:
    """The last padding bit of the weights section set to 1 (spec 4.3: must be 0)."""
    parts.padding = 1


def _tap_32768(parts: StreamParts) -> None:
    """Upsampling tap v[0] coded as 32768 (spec 4.2: outside -32768..32767)."""
    parts.taps[0] = 32768


def _synthesis_weight_32768(parts: StreamParts) -> None:
    """The first weight of the first synthesis layer coded as 32768."""
    parts.syn[0][0].reshape(-1)[0] = 32768


def _synthesis_bias_32768(parts: StreamParts) -> None:
    """The last synthesis bias coded as 32768."""
    parts.syn[-1][1][-1] = 32768


def _weights_one_byte_longer(parts: StreamParts) -> None:
    """One zero byte appended to the weights section (weights_bytes updated)."""
    parts.extra_weight_bytes = b"\x00"


def _zero_word_first(parts: StreamParts) -> None:
    """A zero word put before the first coded grid's substream (spec 5.5: a non-empty
    substream whose first word is 0). A decoder that skips the check reads the zero into
    the state and then decodes the original substream exactly."""
    g = _first_coded(parts)
    parts.substreams[g] = b"\x00" * 4 + parts.substreams[g]
    parts.grids[g][2] += 4


def _last_word_bit_flipped(parts: StreamParts) -> None:
    """Bit 0 of the last word of the first coded grid's substream flipped: the final state
    is no longer 0 (spec 5.5 end condition)."""
    g = _first_coded(parts)
    data = bytearray(parts.substreams[g])
    data[-4] ^= 1
    parts.substreams[g] = bytes(data)


def _constant_grid_with_substream(parts: StreamParts) -> None:
    """The first constant grid (K = 1) given a 4-byte substream (spec 3.4)."""
    g = next(g for g, (low, high, _) in enumerate(parts.grids) if low == high)
    parts.substreams[g] = struct.pack("<I", 0x01234567)
    parts.grids[g][2] = 4


def _substream_not_multiple_of_4(parts: StreamParts) -> None:
    """One byte appended to the first coded grid's substream (spec 3.2: a multiple of 4)."""
    g = _first_coded(parts)
    parts.substreams[g] += b"\x00"
    parts.grids[g][2] += 1


def _linear_to_residual(module: str, index: int) -> Callable[[StreamParts], None]:
    def edit(parts: StreamParts) -> None:
        layers = parts.arm_layers if module == "arm" else parts.syn_layers
        type_at = 1 if module == "arm" else 2
        assert layers[index][type_at] == 0
        layers[index][type_at] = 1

    edit.__name__ = f"_{module}_layer_{index}_made_residual"
    return edit


def _grow_layer(module: str, index: int, extra: int) -> Callable[[StreamParts], None]:
    """Layer `index` of the ARM or synthesis gets `extra` more outputs, with zero weights
    and biases (and the next layer zero weights for them): the section stays consistent."""

    def edit(parts: StreamParts) -> None:
        layers, params = (
            (parts.arm_layers, parts.arm) if module == "arm" else (parts.syn_layers, parts.syn)
        )
        at = index % len(layers)
        layers[at][0] += extra
        w, b = params[at]
        params[at] = [
            np.concatenate([w, np.zeros((extra,) + w.shape[1:], dtype=np.int64)]),
            np.concatenate([b, np.zeros(extra, dtype=np.int64)]),
        ]
        if at + 1 < len(layers):
            w, b = params[at + 1]
            pad = np.zeros((w.shape[0], extra) + w.shape[2:], dtype=np.int64)
            params[at + 1] = [np.concatenate([w, pad], axis=1), b]

    edit.__name__ = f"_{module}_layer_{index}_{extra}_more_outputs"
    return edit


def _version(value: int) -> Callable[[StreamParts], None]:
    def edit(parts: StreamParts) -> None:
        parts.head[4] = value

    edit.__name__ = f"_version_{value}"
    return edit


def _eighth_grid(parts: StreamParts) -> None:
    """n_grids = 8: a constant grid 7 (latent 0, no substream) appended, and the first
    synthesis layer given zero weights for it (spec 3.2: n_grids <= 7)."""
    parts.head[11] = 8
    parts.grids.append([0, 0, 0])
    parts.substreams.append(b"")
    w, b = parts.syn[0]
    pad = np.zeros((w.shape[0], 1) + w.shape[2:], dtype=np.int64)
    parts.syn[0] = [np.concatenate([w, pad], axis=1), b]


def _trailing_word(data: bytes) -> bytes:
    """Four bytes 0x00 after the last substream."""
    return data + b"\x00" * 4


def _invalid(slug, description, base, edit, rule, error) -> GapInvalidCase:
    mutate = edit if edit is _trailing_word else _edit(edit)
    return GapInvalidCase(slug, description, base, mutate, rule, error)


@dataclass(frozen=True)
class GapInvalidCase:
    """An edit of valid stream `base` (a slug) that spec section 9 rule `rule` rejects."""

    slug: str
    description: str
    base: str
    mutate: Callable[[bytes], bytes]
    rule: int
    error: str


_RGB10 = "23x19-rgb-10bit-r1"
_YUV444 = "19x14-yuv444-8bit-r3"
_ARM5 = "arm-all-types"
_BIG = "67x45-rgb-7grids"

GAP_INVALID_CASES: list[GapInvalidCase] = [
    _invalid(
        "reject-padding-bit-rgb",
        "The weights section's last padding bit is 1 (spec 4.3).",
        _RGB10,
        _padding_bit_set,
        6,
        "weights section size mismatch",
    ),
    _invalid(
        "reject-padding-bit-7grids",
        "The weights section's last padding bit is 1 (spec 4.3).",
        _BIG,
        _padding_bit_set,
        6,
        "weights section size mismatch",
    ),
    _invalid(
        "reject-padding-bit-yuv444",
        "The weights section's last padding bit is 1 (spec 4.3).",
        _YUV444,
        _padding_bit_set,
        6,
        "weights section size mismatch",
    ),
    _invalid(
        "reject-tap-32768",
        "Upsampling tap v[0] coded as 32768 (spec 4.2).",
        _YUV444,
        _tap_32768,
        6,
        "weight out of range",
    ),
    _invalid(
        "reject-synthesis-bias-32768",
        "The last synthesis bias coded as 32768 (spec 4.2).",
        _BIG,
        _synthesis_bias_32768,
        6,
        "weight out of range",
    ),
    _invalid(
        "reject-weights-one-byte-longer",
        "One zero byte more in the weights section than its parameters use (spec 4.3).",
        _RGB10,
        _weights_one_byte_longer,
        6,
        "weights section size mismatch",
    ),
    _invalid(
        "reject-weights-one-byte-longer-arm5",
        "One zero byte more in the weights section than its parameters use (spec 4.3).",
        _ARM5,
        _weights_one_byte_longer,
        6,
        "weights section size mismatch",
    ),
    _invalid(
        "reject-zero-word-before-substream",
        "A zero word before a substream: its first word is 0 (spec 5.5), although the rest "
        "decodes.",
        _RGB10,
        _zero_word_first,
        7,
        "invalid substream start",
    ),
    _invalid(
        "reject-zero-word-before-substream-r3",
        "A zero word before a substream: its first word is 0 (spec 5.5), although the rest "
        "decodes.",
        _YUV444,
        _zero_word_first,
        7,
        "invalid substream start",
    ),
    _invalid(
        "reject-final-state-rgb",
        "Bit 0 of a substream's last word flipped: every word is read, the final state is "
        "not 0 (spec 5.5).",
        _RGB10,
        _last_word_bit_flipped,
        7,
        "substream size mismatch",
    ),
    _invalid(
        "reject-final-state-yuv444",
        "Bit 0 of a substream's last word flipped: the final state is not 0 (spec 5.5).",
        _YUV444,
        _last_word_bit_flipped,
        7,
        "substream size mismatch",
    ),
    _invalid(
        "reject-final-state-grey",
        "Bit 0 of a substream's last word flipped: the final state is not 0 (spec 5.5).",
        _ARM5,
        _last_word_bit_flipped,
        7,
        "substream size mismatch",
    ),
    _invalid(
        "reject-constant-grid-substream",
        "A constant grid (K = 1) with a 4-byte substream (spec 3.4).",
        "zero-and-constant-grids",
        _constant_grid_with_substream,
        4,
        "is constant but has",
    ),
    _invalid(
        "reject-constant-grid-substream-7grids",
        "A constant grid (K = 1) with a 4-byte substream (spec 3.4).",
        "1x1-rgb-7grids",
        _constant_grid_with_substream,
        4,
        "is constant but has",
    ),
    _invalid(
        "reject-constant-grid-substream-extremes",
        "A constant grid (K = 1) with a 4-byte substream (spec 3.4).",
        "all-grids-constant",
        _constant_grid_with_substream,
        4,
        "is constant but has",
    ),
    _invalid(
        "reject-substream-size-5",
        "A substream of 4n + 1 bytes (spec 3.2).",
        _RGB10,
        _substream_not_multiple_of_4,
        4,
        "not a multiple of 4",
    ),
    _invalid(
        "reject-substream-size-odd-r3",
        "A substream of 4n + 1 bytes (spec 3.2).",
        _YUV444,
        _substream_not_multiple_of_4,
        4,
        "not a multiple of 4",
    ),
    _invalid(
        "reject-substream-size-odd-grey",
        "A substream of 4n + 1 bytes (spec 3.2).",
        _ARM5,
        _substream_not_multiple_of_4,
        4,
        "not a multiple of 4",
    ),
    _invalid(
        "reject-residual-arm-widens",
        "ARM layer 0 (4 inputs, 6 outputs) marked residual (spec 3.3: residual needs "
        "out == C_in); weights unchanged.",
        _RGB10,
        _linear_to_residual("arm", 0),
        4,
        "is residual but has",
    ),
    _invalid(
        "reject-residual-arm-r2",
        "ARM layer 0 (12 inputs, 16 outputs) marked residual (spec 3.3).",
        _BIG,
        _linear_to_residual("arm", 0),
        4,
        "is residual but has",
    ),
    _invalid(
        "reject-residual-synthesis-narrows",
        "Synthesis layer 2 (12 inputs, 6 outputs, 3x3) marked residual (spec 3.3).",
        _YUV444,
        _linear_to_residual("synthesis", 2),
        4,
        "is residual but has",
    ),
    _invalid(
        "reject-arm-3-outputs",
        "The last ARM layer has 3 outputs (zero weights for the third; spec 3.3: 2).",
        _RGB10,
        _grow_layer("arm", -1, 1),
        4,
        "last ARM layer must have 2 outputs",
    ),
    _invalid(
        "reject-arm-3-outputs-r3",
        "The last ARM layer has 3 outputs (zero weights for the third; spec 3.3: 2).",
        _YUV444,
        _grow_layer("arm", -1, 1),
        4,
        "last ARM layer must have 2 outputs",
    ),
    _invalid(
        "reject-synthesis-4-outputs",
        "The last synthesis layer of an RGB stream has 4 outputs (zero weights for the "
        "fourth; spec 3.3: n_channels).",
        _RGB10,
        _grow_layer("synthesis", -1, 1),
        4,
        "last synthesis layer must have 3 outputs",
    ),
    _invalid(
        "reject-arm-mac-consistent",
        "The largest architecture with one ARM layer 30 -> 31 outputs (8276 MAC per latent, "
        "spec 3.4), the weights section extended with zeros to match.",
        "largest-architecture",
        _grow_layer("arm", 2, 1),
        4,
        "ARM needs",
    ),
    _invalid(
        "reject-synthesis-mac-consistent",
        "The largest architecture with synthesis layer 4 (13-1) given 14 outputs (16590 MAC "
        "per pixel, spec 3.4), the weights section extended with zeros to match.",
        "largest-architecture",
        _grow_layer("synthesis", 4, 1),
        4,
        "synthesis needs",
    ),
    _invalid(
        "reject-arm-mac-consistent-2",
        "The largest architecture with ARM layer 3 (20 outputs) given 21 (8224 MAC per "
        "latent), the weights section extended with zeros to match.",
        "largest-architecture",
        _grow_layer("arm", 3, 1),
        4,
        "ARM needs",
    ),
    _invalid(
        "reject-version-0",
        "Version 0 (spec 3.2: 1).",
        _RGB10,
        _version(0),
        2,
        "unsupported version",
    ),
    _invalid(
        "reject-version-255",
        "Version 255 (spec 3.2: 1).",
        _YUV444,
        _version(255),
        2,
        "unsupported version",
    ),
    _invalid(
        "reject-eight-grids-consistent",
        "n_grids = 8: a constant eighth grid appended and the first synthesis layer given "
        "zero weights for it (spec 3.2: at most 7).",
        "1x1-rgb-7grids",
        _eighth_grid,
        4,
        "n_grids",
    ),
    _invalid(
        "reject-eight-grids-consistent-big",
        "n_grids = 8: a constant eighth grid appended and the first synthesis layer given "
        "zero weights for it (spec 3.2: at most 7).",
        _BIG,
        _eighth_grid,
        4,
        "n_grids",
    ),
    _invalid(
        "reject-trailing-word",
        "Four zero bytes after the last substream (spec 3.1).",
        _RGB10,
        _trailing_word,
        5,
        "trailing data",
    ),
    _invalid(
        "reject-trailing-word-r3",
        "Four zero bytes after the last substream (spec 3.1).",
        _YUV444,
        _trailing_word,
        5,
        "trailing data",
    ),
    _invalid(
        "reject-synthesis-weight-32768",
        "The first synthesis weight coded as 32768 (spec 4.2), the rest of the section re-coded.",
        _ARM5,
        _synthesis_weight_32768,
        6,
        "weight out of range",
    ),
    _invalid(
        "reject-residual-arm-narrows",
        "The last ARM layer (4 inputs, 2 outputs) marked residual (spec 3.3); its inputs 0 "
        "and 1 are always 0, so a decoder that ignores the rule decodes the latents.",
        "arm-dead-hidden-units",
        _linear_to_residual("arm", 1),
        4,
        "is residual but has",
    ),
    _invalid(
        "reject-residual-synthesis-narrows-3x3",
        "Synthesis layer 2 (6 inputs, 4 outputs, 3x3) marked residual (spec 3.3).",
        "synthesis-all-kernels-types",
        _linear_to_residual("synthesis", 2),
        4,
        "is residual but has",
    ),
    _invalid(
        "reject-eight-grids-consistent-kodim23",
        "n_grids = 8: a constant eighth grid appended and the first synthesis layer given "
        "zero weights for it (spec 3.2: at most 7).",
        "kodim23-64x48-rgb8",
        _eighth_grid,
        4,
        "n_grids",
    ),
    _invalid(
        "reject-zero-word-before-substream-grey",
        "A zero word before a substream: its first word is 0 (spec 5.5), although the rest "
        "decodes.",
        _ARM5,
        _zero_word_first,
        7,
        "invalid substream start",
    ),
]
