"""Entropy decoding of the latent grids (spec section 5).

Each non-constant grid is decoded from its own rANS substream (5.5) in wavefront
order (5.2). The coder and the model are separate, as in constriction: the
rANS coder (`rans_start`, `rans_quantile`, `rans_advance`, `rans_end_status`)
holds the state and reads words; the model gives, for a quantile q, the symbol
whose cdf interval holds it (`laplace_symbol`). For every diagonal the causal
contexts of all its positions are gathered into a planar [dim_arm][n] int32
block (`gather_contexts`), the fixed-point ARM (5.3, layer rule 2.3) runs over
the block with the position loop innermost, and the part of the integer
Laplace cdf (5.4) that does not depend on the rANS state is computed for the
whole batch (`laplace_batch`); then the diagonal's symbols are decoded in
order. The cdf is evaluated on demand: first the symbol whose interval holds
mu, else a galloping search from there; no per-latent table is ever built.

The per-symbol helpers are inlined and take scalars (and the substream), and
the spec tables are module globals: with arrays passed to the per-symbol
helpers (Numba reference-counts each), grid decoding measured 13-35 % slower.

All grids live in one flat int32 buffer (raster order per grid);
`decode_diagonals` decodes a range of diagonals of one grid and can resume (the
rANS state is kept in an array), writing each value there as soon as its
diagonal is done. In version 1 grids are independent: they are spread over
thread_count() Python threads in bins of roughly equal size, one call
per grid (the kernel releases the GIL; a thread pool avoids the long
compilation of a parallel Numba loop around it). In version 2 with C > 0
cross-grid values (v2 5.2a), grid g reads grids g + 1 .. g + C, which are
decoded before it, coarsest first; the kernel reads the cross-grid values
straight from the flat buffer (`gather_cross`, located by `cross_grid_layout`).
With two threads or more, the grid decoded last (the finest, about 3/4 of the
latents) is decoded on its own thread in chunks of CHUNK_DIAGONALS diagonals,
while another thread decodes the coarser ones, one chunk of each in turn:
diagonal d of grid g reads grid g + k only up to its diagonal d >> k, and each
chunk waits until those are done. The result does not depend on the number of
threads or on their timing.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator

import numpy as np
from numba import njit

from .errors import StreamError
from .laplace_tables import EXP_NEG, INV_SCALE
from .layer_kernels import MAX_WIDTH, PackedLayers, dense_layer
from .parallel import run_alongside, thread_count
from .syntax import ARM_FRAC, PRECISION, StreamHeader

# Positions per ARM batch; a diagonal of a 768-wide grid (at most 192 positions
# for r = 3) fits in one batch.
TILE = 256

STATUS_OK = 0
STATUS_BAD_START = 1
STATUS_SIZE_MISMATCH = 2
_STATUS_MESSAGES = {
    STATUS_BAD_START: "invalid substream start",
    STATUS_SIZE_MISMATCH: "substream size mismatch",
}

# rANS state arithmetic is unsigned 64-bit: Numba turns any uint64/int64 mix
# into float64, so every operand of the state is an explicit np.uint64.
_LOW24 = np.uint64((1 << PRECISION) - 1)
_SHIFT24 = np.uint64(PRECISION)
_SHIFT32 = np.uint64(32)
_TWO32 = np.uint64(1 << 32)
_ONE30 = 1 << 30
_TOTAL = 1 << PRECISION
_MAX_LOG_SCALE = 2048
_MIN_LOG_SCALE = -1536
_MU_LIMIT = 1 << 23

# int32 copies of the spec tables (every entry < 2^31): half the cache footprint.
# Module globals, which the kernels compile in as constants.
_EXP_NEG_I32 = EXP_NEG.astype(np.int32)
_INV_SCALE_I32 = INV_SCALE.astype(np.int32)


def context_offsets(n_ctx_rowcol: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of the causal context in spec 5.2 order, as two int64 arrays."""
    r = n_ctx_rowcol
    dys, dxs = [], []
    for dy in range(-r, 1):
        for dx in range(-r, r + 1):
            if dy < 0 or dx < 0:
                dys.append(dy)
                dxs.append(dx)
    return np.array(dys, dtype=np.int64), np.array(dxs, dtype=np.int64)


