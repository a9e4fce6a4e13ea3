"""The encoder's own simulation of the spec's integer decoding (bitstream-v1.md 2, 5-8,
with the cross-grid ARM context of bitstream-v2.md 5.2a).

Vectorized NumPy int64. Where the spec says a value is an int32 that wraps
(section 2.2), sums of products are computed exactly in a wider type and
reduced once with `wrap32`: wrap32 is a ring homomorphism, so this equals
wrapping after every operation. Sums of products of int16 weights and int32
activations are evaluated with float64 matrix products only where they are
exact (every partial sum an integer below 2^53, checked per call; otherwise
the activations are split into 16-bit halves first).

Independent of the reference decoder: nothing here comes from the
`coolchic_ref` decoder modules; the only shared data are the normative tables
of package `coolchic_ref.tables`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.resources
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from .format import (
    ARM_FRAC,
    LEAKY_SHIFT,
    LOG_SCALE_MAX,
    LOG_SCALE_MIN,
    MU_LIMIT,
    PRECISION,
    SYN_FRAC,
    ColorFormat,
    context_offsets,
    grid_shape,
    tap_offset,
)

if TYPE_CHECKING:
    from .bitstream import IntegerCodec, LayerDesc

EXP_NEG_SIZE = 5632  # entries of the normative EXP_NEG table
G_ONE = 1 << 30  # Q30 one of the Laplace cumulative G

_FLOAT_EXACT = 1 << 53  # every integer of magnitude <= 2^53 is a float64
_BLOCK_ELEMENTS = 1 << 18  # work blocks of about 2 MiB of int64 or float64: cache-friendly


# ---------------------------------------------------------------------------
# Tables and elementary operations (spec 2.2)


@functools.cache
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(EXP_NEG Q30, 5632 entries; INV_SCALE Q20, 3585 entries) as int64 arrays."""
    root = importlib.resources.files("coolchic_ref.tables")
    exp_neg = np.array(root.joinpath("exp_neg_q30.txt").read_text().split(), dtype=np.int64)
    inv_scale = np.array(root.joinpath("inv_scale_q20.txt").read_text().split(), dtype=np.int64)
    if exp_neg.size != EXP_NEG_SIZE or inv_scale.size != LOG_SCALE_MAX - LOG_SCALE_MIN + 1:
        raise RuntimeError("normative tables have the wrong length")
    return exp_neg, inv_scale


_wrap_observers: list[Callable[[np.ndarray], None]] = []


def wrap32(x: np.ndarray) -> np.ndarray:
    """Reduce int64 values modulo 2^32 into [-2^31, 2^31 - 1] (two's complement int32)."""
    x = np.asarray(x, dtype=np.int64)
    for observe in _wrap_observers:
        observe(x)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@contextlib.contextmanager
def observing_wrap32(observe: Callable[[np.ndarray], None]) -> Iterator[None]:
    """Within the block, `observe(x)` sees the int64 values every `wrap32` reduces.

    For tools that report which stages of a decode wrap around (the conformance
    generator's feature list); the results of the simulation do not change.
    """
    _wrap_observers.append(observe)
    try:
        yield
    finally:
        _wrap_observers.remove(observe)


def round_shift(x: np.ndarray, n: int) -> np.ndarray:
    """Spec round_shift: wrap32(x + 2^(n-1)) >> n; wrap32(x) for n == 0.

    `x` may be an unwrapped int64 sum: wrapping it first would not change the result.
    """
    half = (1 << (n - 1)) if n > 0 else 0
    return wrap32(x + half) >> n


def activation(y: np.ndarray, name: str) -> np.ndarray:
    """Activation of an int32 array (spec 2.2): none, relu, leakyrelu (y >> 4 below 0)."""
    if name == "none":
        return y
    if name == "relu":
        return np.maximum(y, 0)
    if name == "leakyrelu":
        return np.where(y >= 0, y, y >> LEAKY_SHIFT)
    raise ValueError(f"unknown activation {name!r}")


