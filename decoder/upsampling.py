"""Upsampling of the latent grids to the dense latent (spec section 6).

All grids that have reached level l are upsampled together to level l - 1, so
one row-parallel pass (parallel.parallel_rows) per level covers every channel.
The vertical pass of one output row and the horizontal pass of that same row
are fused (the horizontal pass of a row only reads that row), which keeps the
intermediate row in cache;
the arithmetic is exactly the spec's: vertical pass, round_shift, horizontal
pass, round_shift, all int32 that wrap.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layer_kernels import wrap32
from .parallel import parallel_rows
from .syntax import SYN_FRAC, StreamHeader, grid_shape


def tap_offsets(n_taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Input offsets m of taps k = 0..T-1 for even and odd outputs (spec 6), int64."""
    even = [k >> 1 if k % 2 == 0 else -((k + 1) >> 1) for k in range(n_taps)]
    odd = [-(k >> 1) if k % 2 == 0 else (k + 1) >> 1 for k in range(n_taps)]
    return np.array(even, dtype=np.int64), np.array(odd, dtype=np.int64)


@njit(cache=True, inline="always")
def _round_shift_store(acc, n, rounding, shift, out):
    """out[0:n] = round_shift(acc[0:n], shift) (spec 2.2)."""
    for t in range(n):
        out[t] = np.int64(wrap32(np.int64(acc[t]) + rounding)) >> shift


def upsample_level(
    src: np.ndarray,
    dst: np.ndarray,
    grid: np.ndarray,
    taps: np.ndarray,
    offsets_even: np.ndarray,
    offsets_odd: np.ndarray,
    shift: int,
) -> None:
    """One level of spec 6 for every channel at once.

    src: int32 (C, h_in, w_in), Q12, the channels at level l. dst: int32
    (C + 1, h_out, w_out) at level l - 1: dst[0] = grid << 12 (grid: int32 latents
    of level l - 1), dst[c + 1] = src[c] upsampled (vertical then horizontal).
    The output rows (of every channel) run on parallel_rows' threads.
    """
    n_rows = dst.shape[0] * dst.shape[1]
    parallel_rows(
        _upsample_rows, n_rows, dst.shape[2], src, dst, grid, taps, offsets_even, offsets_odd, shift
    )


@njit(cache=True, nogil=True)
def _upsample_rows(first, last, src, dst, grid, taps, offsets_even, offsets_odd, shift):
    """Rows first..last-1 of upsample_level's output, counted over (channel, row) of dst."""
    n_channels, h_in, w_in = src.shape
    h_out, w_out = dst.shape[1], dst.shape[2]
    n_taps = taps.shape[0]
    # Replicate padding of the intermediate row covers every horizontal offset.
    # (An int64 from the start: a literal 1 would make Numba compile _upsample_row
    # a second time, for a Literal[int] pad, 1.2 s of a cold start.)
    pad = np.int64(1)
    for k in range(n_taps):
        pad = max(pad, abs(offsets_even[k]), abs(offsets_odd[k]))
    rounding = np.int64(0)
    if shift > 0:
        rounding = np.int64(1) << (shift - 1)
    scratch = np.empty((5, w_in + 2 * pad), dtype=np.int32)
    for row in range(first, last):
        c = row // h_out - 1
        i = row % h_out
        out_row = dst[c + 1, i]
        if c < 0:
            grid_row = grid[i]
            for x in range(w_out):
                out_row[x] = grid_row[x] << SYN_FRAC
        else:
            _upsample_row(
                src[c],
                i,
                taps,
                offsets_even,
                offsets_odd,
                pad,
                rounding,
                shift,
                scratch,
                out_row,
            )


@njit(cache=True)
def _upsample_row(src, i, taps, offsets_even, offsets_odd, pad, rounding, shift, scratch, out_row):
    """Output row i of one channel: vertical pass on src (h_in, w_in), then horizontal.

    scratch: int32 (5, >= w_in + 2 pad) work rows.
    """
    h_in, w_in = src.shape
    w_out = out_row.shape[0]
    acc = scratch[0]
    line = scratch[1]
    acc_even = scratch[2]
    acc_odd = scratch[3]
    out_odd = scratch[4]
    for x in range(w_in):
        acc[x] = 0
    j = i >> 1
    for k in range(taps.shape[0]):
        m = offsets_odd[k] if i & 1 else offsets_even[k]
        src_row = src[min(max(j + m, 0), h_in - 1)]
        weight = np.int64(taps[k])
        for x in range(w_in):
            acc[x] = wrap32(np.int64(acc[x]) + weight * src_row[x])
    _round_shift_store(acc, w_in, rounding, shift, line[pad:])
    for x in range(pad):
        line[x] = line[pad]
        line[pad + w_in + x] = line[pad + w_in - 1]

    for x in range(w_in):
        acc_even[x] = 0
        acc_odd[x] = 0
    for k in range(taps.shape[0]):
        weight = np.int64(taps[k])
        src_even = line[pad + offsets_even[k] :]
        src_odd = line[pad + offsets_odd[k] :]
        for x in range(w_in):
            acc_even[x] = wrap32(np.int64(acc_even[x]) + weight * src_even[x])
            acc_odd[x] = wrap32(np.int64(acc_odd[x]) + weight * src_odd[x])
    out_even = acc
    _round_shift_store(acc_even, w_in, rounding, shift, out_even)
    _round_shift_store(acc_odd, w_in, rounding, shift, out_odd)
    # Output 2x sits a quarter sample left of input x, output 2x + 1 a quarter right.
    for x in range(w_out >> 1):
        out_row[2 * x] = out_even[x]
        out_row[2 * x + 1] = out_odd[x]
    if w_out & 1:
        out_row[w_out - 1] = out_even[w_out >> 1]


def upsample_to_dense(
    header: StreamHeader, ups_taps: np.ndarray, latent_grids: list[np.ndarray]
) -> np.ndarray:
    """Dense latent (spec 6): int32 (n_grids, H, W), Q12.

    ups_taps: the T folded taps v[0..T-1], Q`ups_shift`. latent_grids[g]: int32
    (h_g, w_g) latent values (integers).
    """
    n_grids = header.n_grids
    if len(latent_grids) != n_grids:
        raise ValueError(f"{len(latent_grids)} latent grids for {n_grids}")
    taps = np.ascontiguousarray(ups_taps, dtype=np.int32)
    offsets_even, offsets_odd = tap_offsets(taps.shape[0])
    grids = [np.ascontiguousarray(grid, dtype=np.int32) for grid in latent_grids]
    for g, grid in enumerate(grids):
        if grid.shape != grid_shape(header.height, header.width, g):
            raise ValueError(f"latent grid {g} has shape {grid.shape}")
    # Channels of the current level l, grids l..N-1, each Q12 at level-l size.
    current = (grids[n_grids - 1].astype(np.int32) << SYN_FRAC)[np.newaxis]
    for level in range(n_grids - 1, 0, -1):
        h_out, w_out = grid_shape(header.height, header.width, level - 1)
        upsampled = np.empty((n_grids - level + 1, h_out, w_out), dtype=np.int32)
        upsample_level(
            current, upsampled, grids[level - 1], taps, offsets_even, offsets_odd, header.ups_shift
        )
        current = upsampled
    return current