@njit(cache=True, inline="always")
def _boundary_mass(i, latent_min, mu, inv_scale_q20):
    """G(i) of spec 5.4: Laplace cumulative mass at boundary latent_min + i - 1/2, Q30.

    Written with clamps and selects rather than branches: mu varies from one
    latent to the next, so branches here would be mispredicted.
    """
    b = ((latent_min + i) << 8) - 128
    t = (abs(b - mu) * inv_scale_q20) >> 20
    last = _EXP_NEG_I32.shape[0] - 1
    e = np.int64(_EXP_NEG_I32[min(t, last)])
    e = np.int64(0) if t > last else e
    half = e >> 1
    return half if b < mu else _ONE30 - half


@njit(cache=True, inline="always")
def _cdf(i, k, spare, g0, mass, latent_min, mu, inv_scale_q20):
    """cdf(i) of spec 5.4 (int64); spare = 2^24 - K, mass = D = G(K) - G(0)."""
    if mass > 0:
        g = _boundary_mass(i, latent_min, mu, inv_scale_q20)
        return i + ((g - g0) * spare) // mass
    return i + (i * spare) // k


@njit(cache=True)
def _search_symbol(q, guess, c_guess, c_next, k, spare, g0, mass, latent_min, mu, inv):
    """The symbol s with cdf(s) <= q < cdf(s + 1) when it is not `guess`.

    c_guess = cdf(guess), c_next = cdf(guess + 1). Gallops away from the guess
    (steps 1, 2, 4, ...) to bracket q, then bisects: O(log distance) cdf
    evaluations, at most about 2 log2(K). Returns (s, cdf(s), cdf(s + 1)).
    """
    if q < c_guess:
        hi = guess
        c_hi = c_guess
        step = 1
        while True:
            probe = hi - step
            if probe <= 0:
                lo = 0
                c_lo = np.int64(0)
                break
            c_probe = _cdf(probe, k, spare, g0, mass, latent_min, mu, inv)
            if c_probe <= q:
                lo = probe
                c_lo = c_probe
                break
            hi = probe
            c_hi = c_probe
            step *= 2
    else:
        lo = guess + 1
        c_lo = c_next
        step = 1
        while True:
            probe = lo + step
            if probe >= k:
                hi = k
                c_hi = np.int64(_TOTAL)
                break
            c_probe = _cdf(probe, k, spare, g0, mass, latent_min, mu, inv)
            if c_probe > q:
                hi = probe
                c_hi = c_probe
                break
            lo = probe
            c_lo = c_probe
            step *= 2
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        c_mid = _cdf(mid, k, spare, g0, mass, latent_min, mu, inv)
        if c_mid <= q:
            lo = mid
            c_lo = c_mid
        else:
            hi = mid
            c_hi = c_mid
    return lo, c_lo, c_hi


# --- the rANS coder (spec 5.5) -------------------------------------------------------
# The coder holds the state and the read position in the substream's words; it
# knows nothing of the model. Per symbol it hands the model a quantile q in
# [0, 2^24) and takes back the symbol's interval [c_lo, c_hi) of the cdf.


@njit(cache=True, inline="always")
def rans_start(words):
    """(state, pos, status): the initial state read from the first words (spec 5.5).

    An empty substream starts with state 0 (every symbol then decodes from q = 0);
    a non-empty one whose first word is 0 is invalid (STATUS_BAD_START).
    """
    n_words = words.shape[0]
    state = np.uint64(0)
    pos = 0
    if n_words > 0:
        if words[0] == 0:
            return state, pos, STATUS_BAD_START
        state = np.uint64(words[0])
        pos = 1
        while pos < n_words and state < _TWO32:
            state = (state << _SHIFT32) | np.uint64(words[pos])
            pos += 1
    return state, pos, STATUS_OK


@njit(cache=True, inline="always")
def rans_quantile(state):
    """q = state mod 2^24: the cdf value whose symbol is decoded next (int64)."""
    return np.int64(state & _LOW24)


