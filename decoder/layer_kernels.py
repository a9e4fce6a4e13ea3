"""The fixed-point layer of spec section 2.3, as Numba kernels shared by the ARM and the synthesis.

Activations are int32 that wrap (spec 2.2), stored planar: [channel][position],
the position loop innermost so that LLVM vectorizes it. A layer's weights are
repacked once per stream into *groups* of GROUP taps (a tap is one input
channel, or for a convolution one (channel, ky, kx) triple) and outputs are
updated in pairs: each pass over the positions loads GROUP input rows and
updates two accumulator rows, instead of one load and one accumulator update
per multiply-add. The last group is padded with zero weights, which add
nothing. The multiplies (vpmulld) then bound the speed: about 20-25 GMAC/s
per core on this AVX2 machine.

Every kernel also runs as plain Python (NUMBA_DISABLE_JIT=1) with the same
results: values are widened to int64 before arithmetic and reduced with
`wrap32` before every int32 store (NumPy refuses out-of-range stores).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from .syntax import Activation, LayerSpec

GROUP = 4  # taps per multiply-accumulate step
MAX_WIDTH = 64  # widest layer (spec 3.3)

# Columns of the per-layer descriptor array (int64 [n_layers, DESC_COLUMNS]).
D_IN, D_OUT, D_KERNEL, D_ADDS_INPUT, D_ACT, D_N_GROUPS, D_W_OFF, D_TAP_OFF, D_B_OFF = range(9)
DESC_COLUMNS = 9

# Activation codes as plain ints (compile-time constants in the kernels).
_RELU = int(Activation.RELU)
_LEAKYRELU = int(Activation.LEAKYRELU)


@njit(cache=True, inline="always")
def wrap32(value):
    """Two's-complement reduction into int32 (spec 2.2 wrap32) of an int64.

    The decoder's only definition: kernels call it inline; Python code calls it
    on np.int64 values (the dispatcher compiles it for that type).
    """
    return np.int32(np.int64(value))


class PackedLayers:
    """A stack of layers repacked for the grouped kernels.

    desc: int64 [L, DESC_COLUMNS]; tap_channel, tap_dy, tap_dx: int64, one entry per
    (padded) tap of each layer, at desc[l, D_TAP_OFF]; dy, dx are the offsets
    ky - k // 2, kx - k // 2. w_grouped: int32 [group][out][GROUP] per layer at
    desc[l, D_W_OFF]. bias_init: int32, the initial accumulator
    wrap32(B[o] << (frac + w_shift - b_shift)) of each output, at desc[l, D_B_OFF].
    """

    def __init__(
        self,
        layers: Sequence[LayerSpec],
        weights: Sequence[tuple[np.ndarray, np.ndarray]],
        frac: int,
        w_shift: int,
        b_shift: int,
    ) -> None:
        if len(layers) != len(weights):
            raise ValueError(f"{len(weights)} weight pairs for {len(layers)} layers")
        self.desc = np.zeros((len(layers), DESC_COLUMNS), dtype=np.int64)
        taps_c, taps_dy, taps_dx, grouped, biases = [], [], [], [], []
        w_off = tap_off = b_off = 0
        bias_shift = frac + w_shift - b_shift
        for index, (layer, (w, b)) in enumerate(zip(layers, weights, strict=True)):
            c_in, c_out, k = layer.in_channels, layer.out_channels, layer.kernel
            w = np.asarray(w, dtype=np.int64).reshape(c_out, c_in * k * k)
            b = np.asarray(b, dtype=np.int64).reshape(c_out)
            n_taps = c_in * k * k
            n_groups = -(-n_taps // GROUP)
            padded = np.zeros((c_out, n_groups * GROUP), dtype=np.int64)
            padded[:, :n_taps] = w
            grouped.append(padded.reshape(c_out, n_groups, GROUP).transpose(1, 0, 2).ravel())
            # Tap order = weight order W[o][i][ky][kx]; padding taps repeat tap 0.
            tap = np.zeros(n_groups * GROUP, dtype=np.int64)
            tap[:n_taps] = np.arange(n_taps)
            taps_c.append(tap // (k * k))
            taps_dy.append((tap // k) % k - k // 2)
            taps_dx.append(tap % k - k // 2)
            # |B| < 2^15 and bias_shift <= 28: the shifted bias fits int64.
            biases.append([wrap32(np.int64(int(v) << bias_shift)) for v in b])
            self.desc[index] = (
                c_in,
                c_out,
                k,
                int(layer.kind.adds_input),
                int(layer.activation),
                n_groups,
                w_off,
                tap_off,
                b_off,
            )
            w_off += n_groups * GROUP * c_out
            tap_off += n_groups * GROUP
            b_off += c_out
        self.tap_channel = np.concatenate(taps_c)
        self.tap_dy = np.concatenate(taps_dy)
        self.tap_dx = np.concatenate(taps_dx)
        self.w_grouped = np.concatenate(grouped).astype(np.int32)
        self.bias_init = np.array([v for row in biases for v in row], dtype=np.int32)
        self.w_shift = w_shift


@njit(cache=True)
def accumulate_group(acc, c_out, n, w_grouped, base, v0, v1, v2, v3, bias_init, b_off, first):
    """acc[o][0:n] (+)= sum over one group's 4 taps of w * v[0:n], for every output o.

    The first group starts from the bias term (spec 2.3) instead of acc. Outputs
    go in pairs: each input vector loaded serves two accumulator rows.
    """
    for o in range(0, c_out, 2):
        pair = o + 1 < c_out
        w_at = base + o * GROUP
        w0 = np.int64(w_grouped[w_at])
        w1 = np.int64(w_grouped[w_at + 1])
        w2 = np.int64(w_grouped[w_at + 2])
        w3 = np.int64(w_grouped[w_at + 3])
        acc_o = acc[o]
        if pair:
            u0 = np.int64(w_grouped[w_at + 4])
            u1 = np.int64(w_grouped[w_at + 5])
            u2 = np.int64(w_grouped[w_at + 6])
            u3 = np.int64(w_grouped[w_at + 7])
            acc_p = acc[o + 1]
            if first:
                start_o = np.int64(bias_init[b_off + o])
                start_p = np.int64(bias_init[b_off + o + 1])
                for t in range(n):
                    x0 = np.int64(v0[t])
                    x1 = np.int64(v1[t])
                    x2 = np.int64(v2[t])
                    x3 = np.int64(v3[t])
                    acc_o[t] = wrap32(start_o + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3)
                    acc_p[t] = wrap32(start_p + u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3)
            else:
                for t in range(n):
                    x0 = np.int64(v0[t])
                    x1 = np.int64(v1[t])
                    x2 = np.int64(v2[t])
                    x3 = np.int64(v3[t])
                    acc_o[t] = wrap32(np.int64(acc_o[t]) + w0 * x0 + w1 * x1 + w2 * x2 + w3 * x3)
                    acc_p[t] = wrap32(np.int64(acc_p[t]) + u0 * x0 + u1 * x1 + u2 * x2 + u3 * x3)
        elif first:
            start_o = np.int64(bias_init[b_off + o])
            for t in range(n):
                acc_o[t] = wrap32(start_o + w0 * v0[t] + w1 * v1[t] + w2 * v2[t] + w3 * v3[t])
        else:
            for t in range(n):
                acc_o[t] = wrap32(
                    np.int64(acc_o[t]) + w0 * v0[t] + w1 * v1[t] + w2 * v2[t] + w3 * v3[t]
                )


@njit(cache=True)
def finish_layer(acc, layer_in, c_out, n, w_shift, adds_input, act, x_out):
    """x_out[o] = activation(round_shift(acc[o], w_shift) (+ layer_in[o])), spec 2.3.

    adds_input: the layer kind adds its input (LayerKind.adds_input).

    One pass per output row. The activation is a select between y and
    (y >> neg_shift) & neg_mask: none (0, -1), relu (0, 0), leakyrelu (4, -1).
    """
    rounding = np.int64(0)
    if w_shift > 0:
        rounding = np.int64(1) << (w_shift - 1)
    neg_shift = 4 if act == _LEAKYRELU else 0
    neg_mask = 0 if act == _RELU else -1
    for o in range(c_out):
        acc_o = acc[o]
        out_o = x_out[o]
        if adds_input:
            res_o = layer_in[o]
            for t in range(n):
                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift
                y = np.int64(wrap32(y + res_o[t]))
                out_o[t] = y if y >= 0 else (y >> neg_shift) & neg_mask
        else:
            for t in range(n):
                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift
                out_o[t] = y if y >= 0 else (y >> neg_shift) & neg_mask


@njit(cache=True)
def dense_layer(x_in, n, desc_row, w_grouped, bias_init, w_shift, acc, x_out):
    """One 1x1 / fully connected layer (spec 2.3) on positions 0..n-1.

    x_in, acc, x_out: int32 [>= channels][>= n], distinct arrays.
    """
    c_in = desc_row[D_IN]
    c_out = desc_row[D_OUT]
    w_off = desc_row[D_W_OFF]
    b_off = desc_row[D_B_OFF]
    for g in range(desc_row[D_N_GROUPS]):
        i0 = g * GROUP
        accumulate_group(
            acc,
            c_out,
            n,
            w_grouped,
            w_off + g * c_out * GROUP,
            x_in[i0],
            x_in[min(i0 + 1, c_in - 1)],
            x_in[min(i0 + 2, c_in - 1)],
            x_in[min(i0 + 3, c_in - 1)],
            bias_init,
            b_off,
            g == 0,
        )
    finish_layer(acc, x_in, c_out, n, w_shift, desc_row[D_ADDS_INPUT], desc_row[D_ACT], x_out)