def _exact_matmul(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """weights @ x exactly, as int64: weights (out, n) int16-range, x (n, P) int32-range."""
    w = np.asarray(weights, dtype=np.int64)
    x = np.asarray(x, dtype=np.int64)
    if w.size == 0 or x.size == 0:
        return np.zeros((w.shape[0], x.shape[1]), dtype=np.int64)
    w_abs_row = int(np.abs(w).sum(axis=1).max())
    x_abs = int(np.abs(x).max())
    wf = w.astype(np.float64)
    if w_abs_row * x_abs < _FLOAT_EXACT:
        return (wf @ x.astype(np.float64)).astype(np.int64)
    # Split x = hi * 2^16 + lo, lo in [0, 2^16): both partial products have
    # partial sums below n * 2^31 <= 3136 * 2^31 < 2^53.
    hi = (x >> 16).astype(np.float64)
    lo = (x & 0xFFFF).astype(np.float64)
    return ((wf @ hi).astype(np.int64) << 16) + (wf @ lo).astype(np.int64)


def _bias_term(bias: np.ndarray, frac: int, w_shift: int, b_shift: int) -> np.ndarray:
    """wrap32(B << (F + w_shift - b_shift)), the accumulator start of spec 2.3."""
    return wrap32(np.asarray(bias, dtype=np.int64) << (frac + w_shift - b_shift))


def _finish_layer(
    acc: np.ndarray, layer: LayerDesc, layer_input: np.ndarray, w_shift: int
) -> np.ndarray:
    """round_shift, residual add and activation of spec 2.3 (arrays (C, ...) int64)."""
    y = round_shift(acc, w_shift)
    if layer.kind.adds_input:
        y = wrap32(y + layer_input)
    return activation(y, layer.activation)


# ---------------------------------------------------------------------------
# ARM (spec 2.3, 5.2, 5.3; v2 5.2a)


def arm_contexts(latent: np.ndarray, n_ctx_rowcol: int, rows: slice | None = None) -> np.ndarray:
    """Spatial context latents of every position, raster order: int64 (dim_arm, n_positions).

    Positions outside the grid contribute 0. `rows` restricts to a band of rows.
    """
    latent = np.asarray(latent, dtype=np.int64)
    height, width = latent.shape
    r = n_ctx_rowcol
    rows = rows or slice(0, height)
    y0, y1 = rows.start, rows.stop
    # Rows y0 - r .. y1 - 1 of the grid, zero-padded by r rows above and r
    # columns on each side (contexts never look below or further than r).
    padded = np.zeros((y1 - y0 + r, width + 2 * r), dtype=np.int64)
    top = max(0, y0 - r)
    padded[top - (y0 - r) :, r : r + width] = latent[top:y1]
    offsets = context_offsets(r)
    out = np.empty((len(offsets), (y1 - y0) * width), dtype=np.int64)
    for j, (dy, dx) in enumerate(offsets):
        out[j] = padded[r + dy : r + dy + y1 - y0, r + dx : r + dx + width].reshape(-1)
    return out


def cross_contexts(
    latents: list[np.ndarray], grid_index: int, cross_grids: int, rows: slice | None = None
) -> np.ndarray:
    """Cross-grid context latents of grid `grid_index` (v2 5.2a): int64 (C, n_positions).

    Row k - 1 (k = 1..C) holds, for each position (y, x) in raster order, the latent
    of grid g + k at (y >> k, x >> k), or 0 where grid g + k does not exist (g + k > N - 1).
    `rows` restricts to a band of rows of grid g.
    """
    height, width = np.asarray(latents[grid_index]).shape
    rows = rows or slice(0, height)
    ys = np.arange(rows.start, rows.stop)
    xs = np.arange(width)
    out = np.zeros((cross_grids, ys.size * width), dtype=np.int64)
    for k in range(1, cross_grids + 1):
        if grid_index + k < len(latents):
            coarse = np.asarray(latents[grid_index + k], dtype=np.int64)
            out[k - 1] = coarse[np.ix_(ys >> k, xs >> k)].reshape(-1)
    return out


def arm_inputs(codec: IntegerCodec, grid_index: int, rows: slice | None = None) -> np.ndarray:
    """The ARM input latents of grid `grid_index`, raster order: int64 (arm_inputs, P).

    The spatial context (spec 5.2), then the `cross_grids` cross-grid values (v2 5.2a),
    not yet shifted to Q8 (`run_arm` does that). `rows` restricts to a band of rows.
    """
    spatial = arm_contexts(codec.latents[grid_index], codec.n_ctx_rowcol, rows)
    if not codec.cross_grids:
        return spatial
    cross = cross_contexts(codec.latents, grid_index, codec.cross_grids, rows)
    return np.concatenate([spatial, cross])


def run_arm(codec: IntegerCodec, contexts: np.ndarray) -> np.ndarray:
    """ARM outputs for input latents (arm_inputs, P): int64 (2, P), Q8 (mu, log_scale)."""
    x = np.asarray(contexts, dtype=np.int64) << ARM_FRAC
    for layer, (w, b) in zip(codec.arm_layers, codec.arm_weights, strict=True):
        bias = _bias_term(b, ARM_FRAC, codec.arm_w_shift, codec.arm_b_shift)
        acc = _exact_matmul(w, x) + bias[:, None]
        x = _finish_layer(acc, layer, x, codec.arm_w_shift)
    return x


def arm_mu_log_scale(codec: IntegerCodec, grid_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu, log_scale) of every position of grid `grid_index`: int64 (h_g, w_g) each, Q8.

    The encoder knows every latent, so all positions are evaluated at once;
    the values equal those a decoder computes in wavefront order (v2: coarsest grid
    first, which the encoder need not follow either).
    """
    height, width = np.asarray(codec.latents[grid_index]).shape
    band = max(1, _BLOCK_ELEMENTS // max(1, width * codec.arm_inputs))
    mu = np.empty((height, width), dtype=np.int64)
    log_scale = np.empty((height, width), dtype=np.int64)
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        out = run_arm(codec, arm_inputs(codec, grid_index, slice(y0, y1)))
        mu[y0:y1] = out[0].reshape(y1 - y0, width)
        log_scale[y0:y1] = out[1].reshape(y1 - y0, width)
    return mu, log_scale


# ---------------------------------------------------------------------------
# Integer Laplace distribution (spec 5.4)


def _laplace_g(boundary: np.ndarray, m: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """G at Q8 boundaries `boundary` for clipped mu `m` and inverse scale `inv` (Q30)."""
    t = np.array(np.abs(boundary - m), dtype=np.int64)  # a fresh array, also for scalars
    t *= inv
    t >>= 20
    # EXP_NEG extended by one 0 entry: e = 0 for every t >= 5632.
    np.minimum(t, EXP_NEG_SIZE, out=t)
    half_tail = _exp_neg_extended()[t] >> 1
    return np.where(boundary < m, half_tail, G_ONE - half_tail)


@functools.cache
def _exp_neg_extended() -> np.ndarray:
    return np.append(tables()[0], 0)


def _clipped_params(mu: np.ndarray, log_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, inv_scale = tables()
    s = np.clip(np.asarray(log_scale, dtype=np.int64), LOG_SCALE_MIN, LOG_SCALE_MAX)
    m = np.clip(np.asarray(mu, dtype=np.int64), -MU_LIMIT, MU_LIMIT)
    return m, inv_scale[s - LOG_SCALE_MIN]


def laplace_at_boundary(
    boundary: np.ndarray, mu: np.ndarray, log_scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(t, G) of spec 5.4 at Q8 boundaries, for mu and log_scale clipped as the spec says.

    t = (|boundary - mu| * inv_scale) >> 20 is the EXP_NEG index before its limit
    (t >= EXP_NEG_SIZE: a tail mass of 0); G is the cumulative, Q30. Arrays broadcast.
    """
    m, inv = _clipped_params(mu, log_scale)
    t = (np.abs(np.asarray(boundary, dtype=np.int64) - m) * inv) >> 20
    return t, _laplace_g(np.asarray(boundary, dtype=np.int64) + np.zeros_like(m), m, inv)


def laplace_cdf(
    mu: np.ndarray, log_scale: np.ndarray, i: np.ndarray, latent_min: int, alphabet: int
) -> np.ndarray:
    """Integer cdf(i) of spec 5.4, i in 0..K, broadcast over arrays: int64 in [0, 2^24].

    mu and log_scale are the ARM's Q8 outputs; `alphabet` is K.
    """
    m, inv = _clipped_params(mu, log_scale)
    i = np.asarray(i, dtype=np.int64)

    def g(index: np.ndarray) -> np.ndarray:
        # boundary latent_min + index - 1/2, Q8
        return _laplace_g(((latent_min + index) << 8) - 128, m, inv)

    g0 = g(np.int64(0))
    d = g(np.int64(alphabet)) - g0
    mass = (1 << PRECISION) - alphabet
    spread = (g(i) - g0) * mass // np.maximum(d, 1)
    uniform = i * mass // alphabet
    return i + np.where(d > 0, spread, uniform)


def laplace_cdf_table(
    mu: np.ndarray, log_scale: np.ndarray, latent_min: int, alphabet: int
) -> np.ndarray:
    """Full cdf tables for P latents: int64 (P, K + 1), row p = cdf(0..K) of latent p."""
    m, inv = _clipped_params(np.reshape(mu, (-1, 1)), np.reshape(log_scale, (-1, 1)))
    i = np.arange(alphabet + 1, dtype=np.int64)
    g = _laplace_g(((latent_min + i) << 8) - 128, m, inv)  # (P, K + 1)
    g -= g[:, :1].copy()
    d = g[:, -1:].copy()
    mass = (1 << PRECISION) - alphabet
    g *= mass
    g //= np.maximum(d, 1)
    flat = d[:, 0] == 0
    if flat.any():  # D == 0: uniform distribution
        g[flat] = i * mass // alphabet
    g += i
    return g


def symbol_frequencies(
    mu: np.ndarray, log_scale: np.ndarray, symbols: np.ndarray, latent_min: int, alphabet: int
) -> np.ndarray:
    """f(s) = cdf(s + 1) - cdf(s) of each symbol s (0-based), in units of 2^-24."""
    s = np.asarray(symbols, dtype=np.int64)
    return laplace_cdf(mu, log_scale, s + 1, latent_min, alphabet) - laplace_cdf(
        mu, log_scale, s, latent_min, alphabet
    )


def grid_latent_bits(codec: IntegerCodec, grid_index: int) -> float:
    """Exact code length of grid `grid_index`, -sum log2(f(s) / 2^24), in bits.

    0 for a constant grid. The substream is at most a few words longer (rANS
    flush and padding to 32-bit words).
    """
    latent = np.asarray(codec.latents[grid_index], dtype=np.int64)
    latent_min, latent_max = int(latent.min()), int(latent.max())
    if latent_min == latent_max:
        return 0.0
    mu, log_scale = arm_mu_log_scale(codec, grid_index)
    f = symbol_frequencies(
        mu, log_scale, latent - latent_min, latent_min, latent_max - latent_min + 1
    )
    return float(np.sum(PRECISION - np.log2(f.astype(np.float64))))


def latent_bits(codec: IntegerCodec) -> float:
    """Exact code length of all latents in bits (sum of `grid_latent_bits`)."""
    return sum(grid_latent_bits(codec, g) for g in range(len(codec.latents)))


# ---------------------------------------------------------------------------
# Upsampling (spec 6)


def upsample_pass(a: np.ndarray, taps: np.ndarray, shift: int, n_out: int, axis: int) -> np.ndarray:
    """One 1-D upsampling pass of spec 6 along `axis` of int64 array `a` (int32 values).

    Maps length n_in to n_out (2 n_in - 1 <= n_out <= 2 n_in); result int64.
    """
    taps = [int(v) for v in np.asarray(taps).reshape(-1)]
    a = np.moveaxis(np.asarray(a, dtype=np.int64), axis, -1)
    if not 2 * a.shape[-1] - 1 <= n_out <= 2 * a.shape[-1]:
        raise ValueError(f"cannot upsample {a.shape[-1]} samples to {n_out}")
    pad = 4  # |m| <= 4 for T <= 8; edge padding equals the spec's index clipping
    padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(pad, pad)], mode="edge")
    out = np.empty(a.shape[:-1] + (n_out,), dtype=np.int64)
    for parity in (0, 1):
        count = (n_out - parity + 1) // 2  # outputs i = 2 j + parity
        acc = np.zeros(a.shape[:-1] + (count,), dtype=np.int64)
        for k, v in enumerate(taps):
            start = pad + tap_offset(k, parity == 1)
            acc += v * padded[..., start : start + count]
        out[..., parity::2] = round_shift(acc, shift)
    return np.moveaxis(out, -1, axis)