@njit(cache=True, inline="always")
def rans_advance(state, pos, words, q, c_lo, c_hi):
    """(state, pos) after the symbol with interval [c_lo, c_hi) that holds q, with the
    renormalisation: one word is read when the state falls below 2^32 (spec 5.5)."""
    state = (state >> _SHIFT24) * np.uint64(c_hi - c_lo) + np.uint64(q - c_lo)
    if state < _TWO32 and pos < words.shape[0]:
        state = (state << _SHIFT32) | np.uint64(words[pos])
        pos += 1
    return state, pos


@njit(cache=True, inline="always")
def rans_end_status(state, pos, words):
    """STATUS_OK if every word was read and the state is back to 0 (spec 5.5)."""
    return STATUS_OK if pos == words.shape[0] and state == 0 else STATUS_SIZE_MISMATCH


# --- the model: ARM and integer Laplace (spec 5.2-5.4) ----------------------------
# Everything that does not depend on the rANS state is computed for a whole
# batch of positions of one diagonal; the serial loop then asks `laplace_symbol`.

# Rows of the per-batch model array (int64 [_MODEL_ROWS, TILE]).
M_MU, M_INV, M_G0, M_MASS, M_GUESS, M_C_GUESS, M_C_NEXT = range(7)
_MODEL_ROWS = 7


@njit(cache=True)
def gather_contexts(ctx, d, y0, n, r, ctx_dy, ctx_dx, diag_first, diag_start, diag_latents):
    """Causal contexts (spec 5.2) of positions y0..y0+n-1 of diagonal d, planar Q8 int32
    into ctx[j][t]; context positions outside the grid are 0."""
    for j in range(ctx_dy.shape[0]):
        # Context j of position (y0 + t, .) is row y0 + dy + t of diagonal
        # d + dx + (r + 1) dy; rows outside that diagonal are outside the grid.
        row = ctx[j]
        src_d = d + ctx_dx[j] + (r + 1) * ctx_dy[j]
        src_y0 = y0 + ctx_dy[j]
        t_lo = n
        t_hi = n
        if src_d >= 0:
            src_first = diag_first[src_d]
            src_count = diag_start[src_d + 1] - diag_start[src_d]
            t_lo = min(n, max(0, src_first - src_y0))
            t_hi = max(t_lo, min(n, src_first + src_count - src_y0))
        for t in range(t_lo):
            row[t] = 0
        if t_hi > t_lo:
            src = diag_latents[diag_start[src_d] + src_y0 + t_lo - diag_first[src_d] :]
            dst = row[t_lo:]
            for t in range(t_hi - t_lo):
                dst[t] = src[t] << ARM_FRAC
        for t in range(t_hi, n):
            row[t] = 0


# Columns of the cross-grid layout (int64 [C, CROSS_COLUMNS]; cross_grid_layout).
X_OFFSET, X_HEIGHT, X_WIDTH, X_SHIFT = range(4)
CROSS_COLUMNS = 4


@njit(cache=True)
def gather_cross(ctx, first_row, latents, cross, d, y0, n, r):
    """Cross-grid values (v2 5.2a) of positions y0..y0+n-1 of diagonal d into rows
    first_row.. of ctx (Q8): row first_row + c holds the latent at (y >> shift, x >> shift)
    of the raster grid at latents[cross[c, X_OFFSET]:] (cross: cross_grid_layout), 0 where
    that offset is negative."""
    for c in range(cross.shape[0]):
        row = ctx[first_row + c]
        offset = cross[c, X_OFFSET]
        if offset < 0:
            for t in range(n):
                row[t] = 0
            continue
        width = cross[c, X_WIDTH]
        shift = cross[c, X_SHIFT]
        for t in range(n):
            y = y0 + t
            x = d - (r + 1) * y
            row[t] = latents[offset + (y >> shift) * width + (x >> shift)] << ARM_FRAC


def cross_grid_layout(
    header: StreamHeader, level: int, offsets: np.ndarray, available: list[bool]
) -> np.ndarray:
    """int64 (C, CROSS_COLUMNS): where the cross-grid values of grid `level` (v2 5.2a) are.

    Row k - 1 describes grid level + k in the flat latent buffer (grid g at
    offsets[g], raster order): offset, height, width and the shift k; the offset
    is -1 (every value 0) where that grid does not exist, or is not decoded before
    grid `level` (available[g] False; only a decoding order other than the
    spec's gets there).
    """
    layout = np.zeros((header.cross_grids, CROSS_COLUMNS), dtype=np.int64)
    layout[:, X_OFFSET] = -1
    for k in range(1, header.cross_grids + 1):
        coarse = level + k
        if coarse < header.n_grids and available[coarse]:
            grid = header.grids[coarse]
            layout[k - 1] = (offsets[coarse], grid.height, grid.width, k)
    return layout


