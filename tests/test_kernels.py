"""The Numba kernels of the decoder against slow, literal references of the spec.

Each reference below is a transcription of the pseudo-code of
spec/bitstream-v1.md with Python integers (or NumPy int64 with an explicit
wrap32 after every operation), written for clarity, not speed; the kernels must
match them bit for bit on random inputs, including hostile ones (wrapping
int32 activations, any substream words, alphabets up to 65536 symbols).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from coolchic_ref.errors import StreamError
from coolchic_ref.laplace_tables import EXP_NEG, INV_SCALE
from coolchic_ref.latents import balance_bins, context_offsets, decode_latent_grids
from coolchic_ref.syntax import (
    ARM_FRAC,
    SYN_FRAC,
    ColorFormat,
    GridInfo,
    LayerSpec,
    ModuleQuant,
    StreamHeader,
    context_size,
    grid_shape,
)
from coolchic_ref.synthesis import run_synthesis
from coolchic_ref.upsampling import upsample_to_dense

# ---------------------------------------------------------------------------
# Spec primitives (README conventions, spec 2.2)


def wrap32(x: int) -> int:
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def wrap32_array(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def round_shift(x: int, n: int) -> int:
    if n == 0:
        return x
    return wrap32(x + (1 << (n - 1))) >> n


def activation(y: int, act: int) -> int:
    if act == 1:
        return max(y, 0)
    if act == 2:
        return y if y >= 0 else y >> 4
    return y


def clip(x: int, a: int, b: int) -> int:
    return min(max(x, a), b)


# ---------------------------------------------------------------------------
# Headers and random parameters


def make_header(
    width: int,
    height: int,
    n_grids: int = 1,
    r: int = 1,
    arm: tuple[tuple[int, bool, int], ...] = ((2, False, 0),),
    syn: tuple[tuple[int, int, bool, int], ...] = ((1, 1, False, 0),),
    arm_shifts: tuple[int, int] = (8, 8),
    syn_shifts: tuple[int, int] = (8, 12),
    ups_half_taps: int = 2,
    ups_shift: int = 8,
    ranges: list[tuple[int, int]] | None = None,
    substream_bytes: list[int] | None = None,
    cross_grids: int = 0,
) -> StreamHeader:
    """A StreamHeader built directly (no stream): arm = ((out, residual, act), ...),
    syn = ((out, kernel, residual, act), ...); version 2 if cross_grids > 0."""
    arm_layers, c_in = [], context_size(r) + cross_grids
    for out, residual, act in arm:
        arm_layers.append(LayerSpec(c_in, out, 1, residual, act))
        c_in = out
    syn_layers, c_in = [], n_grids
    for out, kernel, residual, act in syn:
        syn_layers.append(LayerSpec(c_in, out, kernel, residual, act))
        c_in = out
    ranges = ranges or [(-8, 8)] * n_grids
    substream_bytes = substream_bytes or [0] * n_grids
    grids = tuple(
        GridInfo(*grid_shape(height, width, g), lo, hi, size)
        for g, ((lo, hi), size) in enumerate(zip(ranges, substream_bytes, strict=True))
    )
    return StreamHeader(
        color_format=ColorFormat.RGB if syn_layers[-1].out_channels == 3 else ColorFormat.GREY,
        bit_depth=8,
        width=width,
        height=height,
        n_ctx_rowcol=r,
        ups_half_taps=ups_half_taps,
        arm_layers=tuple(arm_layers),
        syn_layers=tuple(syn_layers),
        arm_quant=ModuleQuant(arm_shifts[0], arm_shifts[1], 0, 0),
        ups_shift=ups_shift,
        ups_egk=0,
        syn_quant=ModuleQuant(syn_shifts[0], syn_shifts[1], 0, 0),
        weights_bytes=1,
        grids=grids,
        header_bytes=0,
        version=2 if cross_grids else 1,
        cross_grids=cross_grids,
    )


def random_weights(rng, layers, kernel_dims: int, w_max: int, b_max: int):
    weights = []
    for layer in layers:
        shape = (layer.out_channels, layer.in_channels) + (layer.kernel,) * kernel_dims
        w = rng.integers(-w_max, w_max + 1, size=shape).astype(np.int32)
        b = rng.integers(-b_max, b_max + 1, size=layer.out_channels).astype(np.int32)
        weights.append((w, b))
    return weights


# ---------------------------------------------------------------------------
# Reference: latents (spec 5)


def ref_layer_stack(inputs: list[int], layers, weights, frac, w_shift, b_shift) -> list[int]:
    """Spec 2.3 applied layer by layer to one input vector, Python integers."""
    x = list(inputs)
    for layer, (w, b) in zip(layers, weights, strict=True):
        out = []
        for o in range(layer.out_channels):
            acc = wrap32(int(b[o]) << (frac + w_shift - b_shift))
            for i in range(layer.in_channels):
                acc = wrap32(acc + wrap32(int(w[o, i]) * x[i]))
            y = round_shift(acc, w_shift)
            if layer.residual:
                y = wrap32(y + x[o])
            out.append(activation(y, layer.activation))
        x = out
    return x


def ref_cdf(mu: int, log_scale: int, latent_min: int, k: int):
    """The function cdf(i), i in 0..K, of spec 5.4."""
    spare = (1 << 24) - k
    s = clip(log_scale, -1536, 2048)
    inv = int(INV_SCALE[s + 1536])
    m = clip(mu, -(1 << 23), 1 << 23)

    def big_g(i: int) -> int:
        b = ((latent_min + i) << 8) - 128
        t = (abs(b - m) * inv) >> 20
        e = int(EXP_NEG[t]) if t < 5632 else 0
        return e >> 1 if b < m else (1 << 30) - (e >> 1)

    g0 = big_g(0)
    d = big_g(k) - g0

    def cdf(i: int) -> int:
        if d > 0:
            return i + (big_g(i) - g0) * spare // d
        return i + i * spare // k

    return cdf


def ref_cdf_table(mu: int, log_scale: int, latent_min: int, k: int) -> list[int]:
    cdf = ref_cdf(mu, log_scale, latent_min, k)
    return [cdf(i) for i in range(k + 1)]


def find_symbol(cdf, k: int, q: int) -> int:
    """The s in 0..K-1 with cdf(s) <= q < cdf(s + 1), by bisection (cdf is increasing)."""
    lo, hi = 0, k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cdf(mid) <= q:
            lo = mid
        else:
            hi = mid
    return lo


def wavefront_order(height: int, width: int, r: int) -> list[tuple[int, int]]:
    """Spec 5.2: sorted by d = x + (r + 1) y, then by y."""
    positions = [(y, x) for y in range(height) for x in range(width)]
    return sorted(positions, key=lambda p: (p[1] + (r + 1) * p[0], p[0]))


def ref_model(grid_values, y, x, header, arm_weights, coarser=()):
    """(mu, log_scale) at (y, x) from the latents decoded so far (spec 5.3); v2: coarser[k - 1]
    is the decoded grid g + k (None where it does not exist), v2 5.2a."""
    h, w = len(grid_values), len(grid_values[0])
    dys, dxs = context_offsets(header.n_ctx_rowcol)
    ctx = []
    for dy, dx in zip(dys.tolist(), dxs.tolist(), strict=True):
        yy, xx = y + dy, x + dx
        inside = 0 <= yy < h and 0 <= xx < w
        ctx.append((grid_values[yy][xx] << ARM_FRAC) if inside else 0)
    for k in range(1, header.cross_grids + 1):
        grid = coarser[k - 1]
        ctx.append(0 if grid is None else int(grid[y >> k][x >> k]) << ARM_FRAC)
    q = header.arm_quant
    mu, log_scale = ref_layer_stack(
        ctx, header.arm_layers, arm_weights, ARM_FRAC, q.w_shift, q.b_shift
    )
    return mu, log_scale


def ref_decode_grid(header, g, arm_weights, data: bytes, coarser=()):
    """Spec 5.5 literally; returns (latents, error message or None)."""
    grid = header.grids[g]
    h, w, lmin, k = grid.height, grid.width, grid.latent_min, grid.alphabet_size
    if k == 1:
        return np.full((h, w), lmin, dtype=np.int32), None
    words = [int(v) for v in np.frombuffer(data, dtype="<u4")]
    n, pos, state = len(words), 0, 0
    if n:
        if words[0] == 0:
            return None, f"grid {g}: invalid substream start"
        state, pos = words[0], 1
        while pos < n and state < 1 << 32:
            state, pos = (state << 32) | words[pos], pos + 1
    values = [[0] * w for _ in range(h)]
    for y, x in wavefront_order(h, w, header.n_ctx_rowcol):
        mu, log_scale = ref_model(values, y, x, header, arm_weights, coarser)
        cdf = ref_cdf(mu, log_scale, lmin, k)
        q = state & ((1 << 24) - 1)
        s = find_symbol(cdf, k, q)
        assert cdf(s) <= q < cdf(s + 1)
        state = (state >> 24) * (cdf(s + 1) - cdf(s)) + q - cdf(s)
        assert state < 1 << 64
        if state < 1 << 32 and pos < n:
            state, pos = (state << 32) | words[pos], pos + 1
        values[y][x] = lmin + s
    if pos != n or state != 0:
        return None, f"grid {g}: substream size mismatch"
    return np.array(values, dtype=np.int32).reshape(h, w), None


def ans_encode(symbols_cdfs: list[tuple[int, int]]) -> bytes:
    """A tiny rANS encoder, the inverse of spec 5.5 (constriction's AnsCoder, 24-bit
    precision): symbols_cdfs = [(cdf(s), f(s))] in decoding order."""
    state, pushed = 0, []
    for c, f in reversed(symbols_cdfs):
        if (state >> 40) >= f:
            pushed.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // f) << 24) | (c + state % f)
    while state:
        pushed.append(state & 0xFFFFFFFF)
        state >>= 32
    return np.array(pushed[::-1], dtype="<u4").tobytes()


def ref_coarser(header, g, latents):
    """The coarser grids g + 1 .. g + C of v2 5.2a (None past the coarsest)."""
    n = header.n_grids
    return [latents[g + k] if g + k < n else None for k in range(1, header.cross_grids + 1)]


def ref_encode_grid(header, g, arm_weights, latents: np.ndarray, coarser=()) -> bytes:
    grid = header.grids[g]
    values = latents.tolist()
    coded = []
    for y, x in wavefront_order(grid.height, grid.width, header.n_ctx_rowcol):
        mu, log_scale = ref_model(values, y, x, header, arm_weights, coarser)
        cdf = ref_cdf(mu, log_scale, grid.latent_min, grid.alphabet_size)
        s = values[y][x] - grid.latent_min
        coded.append((cdf(s), cdf(s + 1) - cdf(s)))
    return ans_encode(coded)


def with_substreams(header: StreamHeader, substreams: list[bytes]) -> StreamHeader:
    grids = tuple(
        GridInfo(gi.height, gi.width, gi.latent_min, gi.latent_max, len(data))
        for gi, data in zip(header.grids, substreams, strict=True)
    )
    return StreamHeader(**{**header.__dict__, "grids": grids})


# ---------------------------------------------------------------------------
# Reference: upsampling (spec 6) and synthesis (spec 7)


def ref_upsample_pass(a: list[int], n_out: int, taps: list[int], shift: int) -> list[int]:
    n_in, out = len(a), []
    for i in range(n_out):
        j, acc = i >> 1, 0
        for k, v in enumerate(taps):
            if i % 2 == 0:
                m = k >> 1 if k % 2 == 0 else -((k + 1) >> 1)
            else:
                m = -(k >> 1) if k % 2 == 0 else (k + 1) >> 1
            acc = wrap32(acc + wrap32(v * a[clip(j + m, 0, n_in - 1)]))
        out.append(round_shift(acc, shift))
    return out


def ref_dense_latent(header, taps, grids) -> np.ndarray:
    taps = [int(v) for v in taps]
    out = np.zeros((header.n_grids, header.height, header.width), dtype=np.int64)
    for g, grid in enumerate(grids):
        x = [[wrap32(int(v) << SYN_FRAC) for v in row] for row in grid.tolist()]
        for level in range(g, 0, -1):
            h_out, w_out = grid_shape(header.height, header.width, level - 1)
            columns = [
                ref_upsample_pass([row[c] for row in x], h_out, taps, header.ups_shift)
                for c in range(len(x[0]))
            ]
            x = [
                ref_upsample_pass([col[i] for col in columns], w_out, taps, header.ups_shift)
                for i in range(h_out)
            ]
        out[g] = np.array(x)
    return out.astype(np.int32)


def ref_synthesis(header, weights, dense: np.ndarray) -> np.ndarray:
    x = dense.astype(np.int64)
    q = header.syn_quant
    h, w = header.height, header.width
    for layer, (wt, b) in zip(header.syn_layers, weights, strict=True):
        k, p = layer.kernel, layer.kernel // 2
        padded = np.pad(x, ((0, 0), (p, p), (p, p)), mode="edge")  # = clip of spec 7
        out = np.empty((layer.out_channels, h, w), dtype=np.int64)
        for o in range(layer.out_channels):
            acc = np.full((h, w), wrap32(int(b[o]) << (SYN_FRAC + q.w_shift - q.b_shift)))
            for i in range(layer.in_channels):
                for ky in range(k):
                    for kx in range(k):
                        product = wrap32_array(
                            int(wt[o, i, ky, kx]) * padded[i, ky : ky + h, kx : kx + w]
                        )
                        acc = wrap32_array(acc + product)
            if q.w_shift:
                y = wrap32_array(acc + (1 << (q.w_shift - 1))) >> q.w_shift
            else:
                y = acc
            if layer.residual:
                y = wrap32_array(y + x[o])
            if layer.activation == 1:
                y = np.maximum(y, 0)
            elif layer.activation == 2:
                y = np.where(y >= 0, y, y >> 4)
            out[o] = y
        x = out
    return x.astype(np.int32)


# ---------------------------------------------------------------------------
# Tests: tables


def test_tables_have_spec_sizes_and_end_values():
    assert EXP_NEG.shape == (5632,) and EXP_NEG.dtype == np.int64
    assert INV_SCALE.shape == (3585,) and INV_SCALE.dtype == np.int64
    assert EXP_NEG[0] == 1 << 30 and INV_SCALE[1536] == 1 << 20
    assert np.all(np.diff(EXP_NEG) <= 0) and np.all(np.diff(INV_SCALE) <= 0)


# ---------------------------------------------------------------------------
# Tests: latents


def test_laplace_model_matches_literal_cdf():
    """laplace_batch's bounds cdf(guess), cdf(guess + 1) and the kernels' cdf equal spec
    5.4's integer cdf, including at the clipping limits of mu and log_scale and for
    alphabets up to 65536 symbols."""
    from coolchic_ref import latents as kernels

    rng = np.random.default_rng(5)
    for k in (2, 3, 26, 1000, 65536):
        lmin = int(rng.integers(-32768, 32768 - k + 1))
        centre = (lmin + k // 2) << 8
        mus = [0, centre, centre + 77, (lmin << 8) - 300, (lmin + k) << 8, 1 << 23, -(1 << 23)]
        mus += [(1 << 23) + 9, -(1 << 23) - 9] + [
            int(v) for v in rng.integers(-(1 << 24), 1 << 24, 7)
        ]
        log_scales = [-1536, 2048, -1600, 2100, 0, 300] + [
            int(v) for v in rng.integers(-1536, 2049, 10)
        ]
        n = min(len(mus), len(log_scales))
        model = np.zeros((kernels._MODEL_ROWS, kernels.TILE), dtype=np.int64)
        kernels.laplace_batch(
            model,
            np.array(mus[:n], dtype=np.int32),
            np.array(log_scales[:n], dtype=np.int32),
            n,
            k,
            np.int64(lmin),
        )
        spare = (1 << 24) - k
        for t in range(n):
            cdf = ref_cdf(mus[t], log_scales[t], lmin, k)
            guess = int(model[kernels.M_GUESS, t])
            assert model[kernels.M_C_GUESS, t] == cdf(guess), (k, t)
            assert model[kernels.M_C_NEXT, t] == cdf(guess + 1), (k, t)
            column = [int(model[row, t]) for row in (kernels.M_G0, kernels.M_MASS)]
            mu, inv = int(model[kernels.M_MU, t]), int(model[kernels.M_INV, t])
            points = range(k + 1) if k <= 1000 else rng.integers(0, k + 1, 300)
            for i in points:
                value = kernels._cdf(int(i), k, spare, *column, lmin, mu, inv)
                assert value == cdf(int(i)), (k, t, int(i))


def test_context_offsets_follow_spec_order():
    dys, dxs = context_offsets(1)
    assert list(zip(dys.tolist(), dxs.tolist(), strict=True)) == [
        (-1, -1),
        (-1, 0),
        (-1, 1),
        (0, -1),
    ]
    for r in (1, 2, 3):
        assert context_offsets(r)[0].size == context_size(r)


def _roundtrip_case(
    rng, width, height, n_grids, r, arm, ranges, w_max, b_max, arm_shifts=(8, 8), cross_grids=0
):
    header = make_header(
        width,
        height,
        n_grids,
        r,
        arm=arm,
        ranges=ranges,
        arm_shifts=arm_shifts,
        cross_grids=cross_grids,
    )
    arm_weights = random_weights(rng, header.arm_layers, 0, w_max, b_max)
    latents = []
    for grid in header.grids:
        centre = (grid.latent_min + grid.latent_max) // 2
        values = centre + np.round(rng.laplace(0, 2.0, size=(grid.height, grid.width)))
        latents.append(np.clip(values, grid.latent_min, grid.latent_max).astype(np.int32))
    substreams = [
        b""
        if grid.is_constant
        else ref_encode_grid(header, g, arm_weights, latents[g], ref_coarser(header, g, latents))
        for g, grid in enumerate(header.grids)
    ]
    return with_substreams(header, substreams), arm_weights, latents, substreams


ROUNDTRIP_CASES = [
    # width, height, n_grids, r, arm layers, latent ranges, |w| max, |b| max
    (1, 1, 1, 1, ((2, False, 0),), [(-3, 3)], 64, 64),
    (5, 1, 1, 2, ((2, False, 0),), [(-3, 3)], 64, 64),
    (1, 6, 1, 3, ((2, False, 0),), [(-3, 3)], 64, 64),
    (3, 4, 2, 3, ((24, False, 1), (2, False, 0)), [(-5, 5), (0, 1)], 40, 200),
    (
        9,
        7,
        3,
        2,
        ((12, True, 2), (5, False, 1), (2, False, 0)),
        [(-20, 20), (-2, 2), (3, 3)],
        40,
        200,
    ),
    (
        13,
        11,
        2,
        1,
        ((8, False, 2), (8, True, 1), (2, False, 0)),
        [(-1, 0), (-30000, 30000)],
        300,
        500,
    ),
    (16, 5, 1, 3, ((64, False, 1), (2, False, 0)), [(-100, 100)], 20, 1000),
]


@pytest.mark.parametrize("case", range(len(ROUNDTRIP_CASES)))
def test_latents_roundtrip_with_reference_encoder(case):
    rng = np.random.default_rng(100 + case)
    header, arm_weights, latents, substreams = _roundtrip_case(rng, *ROUNDTRIP_CASES[case])
    decoded = decode_latent_grids(header, arm_weights, substreams)
    for g in range(header.n_grids):
        assert decoded[g].dtype == np.int32
        np.testing.assert_array_equal(decoded[g], latents[g])
        reference, error = ref_decode_grid(header, g, arm_weights, substreams[g])
        assert error is None
        np.testing.assert_array_equal(reference, latents[g])


CROSS_GRID_CASES = [
    # width, height, n_grids, r, arm layers, latent ranges, |w| max, |b| max, C
    (5, 7, 3, 2, ((12, False, 1), (2, False, 0)), [(-20, 20), (-4, 4), (-2, 2)], 300, 300, 2),
    (1, 9, 4, 1, ((2, False, 0),), [(-6, 6), (-3, 3), (1, 1), (-1, 1)], 3000, 300, 3),
    (13, 1, 3, 3, ((8, False, 2), (2, False, 0)), [(-9, 9), (-9, 9), (-9, 9)], 2000, 400, 1),
    (11, 6, 7, 1, ((6, False, 1), (2, False, 0)), [(-9, 9)] * 6 + [(4, 4)], 2000, 400, 6),
]


@pytest.mark.parametrize("case", range(len(CROSS_GRID_CASES)))
def test_cross_grid_latents_match_literal_transcription(case):
    """v2 5.2a: the kernel decodes what the literal model (coarser grids in the context)
    coded, and the literal decoder agrees; the weights are large enough that the
    cross-grid inputs move mu and log_scale."""
    rng = np.random.default_rng(500 + case)
    *params, cross_grids = CROSS_GRID_CASES[case]
    header, arm_weights, latents, substreams = _roundtrip_case(
        rng, *params, cross_grids=cross_grids
    )
    assert header.arm_layers[0].in_channels == context_size(header.n_ctx_rowcol) + cross_grids
    decoded = decode_latent_grids(header, arm_weights, substreams)
    for g in range(header.n_grids):
        np.testing.assert_array_equal(decoded[g], latents[g])
        reference, error = ref_decode_grid(
            header, g, arm_weights, substreams[g], ref_coarser(header, g, latents)
        )
        assert error is None
        np.testing.assert_array_equal(reference, latents[g])


@pytest.mark.parametrize("threads", [1, 2])
def test_cross_grid_pipeline_in_small_chunks(monkeypatch, threads):
    """v2 with the finest grid decoded in chunks of one diagonal on its own thread,
    each waiting for the coarser grids that another thread decodes ahead: the same
    latents as the literal coder, with one thread or two; and an invalid coarser
    substream is still reported (the waiting finest grid stops)."""
    import coolchic_ref.latents as latents_module

    monkeypatch.setattr(latents_module, "CHUNK_DIAGONALS", 1)
    monkeypatch.setattr(latents_module, "thread_count", lambda: threads)
    for case in (0, 3):
        rng = np.random.default_rng(500 + case)
        *params, cross_grids = CROSS_GRID_CASES[case]
        header, arm_weights, latents, substreams = _roundtrip_case(
            rng, *params, cross_grids=cross_grids
        )
        decoded = decode_latent_grids(header, arm_weights, substreams)
        for g in range(header.n_grids):
            np.testing.assert_array_equal(decoded[g], latents[g])
        bad = list(substreams)
        bad[1] = b"\x00\x00\x00\x00" + substreams[1][4:]
        with pytest.raises(StreamError, match="^grid 1: invalid substream start$"):
            decode_latent_grids(header, arm_weights, bad)


def test_cross_grid_context_is_read():
    """Decoding a v2 grid without its coarser grids' values gives other latents: the
    cross-grid rows are not ignored (the round trip above would pass if they were
    zero on both sides)."""
    rng = np.random.default_rng(77)
    header, arm_weights, latents, substreams = _roundtrip_case(
        rng,
        9,
        9,
        2,
        1,
        ((8, False, 1), (2, False, 0)),
        [(-30, 30), (-30, 30)],
        3000,
        300,
        cross_grids=1,
    )
    blind, error = ref_decode_grid(header, 0, arm_weights, substreams[0], [np.zeros((5, 5))])
    assert error is not None or not np.array_equal(blind, latents[0])


def test_latents_full_alphabet_and_hostile_arm():
    """K = 65536 and ARM weights large enough to wrap every activation."""
    rng = np.random.default_rng(7)
    arm = ((8, False, 2), (8, True, 0), (2, False, 1))
    header = make_header(4, 3, 1, 2, arm=arm, ranges=[(-32768, 32767)], arm_shifts=(0, 0))
    arm_weights = random_weights(rng, header.arm_layers, 0, 32767, 32767)
    latents = [rng.integers(-32768, 32768, size=(3, 4)).astype(np.int32)]
    substreams = [ref_encode_grid(header, 0, arm_weights, latents[0])]
    header = with_substreams(header, substreams)
    decoded = decode_latent_grids(header, arm_weights, substreams)
    np.testing.assert_array_equal(decoded[0], latents[0])


@pytest.mark.parametrize("seed", range(12))
def test_latents_random_words_match_reference(seed):
    """Any words: same latents, or the same rejection, as the literal decoder."""
    rng = np.random.default_rng(seed)
    width, height = int(rng.integers(1, 9)), int(rng.integers(1, 9))
    r = int(rng.integers(1, 4))
    k_half = int(rng.choice([1, 3, 40, 2000, 32767]))
    arm = ((int(rng.integers(1, 10)), False, int(rng.integers(0, 3))), (2, False, 0))
    n_words = int(rng.integers(0, 6))
    words = rng.integers(0 if seed % 4 == 0 else 1, 1 << 32, size=n_words, dtype=np.uint64)
    data = words.astype("<u4").tobytes()
    header = make_header(
        width, height, 1, r, arm=arm, ranges=[(-k_half, k_half)], substream_bytes=[len(data)]
    )
    w_shift = int(rng.integers(0, 17))
    header = StreamHeader(**{**header.__dict__, "arm_quant": ModuleQuant(w_shift, 0, 0, 0)})
    arm_weights = random_weights(rng, header.arm_layers, 0, 2000, 2000)
    reference, error = ref_decode_grid(header, 0, arm_weights, data)
    if error is None:
        decoded = decode_latent_grids(header, arm_weights, [data])
        np.testing.assert_array_equal(decoded[0], reference)
    else:
        with pytest.raises(StreamError, match=error):
            decode_latent_grids(header, arm_weights, [data])
    # Without the end check the kernel always returns latents, equal to the
    # reference's up to the point where the reference rejected.
    decoded = decode_latent_grids(header, arm_weights, [data], check_end=False)
    assert decoded[0].shape == (height, width)


def test_latents_in_small_batches(monkeypatch):
    """Diagonals longer than one ARM batch (TILE positions). The batch size is a
    compile-time constant, so this runs where the kernels are plain Python."""
    import coolchic_ref.latents as latents_module

    if not numba.config.DISABLE_JIT:
        pytest.skip("TILE can only be patched with NUMBA_DISABLE_JIT=1")
    monkeypatch.setattr(latents_module, "TILE", 3)
    rng = np.random.default_rng(9)
    header, arm_weights, latents, substreams = _roundtrip_case(
        rng, 13, 9, 2, 1, ((5, False, 2), (2, False, 0)), [(-6, 6), (-2, 2)], 40, 100
    )
    decoded = decode_latent_grids(header, arm_weights, substreams)
    for g in range(header.n_grids):
        np.testing.assert_array_equal(decoded[g], latents[g])


def test_balance_bins_assigns_every_grid_once():
    bins = balance_bins([100, 25, 7, 2, 1], 2)
    assert sorted(g for members in bins for g in members) == [0, 1, 2, 3, 4]
    assert bins[0] == [0] and len(bins) == 2
    assert balance_bins([5], 4) == [[0]]


def test_latent_errors_name_the_grid():
    rng = np.random.default_rng(3)
    header, arm_weights, latents, substreams = _roundtrip_case(
        rng, 6, 5, 3, 1, ((2, False, 0),), [(-4, 4), (-4, 4), (-4, 4)], 32, 32
    )
    bad_start = list(substreams)
    bad_start[2] = b"\x00\x00\x00\x00" + substreams[2][4:]
    with pytest.raises(StreamError, match="^grid 2: invalid substream start$"):
        decode_latent_grids(header, arm_weights, bad_start)
    longer = list(substreams)
    longer[1] = substreams[1] + b"\x01\x00\x00\x00"
    with pytest.raises(StreamError, match="^grid 1: substream size mismatch$"):
        decode_latent_grids(with_substreams(header, longer), arm_weights, longer)
    shorter = list(substreams)
    shorter[0] = substreams[0][:-4]
    with pytest.raises(StreamError, match="^grid 0: substream size mismatch$"):
        decode_latent_grids(with_substreams(header, shorter), arm_weights, shorter)


def test_constant_grids_need_no_substream():
    header = make_header(5, 3, 3, 1, ranges=[(4, 4), (-7, -7), (0, 0)])
    arm_weights = random_weights(np.random.default_rng(0), header.arm_layers, 0, 5, 5)
    decoded = decode_latent_grids(header, arm_weights, [b"", b"", b""])
    assert [int(d[0, 0]) for d in decoded] == [4, -7, 0]
    assert [d.shape for d in decoded] == [(3, 5), (2, 3), (1, 2)]


def test_tiny_encoder_matches_constriction():
    """The test encoder is constriction's AnsCoder (24-bit precision, words reversed)
    when the integer frequencies are given as probabilities f - 1 (sum 2^24 - K)."""
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(11)
    symbols, cdfs, probabilities = [], [], []
    for _ in range(300):
        k = int(rng.integers(2, 60))
        cdf = ref_cdf_table(int(rng.integers(-3000, 3000)), int(rng.integers(-600, 900)), -30, k)
        s = int(rng.integers(0, k))
        symbols.append(s)
        cdfs.append((cdf[s], cdf[s + 1] - cdf[s]))
        freqs = np.diff(np.array(cdf, dtype=np.int64))
        probabilities.append((freqs - 1).astype(np.float64))
    coder = constriction.stream.stack.AnsCoder()
    for s, p in zip(reversed(symbols), reversed(probabilities), strict=True):
        model = constriction.stream.model.Categorical(p, perfect=False)
        coder.encode_reverse(np.array([s], dtype=np.int32), model)
    theirs = np.asarray(coder.get_compressed(), dtype=np.uint32)[::-1]
    ours = np.frombuffer(ans_encode(cdfs), dtype="<u4")
    np.testing.assert_array_equal(ours, theirs)


# ---------------------------------------------------------------------------
# Tests: upsampling


UPSAMPLING_CASES = [
    # width, height, n_grids, T, ups_shift, |tap| max, |latent| max
    (1, 1, 1, 1, 0, 100, 10),
    (1, 1, 3, 4, 8, 300, 10),
    (1, 9, 4, 3, 5, 300, 30),
    (9, 1, 4, 8, 16, 20000, 30),
    (7, 5, 3, 2, 8, 300, 200),
    (24, 17, 5, 8, 7, 300, 100),
    (33, 10, 6, 5, 0, 32767, 32767),  # wraps
    (10, 33, 7, 6, 12, 32767, 32767),  # wraps
]


@pytest.mark.parametrize("case", UPSAMPLING_CASES)
def test_upsampling_matches_reference(case):
    width, height, n_grids, n_taps, shift, tap_max, latent_max = case
    rng = np.random.default_rng(sum(case))
    header = make_header(width, height, n_grids, ups_half_taps=n_taps, ups_shift=shift)
    taps = rng.integers(-tap_max, tap_max + 1, size=n_taps).astype(np.int32)
    grids = [
        rng.integers(-latent_max, latent_max + 1, size=grid_shape(height, width, g)).astype(
            np.int32
        )
        for g in range(n_grids)
    ]
    dense = upsample_to_dense(header, taps, grids)
    assert dense.dtype == np.int32 and dense.shape == (n_grids, height, width)
    np.testing.assert_array_equal(dense, ref_dense_latent(header, taps, grids))


# ---------------------------------------------------------------------------
# Tests: synthesis


SYNTHESIS_CASES = [
    # width, height, n_grids, layers (out, kernel, residual, act), shifts, |w| max, |x| max
    (1, 1, 1, ((1, 7, False, 0),), (8, 12), 300, 5000),
    (1, 6, 2, ((4, 3, False, 1), (4, 5, True, 2), (1, 1, False, 0)), (8, 12), 300, 5000),
    (6, 1, 2, ((4, 1, False, 2), (3, 7, False, 0)), (6, 14), 300, 5000),
    (2, 3, 3, ((5, 5, False, 2), (5, 1, True, 1), (3, 3, True, 0)), (0, 0), 300, 5000),
    (
        131,
        4,
        7,
        ((32, 1, False, 1), (16, 1, False, 1), (16, 3, True, 1), (3, 3, False, 0)),
        (8, 12),
        100,
        8000,
    ),
    (
        9,
        8,
        3,
        ((12, 1, False, 2), (12, 1, True, 1), (12, 7, True, 2), (3, 1, True, 0)),
        (16, 28),
        32767,
        1 << 30,
    ),
    (
        20,
        9,
        2,
        ((5, 3, False, 1), (5, 3, True, 2), (5, 5, True, 0), (1, 3, False, 1)),
        (3, 1),
        32767,
        1 << 31,
    ),
    (3, 2, 1, ((64, 1, False, 1), (64, 1, True, 2), (1, 3, False, 0)), (8, 12), 2000, 20000),
    # rows longer than one tile, more rows than bands
    (1100, 3, 2, ((2, 3, True, 2), (4, 1, False, 1), (1, 5, False, 0)), (8, 12), 300, 5000),
    (5, 130, 3, ((3, 1, True, 2), (3, 3, False, 0)), (8, 12), 300, 5000),
]


@pytest.mark.parametrize("case", range(len(SYNTHESIS_CASES)))
def test_synthesis_matches_reference(case):
    width, height, n_grids, layers, shifts, w_max, x_max = SYNTHESIS_CASES[case]
    rng = np.random.default_rng(500 + case)
    header = make_header(width, height, n_grids, syn=layers, syn_shifts=shifts)
    weights = random_weights(rng, header.syn_layers, 2, w_max, w_max)
    dense = rng.integers(-x_max, x_max, size=(n_grids, height, width)).astype(np.int32)
    out = run_synthesis(header, weights, dense)
    assert out.dtype == np.int32 and out.shape == (layers[-1][0], height, width)
    np.testing.assert_array_equal(out, ref_synthesis(header, weights, dense))


# ---------------------------------------------------------------------------
# Tests: independence from the thread count and from the JIT


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.int32).tobytes())
    return h.hexdigest()


_PIPELINE_SNIPPET = textwrap.dedent(
    """
    import numpy as np
    from coolchic_ref.latents import decode_latent_grids
    from coolchic_ref.synthesis import run_synthesis
    from coolchic_ref.upsampling import upsample_to_dense

    def run_pipeline(header, arm_weights, substreams, taps, syn_weights):
        grids = decode_latent_grids(header, arm_weights, substreams)
        dense = upsample_to_dense(header, taps, grids)
        return grids, dense, run_synthesis(header, syn_weights, dense)
    """
)


def _pipeline_inputs():
    rng = np.random.default_rng(42)
    header, arm_weights, latents, substreams = _roundtrip_case(
        rng, 11, 9, 3, 2, ((6, False, 2), (2, False, 0)), [(-6, 6), (-3, 3), (-2, 2)], 40, 100
    )
    syn = ((6, 1, False, 1), (6, 3, True, 2), (3, 3, False, 0))
    header = StreamHeader(
        **{**header.__dict__, "syn_layers": make_header(11, 9, 3, syn=syn).syn_layers}
    )
    taps = np.array([170, 60, -30, -9], dtype=np.int32)
    syn_weights = random_weights(rng, header.syn_layers, 2, 300, 300)
    return header, arm_weights, substreams, taps, syn_weights


def test_output_does_not_depend_on_thread_count(monkeypatch):
    """Latents, dense latent and synthesis output with 1 thread and with all of them;
    the row kernels split even this small picture into pieces (SERIAL_BELOW = 0)."""
    import coolchic_ref.parallel as parallel

    monkeypatch.setattr(parallel, "SERIAL_BELOW", 0)
    namespace: dict = {}
    exec(_PIPELINE_SNIPPET, namespace)
    inputs = _pipeline_inputs()
    digests = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        numba.set_num_threads(threads)
        try:
            grids, dense, out = namespace["run_pipeline"](*inputs)
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        digests.append(_digest(*grids, dense, out))
    assert len(set(digests)) == 1


def test_pure_python_execution_gives_the_same_result():
    """NUMBA_DISABLE_JIT=1 runs the kernels as Python: same bits."""
    inputs = _pipeline_inputs()
    namespace: dict = {}
    exec(_PIPELINE_SNIPPET, namespace)
    grids, dense, out = namespace["run_pipeline"](*inputs)
    expected = _digest(*grids, dense, out)
    script = _PIPELINE_SNIPPET + textwrap.dedent(
        """
            import json
            from tests.test_kernels import _digest, _pipeline_inputs
            grids, dense, out = run_pipeline(*_pipeline_inputs())
            print(json.dumps(_digest(*grids, dense, out)))
            """
    )
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    # `python -c` imports from its working directory: the repository root.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


def test_every_kernel_test_passes_without_the_jit():
    """The kernel tests above, run again as plain Python (NUMBA_DISABLE_JIT=1)."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    command = [
        sys.executable,
        "-m",
        "pytest",
        os.path.abspath(__file__),
        "-q",
        "-p",
        "no:cacheprovider",
        "-k",
        "not without_the_jit and not pure_python and not thread_count",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