def upsample_grid(codec: IntegerCodec, grid_index: int) -> np.ndarray:
    """Channel `grid_index` of the dense latent: int64 (H, W), Q12 (spec 6)."""
    x = np.asarray(codec.latents[grid_index], dtype=np.int64) << SYN_FRAC
    for level in range(grid_index, 0, -1):
        rows, cols = grid_shape(codec.height, codec.width, level - 1)
        x = upsample_pass(x, codec.ups_taps, codec.ups_shift, rows, axis=0)
        x = upsample_pass(x, codec.ups_taps, codec.ups_shift, cols, axis=1)
    return x


def upsample_dense(codec: IntegerCodec) -> np.ndarray:
    """The dense latent: int64 (N, H, W), Q12, one channel per grid (spec 6)."""
    return np.stack([upsample_grid(codec, g) for g in range(len(codec.latents))])


# ---------------------------------------------------------------------------
# Synthesis (spec 7)


def conv_layer(
    x: np.ndarray,
    layer: LayerDesc,
    weights: np.ndarray,
    bias: np.ndarray,
    w_shift: int,
    b_shift: int,
    frac: int = SYN_FRAC,
) -> np.ndarray:
    """One synthesis layer (spec 2.3, 7) on int64 (C_in, H, W): int64 (C_out, H, W).

    Replicate padding. The sum of products is accumulated tap by tap in
    float64, exact because every partial sum is an integer below 2^53 (the
    activations are split into 16-bit halves where that bound needs it).
    Computed in bands of rows to bound memory.
    """
    x = np.asarray(x, dtype=np.int64)
    c_in, height, width = x.shape
    c_out, k = layer.out_channels, layer.kernel
    half = k // 2
    w = np.asarray(weights, dtype=np.int64).reshape(c_out, c_in, k, k)
    wf = w.astype(np.float64)
    bias_term = _bias_term(bias, frac, w_shift, b_shift)[:, None, None]
    w_abs_row = int(np.abs(w).sum(axis=(1, 2, 3)).max()) if w.size else 0
    x_abs = int(np.abs(x).max()) if x.size else 0
    # (scale, part): x = sum of scale * part
    parts = [(1, x)] if w_abs_row * x_abs < _FLOAT_EXACT else [(1 << 16, x >> 16), (1, x & 0xFFFF)]
    padded_width = width + 2 * half
    padded_parts = [
        (scale, np.pad(part, ((0, 0), (half, half), (half, half)), mode="edge").astype(np.float64))
        for scale, part in parts
    ]
    out = np.empty((c_out, height, width), dtype=np.int64)
    band = max(1, _BLOCK_ELEMENTS // max(1, (c_in + c_out) * padded_width))
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        rows = y1 - y0
        # Outputs are computed on the padded width: in the flattened padded
        # slab, tap (ky, kx) of output (y, x) sits at offset ky * Wp + kx from
        # y * Wp + x, so each tap is one strided matrix product. `length`
        # stops at the last real output, so no read leaves the slab.
        length = (rows - 1) * padded_width + width
        acc = np.zeros((c_out, rows * padded_width), dtype=np.int64)
        for scale, padded in padded_parts:
            slab = padded[:, y0 : y1 + 2 * half, :].reshape(c_in, -1)
            acc_f = np.zeros((c_out, length), dtype=np.float64)
            for ky in range(k):
                for kx in range(k):
                    start = ky * padded_width + kx
                    acc_f += wf[:, :, ky, kx] @ slab[:, start : start + length]
            acc[:, :length] += acc_f.astype(np.int64) * scale
        acc = acc.reshape(c_out, rows, padded_width)[:, :, :width] + bias_term
        y = _finish_layer(acc, layer, x[:, y0:y1, :], w_shift)
        out[:, y0:y1, :] = y
    return out


def synthesis_output(codec: IntegerCodec, dense: np.ndarray) -> np.ndarray:
    """Synthesis of the dense latent (N, H, W): int64 (n_channels, H, W), Q12 (spec 7)."""
    x = np.asarray(dense, dtype=np.int64)
    for layer, (w, b) in zip(codec.syn_layers, codec.syn_weights, strict=True):
        x = conv_layer(x, layer, w, b, codec.syn_w_shift, codec.syn_b_shift)
    return x


# ---------------------------------------------------------------------------
# Samples (spec 8)


def subsample_chroma(c: np.ndarray) -> np.ndarray:
    """4:2:0 reduction of one Q12 plane (H, W) to (ceil(H/2), ceil(W/2)) (spec 8.1)."""
    c = np.asarray(c, dtype=np.int64)
    height, width = c.shape
    # Edge padding to even size realizes y1 = min(2y + 1, H - 1), same for x.
    c = np.pad(c, ((0, height % 2), (0, width % 2)), mode="edge")
    total = c[0::2, 0::2] + c[0::2, 1::2] + c[1::2, 0::2] + c[1::2, 1::2] + 2
    return wrap32(total) >> 2


def to_samples(c: np.ndarray, bit_depth: int) -> np.ndarray:
    """Q12 values -> samples (clip(c, 0, 4096) * maxval + 2048) >> 12 (spec 8.2).

    uint8 for 8-bit, uint16 otherwise.
    """
    maxval = (1 << bit_depth) - 1
    samples = (np.clip(c, 0, 1 << SYN_FRAC) * maxval + 2048) >> SYN_FRAC
    return samples.astype(np.uint8 if bit_depth == 8 else np.uint16)


def output_planes(codec: IntegerCodec, synthesis: np.ndarray) -> list[np.ndarray]:
    """Planes of the picture from the synthesis output (spec 8.1, 8.2)."""
    planes = []
    subsampled = ColorFormat(codec.color_format).subsampled_chroma
    for channel, c in enumerate(synthesis):
        if subsampled and channel > 0:
            c = subsample_chroma(c)
        planes.append(to_samples(c, codec.bit_depth))
    return planes


def simulate_decode(codec: IntegerCodec) -> list[np.ndarray]:
    """The planes a conforming decoder outputs for `write_stream(codec)`.

    Grey [Y]; RGB [R, G, B]; YUV [Y, U, V] (4:2:0 chroma at ceil(W/2) x ceil(H/2)).
    Samples are uint8 (8-bit) or uint16.
    """
    from .bitstream import validate_codec

    validate_codec(codec)
    return output_planes(codec, synthesis_output(codec, upsample_dense(codec)))


def canonical_raw_bytes(planes: list[np.ndarray], bit_depth: int) -> bytes:
    """Canonical raw samples (spec 8.3): planes in order, row-major, 1 byte or u16 LE."""
    dtype = np.uint8 if bit_depth == 8 else np.dtype("<u2")
    return b"".join(np.ascontiguousarray(p, dtype=dtype).tobytes() for p in planes)


def canonical_sha256(planes: list[np.ndarray], bit_depth: int) -> str:
    """SHA-256 (hex) of the canonical raw samples, as in the conformance manifest."""
    return hashlib.sha256(canonical_raw_bytes(planes, bit_depth)).hexdigest()