@njit(cache=True)
def laplace_batch(model, mus, log_scales, n, k, lmin):
    """The state-independent part of spec 5.4 for positions 0..n-1 into `model`.

    mus, log_scales: the ARM outputs (Q8); per position: clipped mu, 1/scale
    (Q20), G(0), D = G(K) - G(0), the guess (the symbol whose interval holds
    mu) and cdf(guess), cdf(guess + 1).

    The two cdf divisions per position stay integer divisions, which keep this
    loop scalar: a float64 quotient corrected by the integer remainder gives the
    same integers 2-4 times faster, but the decoder keeps floating point off its
    normative path (tools/results/README.md, "Laplace batch").
    """
    spare = np.int64(_TOTAL - k)
    for t in range(n):
        log_scale = min(max(np.int64(log_scales[t]), _MIN_LOG_SCALE), _MAX_LOG_SCALE)
        inv = np.int64(_INV_SCALE_I32[log_scale - _MIN_LOG_SCALE])
        mu = min(max(np.int64(mus[t]), -_MU_LIMIT), _MU_LIMIT)
        g0 = _boundary_mass(0, lmin, mu, inv)
        mass = _boundary_mass(k, lmin, mu, inv) - g0
        guess = min(max(((mu + 128) >> 8) - lmin, 0), k - 1)
        model[M_MU, t] = mu
        model[M_INV, t] = inv
        model[M_G0, t] = g0
        model[M_MASS, t] = mass
        model[M_GUESS, t] = guess
        model[M_C_GUESS, t] = _cdf(guess, k, spare, g0, mass, lmin, mu, inv)
        model[M_C_NEXT, t] = _cdf(guess + 1, k, spare, g0, mass, lmin, mu, inv)


@njit(cache=True, inline="always")
def laplace_symbol(q, k, lmin, mu, inv, g0, mass, guess, c_guess, c_next):
    """(s, cdf(s), cdf(s + 1)) with cdf(s) <= q < cdf(s + 1) (spec 5.4, 5.5), for one
    position's model (a column of `laplace_batch`'s array): the guess when it holds
    q, else a search. Scalars only: no array crosses this boundary per symbol."""
    if c_guess <= q < c_next:
        return guess, c_guess, c_next
    return _search_symbol(q, guess, c_guess, c_next, k, _TOTAL - k, g0, mass, lmin, mu, inv)


# --- one grid ---------------------------------------------------------------------


def diagonal_count(height: int, width: int, r: int) -> int:
    """Number of diagonals d = x + (r + 1) y (spec 5.2) of a height x width grid."""
    return width + (r + 1) * (height - 1)


