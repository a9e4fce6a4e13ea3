"""Synthesis (spec section 7): the convolution stack from the dense latent to the output.

The layers are run in *stages*: a stage is one layer of any kernel size
followed by every 1x1 layer up to the next layer with kernel > 1. Within a
stage a 1x1 layer needs only the same pixel of its input, so a tile of pixels
goes through the whole stage in small [channel][pixel] buffers; only a stage's
output is stored for the whole picture (int32 [C][H][W + 2 pad], with the
horizontal replicate padding that the next stage's kernel needs). Rows run in
parallel (parallel.parallel_rows), each piece of rows with its own buffers;
each pixel's arithmetic is the spec's whatever the tiling or the number of
threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .layer_kernels import (
    D_ACT,
    D_ADDS_INPUT,
    D_B_OFF,
    D_IN,
    D_N_GROUPS,
    D_OUT,
    D_TAP_OFF,
    D_W_OFF,
    GROUP,
    PackedLayers,
    accumulate_group,
    dense_layer,
    finish_layer,
)
from .parallel import parallel_rows
from .syntax import SYN_FRAC, StreamHeader

# Pixels per tile: a whole row up to MAX_TILE. Long inner loops amortize the
# per-loop set-up (weights, alias checks); [channels][tile] buffers stay in L2.
MAX_TILE = 1024


@njit(cache=True)
def conv_layer_tile(
    src,
    pad,
    y,
    x0,
    n,
    desc_row,
    tap_channel,
    tap_dy,
    tap_dx,
    w_grouped,
    bias_init,
    w_shift,
    acc,
    input_buf,
    x_out,
):
    """Layer desc_row (any kernel) at pixels (y, x0..x0+n-1) of src (C, H, W + 2 pad).

    Replicate padding (spec 7): rows are clipped here, columns are padded in src.
    Writes int32 [out][0:n] to x_out.
    """
    height = src.shape[1]
    c_out = desc_row[D_OUT]
    w_off = desc_row[D_W_OFF]
    tap_off = desc_row[D_TAP_OFF]
    col0 = x0 + pad
    for g in range(desc_row[D_N_GROUPS]):
        t0 = tap_off + g * GROUP
        accumulate_group(
            acc,
            c_out,
            n,
            w_grouped,
            w_off + g * c_out * GROUP,
            _tap_row(src, height, y, col0, tap_channel[t0], tap_dy[t0], tap_dx[t0]),
            _tap_row(src, height, y, col0, tap_channel[t0 + 1], tap_dy[t0 + 1], tap_dx[t0 + 1]),
            _tap_row(src, height, y, col0, tap_channel[t0 + 2], tap_dy[t0 + 2], tap_dx[t0 + 2]),
            _tap_row(src, height, y, col0, tap_channel[t0 + 3], tap_dy[t0 + 3], tap_dx[t0 + 3]),
            bias_init,
            desc_row[D_B_OFF],
            g == 0,
        )
    adds_input = desc_row[D_ADDS_INPUT]
    if adds_input:
        for o in range(c_out):
            res_src = src[o, y, col0:]
            res_o = input_buf[o]
            for t in range(n):
                res_o[t] = res_src[t]
    finish_layer(acc, input_buf, c_out, n, w_shift, adds_input, desc_row[D_ACT], x_out)


@njit(cache=True, inline="always")
def _tap_row(src, height, y, col0, channel, dy, dx):
    """The input row segment a tap reads: src[channel, clip(y + dy), col0 + dx:]."""
    return src[channel, min(max(y + dy, 0), height - 1), col0 + dx :]


def run_stage(
    src: np.ndarray,
    src_pad: int,
    first: int,
    last: int,
    desc: np.ndarray,
    tap_channel: np.ndarray,
    tap_dy: np.ndarray,
    tap_dx: np.ndarray,
    w_grouped: np.ndarray,
    bias_init: np.ndarray,
    w_shift: int,
    dst: np.ndarray,
    dst_pad: int,
) -> None:
    """Layers first..last-1 (first any kernel, the others 1x1) from src to dst.

    src: int32 (C_in, H, W + 2 src_pad); dst: int32 (C_out, H, W + 2 dst_pad), Q12;
    both padded columns replicate the edge columns. Rows run on parallel_rows' threads.
    """
    parallel_rows(
        _stage_rows,
        src.shape[1],
        dst.shape[0] * dst.shape[2],
        src,
        src_pad,
        first,
        last,
        desc,
        tap_channel,
        tap_dy,
        tap_dx,
        w_grouped,
        bias_init,
        w_shift,
        dst,
        dst_pad,
    )


@njit(cache=True, nogil=True)
def _stage_rows(
    y_first,
    y_last,
    src,
    src_pad,
    first,
    last,
    desc,
    tap_channel,
    tap_dy,
    tap_dx,
    w_grouped,
    bias_init,
    w_shift,
    dst,
    dst_pad,
):
    """Rows y_first..y_last-1 of run_stage."""
    width = src.shape[2] - 2 * src_pad
    c_out = desc[last - 1, D_OUT]
    channels = 1
    for layer in range(first, last):
        channels = max(channels, desc[layer, D_IN], desc[layer, D_OUT])
    n_tiles = (width + MAX_TILE - 1) // MAX_TILE
    tile = (width + n_tiles - 1) // n_tiles
    buf_a = np.empty((channels, tile), dtype=np.int32)
    buf_b = np.empty((channels, tile), dtype=np.int32)
    acc = np.empty((channels, tile), dtype=np.int32)
    for y in range(y_first, y_last):
        for tile_index in range(n_tiles):
            x0 = tile_index * tile
            n = min(tile, width - x0)
            conv_layer_tile(
                src,
                src_pad,
                y,
                x0,
                n,
                desc[first],
                tap_channel,
                tap_dy,
                tap_dx,
                w_grouped,
                bias_init,
                w_shift,
                acc,
                buf_b,
                buf_a,
            )
            x_in, x_out = buf_a, buf_b
            for layer in range(first + 1, last):
                dense_layer(x_in, n, desc[layer], w_grouped, bias_init, w_shift, acc, x_out)
                x_in, x_out = x_out, x_in
            for o in range(c_out):
                out_row = dst[o, y, dst_pad + x0 :]
                in_row = x_in[o]
                for t in range(n):
                    out_row[t] = in_row[t]
        for o in range(c_out):
            row = dst[o, y]
            for p in range(dst_pad):
                row[p] = row[dst_pad]
                row[dst_pad + width + p] = row[dst_pad + width - 1]


def pad_columns(src: np.ndarray, dst: np.ndarray, pad: int) -> None:
    """dst (C, H, W + 2 pad) = src (C, H, W) with `pad` replicated edge columns each side."""
    parallel_rows(_pad_rows, src.shape[0] * src.shape[1], dst.shape[2], src, dst, pad)


@njit(cache=True, nogil=True)
def _pad_rows(first, last, src, dst, pad):
    """Rows first..last-1 of pad_columns, counted over (channel, row)."""
    height, width = src.shape[1], src.shape[2]
    for row in range(first, last):
        c = row // height
        y = row % height
        src_row = src[c, y]
        dst_row = dst[c, y]
        for x in range(width):
            dst_row[pad + x] = src_row[x]
        for p in range(pad):
            dst_row[p] = src_row[0]
            dst_row[pad + width + p] = src_row[width - 1]


def stage_bounds(kernels: list[int]) -> list[tuple[int, int]]:
    """(first, last) layer ranges of the stages: a new stage at layer 0 and at every kernel > 1."""
    starts = [index for index, kernel in enumerate(kernels) if index == 0 or kernel > 1]
    return list(zip(starts, [*starts[1:], len(kernels)], strict=True))


def run_synthesis(
    header: StreamHeader, syn_weights: list[tuple[np.ndarray, np.ndarray]], dense_latent: np.ndarray
) -> np.ndarray:
    """Synthesis output (spec 7): int32 (n_channels, H, W), Q12 (4096 = largest sample value).

    syn_weights[l] = (W int32 (out, in, k, k) Q`syn_w_shift`, B int32 (out,)
    Q`syn_b_shift`). dense_latent: int32 (n_grids, H, W), Q12.
    """
    height, width = header.height, header.width
    if dense_latent.shape != (header.n_grids, height, width):
        raise ValueError(f"dense latent has shape {dense_latent.shape}")
    quant = header.syn_quant
    layers = header.syn_layers
    packed = PackedLayers(layers, syn_weights, SYN_FRAC, quant.w_shift, quant.b_shift)
    kernels = [layer.kernel for layer in layers]
    stages = stage_bounds(kernels)
    pad = kernels[0] // 2
    current = np.ascontiguousarray(dense_latent, dtype=np.int32)
    if pad:
        padded = np.empty((header.n_grids, height, width + 2 * pad), dtype=np.int32)
        pad_columns(current, padded, pad)
        current = padded
    for index, (first, last) in enumerate(stages):
        next_pad = kernels[stages[index + 1][0]] // 2 if index + 1 < len(stages) else 0
        c_out = layers[last - 1].out_channels
        out = np.empty((c_out, height, width + 2 * next_pad), dtype=np.int32)
        run_stage(
            current,
            pad,
            first,
            last,
            packed.desc,
            packed.tap_channel,
            packed.tap_dy,
            packed.tap_dx,
            packed.w_grouped,
            packed.bias_init,
            packed.w_shift,
            out,
            next_pad,
        )
        current, pad = out, next_pad
    return current