def diagonal_layout(height: int, width: int, r: int) -> tuple[np.ndarray, np.ndarray]:
    """(diag_first, diag_start) of a grid's diagonals d = x + (r + 1) y (spec 5.2), int64:
    diagonal d holds rows diag_first[d].., stored at diag_start[d].. in diagonal-major
    order (diag_start has one entry more: the grid's size)."""
    d = np.arange(diagonal_count(height, width, r), dtype=np.int64)
    diag_first = np.maximum(0, (d - (width - 1) + r) // (r + 1))  # floor division
    diag_last = np.minimum(height - 1, d // (r + 1))
    diag_start = np.zeros(d.shape[0] + 1, dtype=np.int64)
    np.cumsum(diag_last - diag_first + 1, out=diag_start[1:])
    return diag_first, diag_start


@njit(cache=True, nogil=True)
def decode_diagonals(
    d_begin,
    d_end,
    height,
    width,
    r,
    latent_min,
    k,
    words,
    coder,
    diag_first,
    diag_start,
    diag_latents,
    latents,
    grid_offset,
    ctx_dy,
    ctx_dx,
    cross,
    desc,
    w_grouped,
    bias_init,
    w_shift,
    check_end,
):
    """Decode diagonals d_begin..d_end-1 of one grid (spec 5.2-5.5), resumable.

    A grid is decoded by calls on consecutive ranges from d_begin = 0 (which reads
    the initial rANS state) to the last diagonal; coder (uint64 [2]: rANS state,
    read position in words) carries the coder between calls, diag_latents (int32,
    height * width) the decoded values in diagonal-major order (diag_first,
    diag_start: diagonal_layout), whose contexts are consecutive in memory. Each
    value is also stored, as soon as its diagonal is done, in raster order at
    latents[grid_offset:] (int32, the flat buffer of every grid), where finer
    grids read it (v2 5.2a).

    words: the substream as uint32 words; r: n_ctx_rowcol; k: alphabet size K;
    ctx_dy, ctx_dx: context_offsets(r); cross: cross_grid_layout, C = 0 rows in
    version 1; desc, w_grouped, bias_init, w_shift: the ARM as PackedLayers
    (weights Q`w_shift`, activations Q8). Returns STATUS_OK, STATUS_BAD_START
    (latents then unwritten) or, if check_end and the range ends the grid,
    STATUS_SIZE_MISMATCH.
    """
    if d_begin == 0:
        state, pos, status = rans_start(words)
        if status != STATUS_OK:
            return status
    else:
        state = coder[0]
        pos = np.int64(coder[1])
    n_diagonals = diag_first.shape[0]

    n_layers = desc.shape[0]
    # Every row a layer reads was written before (context rows, then each layer's
    # outputs): no initialisation needed.
    buf_a = np.empty((MAX_WIDTH, TILE), dtype=np.int32)
    buf_b = np.empty((MAX_WIDTH, TILE), dtype=np.int32)
    acc = np.empty((MAX_WIDTH, TILE), dtype=np.int32)
    model = np.empty((_MODEL_ROWS, TILE), dtype=np.int64)
    lmin = np.int64(latent_min)
    step = r + 1
    for d in range(d_begin, d_end):
        y_first = diag_first[d]
        y_last = y_first + diag_start[d + 1] - diag_start[d] - 1
        for y0 in range(y_first, y_last + 1, TILE):
            n = min(TILE, y_last + 1 - y0)
            # Model: ARM on the batch's contexts, then the Laplace parameters.
            gather_contexts(
                buf_a, d, y0, n, r, ctx_dy, ctx_dx, diag_first, diag_start, diag_latents
            )
            if cross.shape[0] > 0:
                gather_cross(buf_a, ctx_dy.shape[0], latents, cross, d, y0, n, r)
            x_in, x_out = buf_a, buf_b
            for layer in range(n_layers):
                dense_layer(x_in, n, desc[layer], w_grouped, bias_init, w_shift, acc, x_out)
                x_in, x_out = x_out, x_in
            laplace_batch(model, x_in[0], x_in[1], n, k, lmin)
            # Coder: one symbol per position, in order.
            out = diag_latents[diag_start[d] + y0 - y_first :]
            for t in range(n):
                q = rans_quantile(state)
                s, c_lo, c_hi = laplace_symbol(
                    q,
                    k,
                    lmin,
                    model[M_MU, t],
                    model[M_INV, t],
                    model[M_G0, t],
                    model[M_MASS, t],
                    model[M_GUESS, t],
                    model[M_C_GUESS, t],
                    model[M_C_NEXT, t],
                )
                state, pos = rans_advance(state, pos, words, q, c_lo, c_hi)
                out[t] = lmin + s
            # Position (y, d - step y) in raster order (width - step may be negative).
            raster_at = grid_offset + d + (width - step) * y0
            for t in range(n):
                latents[raster_at + (width - step) * t] = out[t]
    coder[0] = state
    coder[1] = np.uint64(pos)
    if check_end and d_end == n_diagonals:
        return rans_end_status(state, pos, words)
    return STATUS_OK


# --- every grid: who decodes what, and when -------------------------------------------

# Diagonals per call of decode_diagonals when a grid is decoded while the coarser
# grids it reads are still being decoded by another thread: between calls its
# thread waits until they are far enough. At 768x512 a chunk of grid 0 is about
# 11,000 latents (about 1 ms), so the Python work between calls (tens of µs)
# stays small.
CHUNK_DIAGONALS = 64

_FINISHED = object()  # what next() gives for a grid with no chunk left


def balance_bins(sizes: list[int], n_bins: int) -> list[list[int]]:
    """Longest-processing-time assignment of items 0..len(sizes)-1 to at most n_bins bins."""
    n_bins = max(1, min(n_bins, len(sizes)))
    loads = [0] * n_bins
    members: list[list[int]] = [[] for _ in range(n_bins)]
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        target = min(range(n_bins), key=lambda b: (loads[b], b))
        members[target].append(item)
        loads[target] += sizes[item]
    return members


class _Progress:
    """Diagonals decoded per grid, shared by the threads that decode the grids.

    A thread about to decode diagonals of grid g waits until every grid that g
    reads has reached the diagonals it needs; a failing grid stops every grid
    that comes after it in the decoding order (their outcome no longer matters).
    """

    def __init__(self, n_grids: int, rank: dict[int, int]) -> None:
        self.done = [0] * n_grids
        self.rank = rank  # position of each coded grid in the decoding order
        self.stop_rank = len(rank)  # grids ranked at or after this one stop
        self.condition = threading.Condition()

    def publish(self, g: int, diagonals: int) -> None:
        with self.condition:
            self.done[g] = diagonals
            self.condition.notify_all()

    def stop_after(self, g: int) -> None:
        """Grid g failed, or its thread raised: stop the grids decoded after it."""
        with self.condition:
            self.stop_rank = min(self.stop_rank, self.rank[g])
            self.condition.notify_all()

    def wait(self, g: int, needs: list[tuple[int, int]]) -> bool:
        """Wait until done[h] >= n for each (h, n) in needs; False if grid g must stop."""
        with self.condition:
            self.condition.wait_for(
                lambda: self.stop_rank <= self.rank[g] or all(self.done[h] >= n for h, n in needs)
            )
            return self.stop_rank > self.rank[g]


def decode_latent_grids(
    header: StreamHeader,
    arm_weights: list[tuple[np.ndarray, np.ndarray]],
    substreams: list[bytes | memoryview],
    *,
    check_end: bool = True,
) -> list[np.ndarray]:
    """Decode every latent grid (spec 5): per grid an int32 array (h_g, w_g) of latent values.

    arm_weights[l] = (W int32 (out, in) Q`arm_w_shift`, B int32 (out,) Q`arm_b_shift`).
    substreams[g] holds grid g's `substream_bytes` bytes (ignored for constant
    grids). Raises StreamError "grid g: invalid substream start" or "grid g:
    substream size mismatch" for the failing grid decoded first in
    header.decoding_order() (version 1: the lowest-numbered one).
    `check_end=False` skips the end-of-substream check (benchmarks on random words).
    The arrays are views of one buffer holding every grid.
    """
    n_grids = header.n_grids
    if len(substreams) != n_grids:
        raise ValueError(f"{len(substreams)} substreams for {n_grids} grids")
    r = header.n_ctx_rowcol
    grids = header.grids
    sizes = [grid.height * grid.width for grid in grids]
    offsets = np.concatenate(([0], np.cumsum(sizes))).astype(np.int64)
    latents = np.zeros(int(offsets[-1]), dtype=np.int32)
    result = [
        latents[offsets[g] : offsets[g + 1]].reshape(grid.height, grid.width)
        for g, grid in enumerate(grids)
    ]
    order = [g for g in header.decoding_order() if not grids[g].is_constant]
    for g, grid in enumerate(grids):
        if grid.is_constant:
            result[g][:] = grid.latent_min
        elif len(substreams[g]) != grid.substream_bytes:
            raise ValueError(f"grid {g}: {len(substreams[g])}-byte substream, header differs")
    if not order:
        return result

    quant = header.arm_quant
    arm = PackedLayers(header.arm_layers, arm_weights, ARM_FRAC, quant.w_shift, quant.b_shift)
    ctx_dy, ctx_dx = context_offsets(r)
    status = [STATUS_OK] * n_grids
    progress = _Progress(n_grids, {g: index for index, g in enumerate(order)})
    # A grid reads the coarser grids decoded before it (v2 5.1), and the constant ones.
    available = [grid.is_constant for grid in grids]
    cross: dict[int, np.ndarray] = {}
    needs: dict[int, list[tuple[int, int]]] = {}
    grid_of_offset = {int(offsets[g]): g for g in range(n_grids)}
    for g in order:
        cross[g] = cross_grid_layout(header, g, offsets, available)
        available[g] = True
        # Diagonal d of grid g reads grid h = g + k, shift k, only at diagonals up
        # to d >> k: (x >> k) + (r + 1)(y >> k) <= (x + (r + 1) y) / 2^k. Taken
        # from the layout the kernel reads, so what is waited for is what is read.
        needs[g] = [
            (grid_of_offset[int(offset)], int(shift))
            for offset, shift in cross[g][:, [X_OFFSET, X_SHIFT]]
            if offset >= 0 and not grids[grid_of_offset[int(offset)]].is_constant
        ]

    def n_diagonals(g: int) -> int:
        return diagonal_count(grids[g].height, grids[g].width, r)

    def decode_chunks(g: int, chunk: int | None) -> Iterator[None]:
        """Decode grid g, one chunk of `chunk` diagonals (None: all) per step."""
        grid = grids[g]
        words = np.frombuffer(substreams[g], dtype="<u4").astype(np.uint32)
        coder = np.zeros(2, dtype=np.uint64)
        diag_first, diag_start = diagonal_layout(grid.height, grid.width, r)
        diag_latents = np.zeros(sizes[g], dtype=np.int32)
        total = n_diagonals(g)
        step = total if chunk is None else chunk
        for d_begin in range(0, total, step):
            d_end = min(d_begin + step, total)
            wanted = [(h, min(((d_end - 1) >> shift) + 1, n_diagonals(h))) for h, shift in needs[g]]
            if not progress.wait(g, wanted):
                return
            status[g] = decode_diagonals(
                d_begin,
                d_end,
                grid.height,
                grid.width,
                r,
                grid.latent_min,
                grid.alphabet_size,
                words,
                coder,
                diag_first,
                diag_start,
                diag_latents,
                latents,
                offsets[g],
                ctx_dy,
                ctx_dx,
                cross[g],
                arm.desc,
                arm.w_grouped,
                arm.bias_init,
                arm.w_shift,
                check_end,
            )
            if status[g] != STATUS_OK:
                progress.stop_after(g)
                return
            progress.publish(g, d_end)
            yield

    def decode_list(members: list[int], chunk: int | None) -> None:
        """Decode `members` (in decoding order) in rounds, each advancing every unfinished
        grid by one chunk: the coarser grids of the list stay ahead of the finer ones
        (a chunk of grid g + k covers 2^k chunks of grid g), so no grid waits for its
        own thread, and a finer grid on another thread can start after one chunk of
        each, not after the whole coarser grids."""
        steps = [decode_chunks(g, chunk) for g in members]
        try:
            while steps:
                steps = [step for step in steps if next(step, _FINISHED) is not _FINISHED]
        except BaseException:
            progress.stop_after(members[0])
            raise

    n_threads = thread_count()
    if header.cross_grids == 0:
        # Independent grids: spread over the threads in bins of about equal size.
        bins = balance_bins([sizes[g] for g in order], n_threads)
        lists = [[order[i] for i in sorted(members)] for members in bins]
        chunk = None
    elif n_threads > 1 and len(order) > 1:
        # The grid decoded last (the finest, about 3/4 of the latents) on one
        # thread, in chunks, each waiting for the coarser grids it reads, which
        # the other thread decodes ahead of it.
        lists = [order[-1:], order[:-1]]
        chunk = CHUNK_DIAGONALS
    else:
        lists = [order]
        chunk = None
    # decode_diagonals releases the GIL: Python threads decode the lists in parallel.
    # Only lists[0] (the finest grid of a v2 stream) waits for the others, so it runs
    # on this thread.
    run_alongside(*(functools.partial(decode_list, members, chunk) for members in lists))
    for g in order:
        if status[g] != STATUS_OK:
            raise StreamError(f"grid {g}: {_STATUS_MESSAGES[int(status[g])]}")
    return result
