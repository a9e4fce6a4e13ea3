"""Mutation analysis of the conformance suite: how many streams catch each misreading of the spec.

    python tools/mutation.py                 # every mutant, then the coverage figure
    python -m tools.mutation --only ups-round-shift-wide --no-coverage
    python tools/mutation.py --list          # the catalogue, without running anything

Each *mutant* is a plausible misreading of the specification (spec/bitstream-v1.md),
written as one or more exact source rewrites (old text -> new text, each found exactly
once) of the reference decoder package `decoder/`. A mutant is applied to a temporary
copy of the package, which then decodes every stream of the conformance suite (of the
bitstream versions the mutant applies to) in a fresh process. A stream *catches* the
mutant when the outcome breaks the conformance rule (spec/conformance.md): a valid
stream whose samples hash differently, or that the mutant rejects or crashes on; an
invalid stream that the mutant decodes to a picture.

Rewrites listed in `EQUIVALENT` are provably equivalent to the spec (each with the
reason): they must be caught by no stream, and they mark where an implementation is
free to differ from the reference decoder's code.

Speed, measured on the project's 2-core machine while other jobs kept its load
average at 10-14: the 49 streams of suite v1 take 98 s as plain Python
(NUMBA_DISABLE_JIT=1) against 3 s jitted with a warm cache and 34 s with a cold one
(a cold compilation is 13 s on an idle machine). So mutants run jitted, each in its own
Numba cache directory. A mutant that leaves the Numba kernels of `layer_kernels.py`
alone starts from a copy of a cache warmed by the unmutated copy (Numba then recompiles
only the kernels of the file the mutant changed: 7-45 s per mutant); one that changes
them starts from an empty cache (90-110 s), because Numba does not notice that other
files' kernels inline them. Two jobs (`--jobs 2`, the default) ran the 79 rewrites in
1338 s of wall time, each mutant taking about as long as alone (the first 8 mutants:
579 s one after the other, about 290 s two at a time): on a shared machine two
processes get twice the share of the cores.

The command also measures the line coverage of the normative decoder modules by the
suite alone (`coverage`, NUMBA_DISABLE_JIT=1) and writes both into
tools/results/conformance-mutation.md (and the raw counts as .json beside it).
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DECODER = ROOT / "decoder"
TABLES = ROOT / "spec" / "tables"
SUITE = ROOT / "tests" / "conformance"
RESULTS = ROOT / "tools" / "results" / "conformance-mutation.md"
PACKAGE = "coolchic_ref"
# Decoder modules on the normative path (stream -> samples); the command line, the
# conformance runner and `info` are not.
NORMATIVE_MODULES = (
    "decode.py",
    "errors.py",
    "laplace_tables.py",
    "latents.py",
    "layer_kernels.py",
    "samples.py",
    "synthesis.py",
    "syntax.py",
    "upsampling.py",
    "weights.py",
)
# Files whose Numba kernels other files' kernels call (and inline): a change there
# invalidates cached kernels of other files, which Numba's cache does not notice.
SHARED_KERNEL_FILES = ("layer_kernels.py",)
BITSTREAM_VERSIONS = (1, 2)  # spec/bitstream-v1.md, spec/bitstream-v2.md
TARGET_CATCHES = 3  # every non-equivalent mutant must be caught by at least this many streams


# ---------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Rewrite:
    """Replace `old` by `new` in decoder/`path`; `old` must occur exactly once."""

    path: str
    old: str
    new: str


@dataclass(frozen=True)
class Mutant:
    """A misreading of spec section `section`, for the bitstream `versions` listed.

    `equivalent`: None for a real misreading; otherwise why the rewrite cannot change
    any outcome (then no stream may catch it).
    """

    name: str
    section: str
    misreading: str
    rewrites: tuple[Rewrite, ...]
    versions: tuple[int, ...] = (1,)
    equivalent: str | None = None


def _r(path: str, old: str, new: str) -> Rewrite:
    return Rewrite(path, old, new)


_FINISH_RESIDUAL = (
    "                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift\n"
    "                y = np.int64(wrap32(y + res_o[t]))\n"
)
_FINISH_LINEAR = (
    "        else:\n"
    "            for t in range(n):\n"
    "                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift\n"
)
_ACTIVATION_RESIDUAL = (
    "                y = np.int64(wrap32(y + res_o[t]))\n"
    "                out_o[t] = y if y >= 0 else (y >> neg_shift) & neg_mask\n"
)
_ACTIVATION_LINEAR = (
    "                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift\n"
    "                out_o[t] = y if y >= 0 else (y >> neg_shift) & neg_mask\n"
    "\n"
)
_UPS_STORE = "        out[t] = np.int64(wrap32(np.int64(acc[t]) + rounding)) >> shift\n"
_RANS_LOOP = "            for t in range(n):\n                q = rans_quantile(state)\n"
_READ_W_B = (
    "            w = np.array(reader.read_egk_array(layer.n_weights, quant.w_egk), "
    "dtype=np.int32)\n"
    "            b = np.array(reader.read_egk_array(layer.out_channels, quant.b_egk), "
    "dtype=np.int32)\n"
)
_GRID_FIELDS = "                for index in range(self.values[element.count]):\n"

MUTANTS: list[Mutant] = [
    # --- 2.2 / 2.3: integer widths, wrap points, rounding --------------------------------
    Mutant(
        "layer-round-shift-wide",
        "2.2",
        "round_shift of the ARM and synthesis layers adds 2^(n-1) in a wider type and "
        "wraps after the shift (wrong when acc + 2^(n-1) passes 2^31)",
        (
            _r(
                "layer_kernels.py",
                _FINISH_RESIDUAL,
                "                y = np.int64(wrap32((np.int64(acc_o[t]) + rounding) >> w_shift))\n"
                "                y = np.int64(wrap32(y + res_o[t]))\n",
            ),
            _r(
                "layer_kernels.py",
                _FINISH_LINEAR,
                "        else:\n"
                "            for t in range(n):\n"
                "                y = np.int64(wrap32((np.int64(acc_o[t]) + rounding) >> "
                "w_shift))\n",
            ),
        ),
    ),
    Mutant(
        "layer-round-shift-zero-c",
        "2.2",
        "round_shift(x, 0) computed as x + (1 << (0 - 1)) with x86's shift count masking "
        "(1 << 31): the n == 0 special case ignored",
        (
            _r(
                "layer_kernels.py",
                "    rounding = np.int64(0)\n    if w_shift > 0:\n",
                "    rounding = np.int64(-(1 << 31))\n    if w_shift > 0:\n",
            ),
        ),
    ),
    Mutant(
        "layer-floor-shift",
        "2.2",
        "round_shift of the layers as a plain floor shift (no 2^(n-1) added)",
        (
            _r(
                "layer_kernels.py",
                "        rounding = np.int64(1) << (w_shift - 1)\n",
                "        rounding = np.int64(0)\n",
            ),
        ),
    ),
    Mutant(
        "layer-round-half-away",
        "2.2",
        "round_shift of the layers rounds half away from zero for negative values "
        "(-round_shift(-x, n)) instead of half up",
        (
            _r(
                "layer_kernels.py",
                _FINISH_LINEAR,
                "        else:\n"
                "            for t in range(n):\n"
                "                a = np.int64(acc_o[t])\n"
                "                y = (np.int64(wrap32(a + rounding)) >> w_shift) if a >= 0 else "
                "-(np.int64(wrap32(rounding - a)) >> w_shift)\n",
            ),
        ),
    ),
    Mutant(
        "layer-saturate",
        "2.2",
        "int32 arithmetic saturates instead of wrapping (ARM, upsampling, synthesis)",
        (
            _r(
                "layer_kernels.py",
                "    return np.int32(np.int64(value))\n",
                "    return np.int32(min(max(np.int64(value), -2147483648), 2147483647))\n",
            ),
        ),
    ),
    Mutant(
        "bias-saturate",
        "2.3",
        "the bias term B << (F + w_shift - b_shift) saturates to int32 instead of wrapping",
        (
            _r(
                "layer_kernels.py",
                "            biases.append([wrap32(np.int64(int(v) << bias_shift)) for v in b])\n",
                "            biases.append(\n"
                "                [min(max(int(v) << bias_shift, -(1 << 31)), (1 << 31) - 1) for v "
                "in b]\n"
                "            )\n",
            ),
        ),
    ),
    Mutant(
        "bias-shift-without-frac",
        "2.3",
        "the bias is aligned with B << (w_shift - b_shift), forgetting the activation "
        "precision F (negative shifts taken as 0)",
        (
            _r(
                "layer_kernels.py",
                "        bias_shift = frac + w_shift - b_shift\n",
                "        bias_shift = max(0, w_shift - b_shift)\n",
            ),
        ),
    ),
    Mutant(
        "leaky-trunc",
        "2.2",
        "leakyrelu of a negative value rounds toward zero (-((-y) >> 4)) instead of down",
        (
            _r(
                "layer_kernels.py",
                _ACTIVATION_RESIDUAL,
                "                y = np.int64(wrap32(y + res_o[t]))\n"
                "                out_o[t] = y if y >= 0 else (-((-y) >> neg_shift)) & neg_mask\n",
            ),
            _r(
                "layer_kernels.py",
                _ACTIVATION_LINEAR,
                "                y = np.int64(wrap32(np.int64(acc_o[t]) + rounding)) >> w_shift\n"
                "                out_o[t] = y if y >= 0 else (-((-y) >> neg_shift)) & neg_mask\n"
                "\n",
            ),
        ),
    ),
    Mutant(
        "leaky-slope-1/8",
        "2.2",
        "leakyrelu slope 1/8 (y >> 3) instead of 1/16",
        (
            _r(
                "layer_kernels.py",
                "    neg_shift = 4 if act == _LEAKYRELU else 0\n",
                "    neg_shift = 3 if act == _LEAKYRELU else 0\n",
            ),
        ),
    ),
    Mutant(
        "residual-after-activation",
        "2.3",
        "a residual layer adds its input after the activation (x + act(y)) instead of before",
        (
            _r(
                "layer_kernels.py",
                _ACTIVATION_RESIDUAL,
                "                a = y if y >= 0 else (y >> neg_shift) & neg_mask\n"
                "                out_o[t] = wrap32(a + res_o[t])\n",
            ),
        ),
    ),
    Mutant(
        "residual-before-round",
        "2.3",
        "a residual layer adds its input to the accumulator before round_shift",
        (
            _r(
                "layer_kernels.py",
                _FINISH_RESIDUAL,
                "                y = np.int64(wrap32(np.int64(acc_o[t]) + res_o[t] + rounding))"
                " >> w_shift\n",
            ),
        ),
    ),
    Mutant(
        "conv-flipped-kernel",
        "7",
        "the synthesis convolution flips its kernel (true convolution, W[ky][kx] applied at "
        "offset (k/2 - ky, k/2 - kx)) instead of correlation",
        (
            _r(
                "layer_kernels.py",
                "            taps_dy.append((tap // k) % k - k // 2)\n"
                "            taps_dx.append(tap % k - k // 2)\n",
                "            taps_dy.append(k // 2 - (tap // k) % k)\n"
                "            taps_dx.append(k // 2 - tap % k)\n",
            ),
        ),
    ),
    Mutant(
        "conv-kernel-xy-swapped",
        "4.3",
        "synthesis weights read with ky innermost (W[o][i][kx][ky])",
        (
            _r(
                "weights.py",
                "            out.append((w.reshape(shape), b))\n",
                "            out.append((w.reshape(shape).swapaxes(-1, -2) if conv else "
                "w.reshape(shape), b))\n",
            ),
        ),
    ),
    # --- 4: weights --------------------------------------------------------------------
    Mutant(
        "weights-input-major",
        "4.3",
        "weights read input-major (W[i][o]) instead of output-major",
        (
            _r(
                "weights.py",
                "            out.append((w.reshape(shape), b))\n",
                "            transposed = (shape[1], shape[0]) + shape[2:]\n"
                "            out.append((w.reshape(transposed).swapaxes(0, 1), b))\n",
            ),
        ),
    ),
    Mutant(
        "weights-bias-first",
        "4.3",
        "each layer's biases read before its weights",
        (
            _r(
                "weights.py",
                _READ_W_B,
                "            b = np.array(reader.read_egk_array(layer.out_channels, quant.b_egk), "
                "dtype=np.int32)\n"
                "            w = np.array(reader.read_egk_array(layer.n_weights, quant.w_egk), "
                "dtype=np.int32)\n",
            ),
        ),
    ),
    Mutant(
        "weights-taps-first",
        "4.3",
        "the upsampling taps read before the ARM",
        (
            _r(
                "weights.py",
                "    arm = read_layers(header.arm_layers, header.arm_quant, conv=False)\n"
                "    taps = np.array(reader.read_egk_array(header.ups_half_taps, header.ups_egk), "
                "dtype=np.int32)\n",
                "    taps = np.array(reader.read_egk_array(header.ups_half_taps, header.ups_egk), "
                "dtype=np.int32)\n"
                "    arm = read_layers(header.arm_layers, header.arm_quant, conv=False)\n",
            ),
        ),
    ),
    Mutant(
        "egk-zigzag-sign",
        "4.2",
        "zigzag index mapped with the opposite sign (odd u -> negative)",
        (
            _r(
                "weights.py",
                "        v = (u + 1) >> 1 if u & 1 else -(u >> 1)\n",
                "        v = -((u + 1) >> 1) if u & 1 else u >> 1\n",
            ),
        ),
    ),
    Mutant(
        "egk-reject-int16-min",
        "4.2",
        "the weight range taken as -32767..32767 (rejects a valid -32768)",
        (
            _r(
                "weights.py",
                "        if v < WEIGHT_MIN or v > WEIGHT_MAX:\n",
                "        if v <= WEIGHT_MIN or v > WEIGHT_MAX:\n",
            ),
        ),
    ),
    Mutant(
        "egk-accept-32768",
        "4.2, 9 rule 6",
        "the weight range taken as -32768..32768 (accepts 32768)",
        (
            _r(
                "weights.py",
                "        if v < WEIGHT_MIN or v > WEIGHT_MAX:\n",
                "        if v < WEIGHT_MIN or v > WEIGHT_MAX + 1:\n",
            ),
        ),
    ),
    Mutant(
        "weights-padding-unchecked",
        "4.3, 9 rule 6",
        "the padding bits after the last parameter are not checked to be 0",
        (
            _r(
                "weights.py",
                "    if used_bytes != n_bytes or reader.read_bits(8 * used_bytes - reader.pos) != "
                "0:\n",
                "    if used_bytes != n_bytes:\n",
            ),
        ),
    ),
    Mutant(
        "weights-longer-section-accepted",
        "4.3, 9 rule 6",
        "a weights section longer than its parameters is accepted (only a shorter one rejects)",
        (
            _r(
                "weights.py",
                "    if used_bytes != n_bytes or reader.read_bits(8 * used_bytes - reader.pos) != "
                "0:\n",
                "    if used_bytes > n_bytes or reader.read_bits(8 * used_bytes - reader.pos) != "
                "0:\n",
            ),
        ),
    ),
    # --- 3 / 9: header syntax and rejection rules ---------------------------------------
    Mutant(
        "header-grid-fields-grouped",
        "3.2",
        "the per-grid fields read as all latent_min, then all latent_max, then all "
        "substream_bytes (not interleaved per grid)",
        (
            _r(
                "syntax.py",
                _GRID_FIELDS,
                '                if element.name == "grid":\n'
                "                    n_items = self.values[element.count]\n"
                "                    columns = {\n"
                "                        f.name: [\n"
                "                            self._take(\n"
                '                                f, f"{element.label} {i} {f.message_name}"\n'
                "                            )\n"
                "                            for i in range(n_items)\n"
                "                        ]\n"
                "                        for f in element.fields\n"
                "                    }\n"
                "                    for index in range(n_items):\n"
                "                        item = {\n"
                "                            f.name: columns[f.name][index]\n"
                "                            for f in element.fields\n"
                "                        }\n"
                "                        items.append(item)\n"
                "                        if each is not None:\n"
                "                            each(index, item)\n"
                "                for index in range(\n"
                '                    0 if element.name == "grid" else self.values[element.count]\n'
                "                ):\n",
            ),
        ),
    ),
    Mutant(
        "header-bias-shift-strict",
        "3.4",
        "the bias shift rule read as b_shift < F + w_shift (rejects the equality)",
        (
            _r(
                "syntax.py",
                "        b_shift <= frac + w_shift,\n",
                "        b_shift < frac + w_shift,\n",
            ),
        ),
    ),
    Mutant(
        "header-mac-strict",
        "3.4",
        "the MAC limits read as strict (mac < 8192, mac < 16384)",
        (
            _r(
                "syntax.py",
                "    _check(mac_arm <= MAX_MAC_ARM,",
                "    _check(mac_arm < MAX_MAC_ARM,",
            ),
            _r(
                "syntax.py",
                "    _check(mac_syn <= MAX_MAC_SYN,",
                "    _check(mac_syn < MAX_MAC_SYN,",
            ),
        ),
    ),
    Mutant(
        "header-mac-unchecked",
        "3.4, 9 rule 4",
        "the MAC limits not checked",
        (
            _r(
                "syntax.py",
                "    _check(mac_arm <= MAX_MAC_ARM,",
                "    _check(mac_arm <= 1 << 30,",
            ),
            _r(
                "syntax.py",
                "    _check(mac_syn <= MAX_MAC_SYN,",
                "    _check(mac_syn <= 1 << 30,",
            ),
        ),
    ),
    Mutant(
        "header-residual-unchecked",
        "3.3, 9 rule 4",
        "a residual layer with out != C_in is not rejected",
        (
            _r(
                "syntax.py",
                '            not LayerKind(item["type"]).adds_input or out == in_channels,\n',
                "            True,\n",
            ),
        ),
    ),
    Mutant(
        "header-last-layer-unchecked",
        "3.3, 9 rule 4",
        "the width of the last ARM and synthesis layers is not checked",
        (
            _r(
                "syntax.py",
                "        arm_layers[-1].out_channels == ARM_OUTPUTS,\n",
                "        True,\n",
            ),
            _r(
                "syntax.py",
                "        syn_layers[-1].out_channels == n_channels,\n",
                "        True,\n",
            ),
        ),
    ),
    Mutant(
        "header-constant-grid-substream",
        "3.4, 9 rule 4",
        "a constant grid (K == 1) with a non-empty substream is accepted",
        (
            _r(
                "syntax.py",
                "        latent_min < latent_max or size == 0,\n",
                "        True,\n",
            ),
        ),
    ),
    Mutant(
        "header-substream-multiple-of-4",
        "3.2, 9 rule 4",
        "a substream length that is not a multiple of 4 is accepted (the last partial "
        "word ignored)",
        (
            _r(
                "syntax.py",
                '    _check(size % step == 0, f"grid {index}: substream size not a multiple of '
                '{step}")\n',
                "",
            ),
            _r(
                "latents.py",
                '        words = np.frombuffer(substreams[g], dtype="<u4").astype(np.uint32)\n',
                "        data = bytes(substreams[g])\n"
                '        words = np.frombuffer(data[: len(data) // 4 * 4], dtype="<u4")'
                ".astype(np.uint32)\n",
            ),
        ),
    ),
    Mutant(
        "header-trailing-data",
        "3.1, 9 rule 5",
        "bytes after the last substream are ignored",
        (
            _r(
                "syntax.py",
                "    if len(data) > expected:\n",
                "    if False:\n",
            ),
        ),
    ),
    Mutant(
        "header-version-any",
        "3.2, 9 rule 2",
        "the version field is not checked",
        (
            _r(
                "syntax.py",
                "    table = syntax_table(data[4])\n"
                "    reader = _FieldReader(data, table)\n"
                '    reader.read_through("version")\n',
                "    table = HEADER_V1\n"
                "    reader = _FieldReader(data, table, validate=False)\n"
                '    reader.read_through("version")\n'
                "    reader.validate = True\n",
            ),
        ),
    ),
    Mutant(
        "header-grid-count-8",
        "3.2, 9 rule 4",
        "n_grids allowed up to 8",
        (_r("syntax.py", "MAX_GRIDS = 7\n", "MAX_GRIDS = 8\n"),),
    ),
    # --- 5: latents ----------------------------------------------------------------------
    Mutant(
        "context-order-dx-outer",
        "5.2",
        "context offsets enumerated with dx outer and dy inner",
        (
            _r(
                "latents.py",
                "    for dy in range(-r, 1):\n        for dx in range(-r, r + 1):\n",
                "    for dx in range(-r, r + 1):\n        for dy in range(-r, 1):\n",
            ),
        ),
    ),
    Mutant(
        "context-not-q8",
        "5.3",
        "ARM inputs taken as the latent values (not shifted to Q8)",
        (
            _r(
                "latents.py",
                "                dst[t] = src[t] << ARM_FRAC\n",
                "                dst[t] = src[t]\n",
            ),
        ),
    ),
    Mutant(
        "arm-outputs-swapped",
        "5.3",
        "ARM output 0 taken as log_scale and output 1 as mu",
        (
            _r(
                "latents.py",
                "            laplace_batch(model, x_in[0], x_in[1], n, k, lmin)\n",
                "            laplace_batch(model, x_in[1], x_in[0], n, k, lmin)\n",
            ),
        ),
    ),
    Mutant(
        "wavefront-y-descending",
        "5.2",
        "within a diagonal the symbols decoded with y descending",
        (_r("latents.py", _RANS_LOOP, _RANS_LOOP.replace("range(n)", "range(n - 1, -1, -1)")),),
    ),
    Mutant(
        "laplace-log-scale-clip-2047",
        "5.4",
        "log_scale clipped to -1536..2047",
        (_r("latents.py", "_MAX_LOG_SCALE = 2048\n", "_MAX_LOG_SCALE = 2047\n"),),
    ),
    Mutant(
        "laplace-log-scale-clip-low",
        "5.4",
        "log_scale clipped to -1535..2048",
        (
            _r(
                "latents.py",
                "log_scale = min(max(np.int64(log_scales[t]), _MIN_LOG_SCALE), _MAX_LOG_SCALE)",
                "log_scale = min(max(np.int64(log_scales[t]), _MIN_LOG_SCALE + 1), _MAX_LOG_SCALE)",
            ),
        ),
    ),
    Mutant(
        "laplace-mu-clip",
        "5.4",
        "mu clipped to -(2^23 - 1)..2^23 - 1",
        (_r("latents.py", "_MU_LIMIT = 1 << 23\n", "_MU_LIMIT = (1 << 23) - 1\n"),),
    ),
    Mutant(
        "laplace-boundary-plus-half",
        "5.4",
        "boundary i taken at latent_min + i + 1/2",
        (
            _r(
                "latents.py",
                "    b = ((latent_min + i) << 8) - 128\n",
                "    b = ((latent_min + i) << 8) + 128\n",
            ),
        ),
    ),
    Mutant(
        "laplace-t-rounded",
        "5.4",
        "t = |b - mu| * inv / 2^20 rounded to nearest instead of down",
        (
            _r(
                "latents.py",
                "    t = (abs(b - mu) * inv_scale_q20) >> 20\n",
                "    t = (abs(b - mu) * inv_scale_q20 + (1 << 19)) >> 20\n",
            ),
        ),
    ),
    Mutant(
        "laplace-half-rounded",
        "5.4",
        "the tail mass halved with rounding, (e + 1) >> 1",
        (_r("latents.py", "    half = e >> 1\n", "    half = (e + 1) >> 1\n"),),
    ),
    Mutant(
        "laplace-inv-scale-index",
        "5.4",
        "INV_SCALE indexed one entry off (s + 1537)",
        (
            _r(
                "latents.py",
                "        inv = np.int64(_INV_SCALE_I32[log_scale - _MIN_LOG_SCALE])\n",
                "        inv = np.int64(_INV_SCALE_I32[min(log_scale - _MIN_LOG_SCALE + 1, "
                "3584)])\n",
            ),
        ),
    ),
    Mutant(
        "laplace-cdf-rounded",
        "5.4",
        "cdf spreads (G(i) - G(0)) * M / D rounded to nearest instead of down",
        (
            _r(
                "latents.py",
                "        return i + ((g - g0) * spare) // mass\n",
                "        return i + ((g - g0) * spare + (mass >> 1)) // mass\n",
            ),
        ),
    ),
    Mutant(
        "laplace-no-fallback",
        "5.4",
        "no uniform fallback for D = 0: the spread formula with the division guarded by max(D, 1)",
        (
            _r(
                "latents.py",
                "    if mass > 0:\n"
                "        g = _boundary_mass(i, latent_min, mu, inv_scale_q20)\n"
                "        return i + ((g - g0) * spare) // mass\n",
                "    if True:\n"
                "        g = _boundary_mass(i, latent_min, mu, inv_scale_q20)\n"
                "        return i + ((g - g0) * spare) // max(mass, 1)\n",
            ),
        ),
    ),
    Mutant(
        "rans-words-big-endian",
        "5.1",
        "substream words read big-endian",
        (
            _r(
                "latents.py",
                '        words = np.frombuffer(substreams[g], dtype="<u4").astype(np.uint32)\n',
                '        words = np.frombuffer(substreams[g], dtype=">u4").astype(np.uint32)\n',
            ),
        ),
    ),
    Mutant(
        "rans-words-reversed",
        "5.5",
        "substream words read last first (constriction's get_compressed() order)",
        (
            _r(
                "latents.py",
                '        words = np.frombuffer(substreams[g], dtype="<u4").astype(np.uint32)\n',
                '        words = np.frombuffer(substreams[g], dtype="<u4")[::-1]'
                ".astype(np.uint32)\n",
            ),
        ),
    ),
    Mutant(
        "rans-start-unchecked",
        "5.5, 9 rule 7",
        "a substream whose first word is 0 is not rejected",
        (
            _r(
                "latents.py",
                "        if words[0] == 0:\n            return state, pos, STATUS_BAD_START\n",
                "",
            ),
        ),
    ),
    Mutant(
        "rans-end-state-unchecked",
        "5.5, 9 rule 7",
        "the end condition checks pos == n only, not state == 0",
        (
            _r(
                "latents.py",
                "    return STATUS_OK if pos == words.shape[0] and state == 0 else "
                "STATUS_SIZE_MISMATCH\n",
                "    return STATUS_OK if pos == words.shape[0] else STATUS_SIZE_MISMATCH\n",
            ),
        ),
    ),
    Mutant(
        "ups-round-shift-wide",
        "2.2, 6",
        "the upsampling round_shift adds 2^(n-1) in a wider type and wraps after the shift",
        (
            _r(
                "upsampling.py",
                _UPS_STORE,
                "        out[t] = wrap32((np.int64(acc[t]) + rounding) >> shift)\n",
            ),
        ),
    ),
    Mutant(
        "ups-floor-shift",
        "2.2, 6",
        "the upsampling round_shift as a floor shift",
        (
            _r(
                "upsampling.py",
                "        rounding = np.int64(1) << (shift - 1)\n",
                "        rounding = np.int64(0)\n",
            ),
        ),
    ),
    Mutant(
        "ups-round-half-away",
        "2.2, 6",
        "the upsampling round_shift rounds half away from zero for negative values",
        (
            _r(
                "upsampling.py",
                _UPS_STORE,
                "        a = np.int64(acc[t])\n"
                "        out[t] = (np.int64(wrap32(a + rounding)) >> shift) if a >= 0 else "
                "-(np.int64(wrap32(rounding - a)) >> shift)\n",
            ),
        ),
    ),
    Mutant(
        "ups-horizontal-first",
        "6",
        "each level upsampled horizontally first, then vertically",
        (
            _r(
                "upsampling.py",
                "        upsampled = np.empty((n_grids - level + 1, h_out, w_out), "
                "dtype=np.int32)\n"
                "        upsample_level(\n"
                "            current, upsampled, grids[level - 1], taps, offsets_even, "
                "offsets_odd, header.ups_shift\n"
                "        )\n",
                "        flipped = np.empty((n_grids - level + 1, w_out, h_out), dtype=np.int32)\n"
                "        upsample_level(\n"
                "            np.ascontiguousarray(current.transpose(0, 2, 1)),\n"
                "            flipped,\n"
                "            np.ascontiguousarray(grids[level - 1].T),\n"
                "            taps,\n"
                "            offsets_even,\n"
                "            offsets_odd,\n"
                "            header.ups_shift,\n"
                "        )\n"
                "        upsampled = np.ascontiguousarray(flipped.transpose(0, 2, 1))\n",
            ),
        ),
    ),
    Mutant(
        "ups-parity-swapped-vertical",
        "6",
        "the vertical pass uses the odd-output offsets for even rows and vice versa",
        (
            _r(
                "upsampling.py",
                "        m = offsets_odd[k] if i & 1 else offsets_even[k]\n",
                "        m = offsets_even[k] if i & 1 else offsets_odd[k]\n",
            ),
        ),
    ),
    Mutant(
        "ups-parity-swapped-horizontal",
        "6",
        "the horizontal pass uses the odd-output offsets for even columns and vice versa",
        (
            _r(
                "upsampling.py",
                "        src_even = line[pad + offsets_even[k] :]\n"
                "        src_odd = line[pad + offsets_odd[k] :]\n",
                "        src_even = line[pad + offsets_odd[k] :]\n"
                "        src_odd = line[pad + offsets_even[k] :]\n",
            ),
        ),
    ),
    Mutant(
        "ups-taps-reversed",
        "4.3, 6",
        "the coded taps v[0..T-1] taken in reverse order (v[0] the farthest)",
        (
            _r(
                "upsampling.py",
                "    taps = np.ascontiguousarray(ups_taps, dtype=np.int32)\n",
                "    taps = np.ascontiguousarray(ups_taps[::-1], dtype=np.int32)\n",
            ),
        ),
    ),
    Mutant(
        "ups-reflect-top",
        "6",
        "the vertical pass mirrors at the top edge (index |j + m|) instead of clipping",
        (
            _r(
                "upsampling.py",
                "        src_row = src[min(max(j + m, 0), h_in - 1)]\n",
                "        src_row = src[min(abs(j + m), h_in - 1)]\n",
            ),
        ),
    ),
    Mutant(
        "dense-channels-reversed",
        "6",
        "dense latent channel g made from grid N-1-g",
        (
            _r(
                "upsampling.py",
                "        current = upsampled\n    return current\n",
                "        current = upsampled\n    return np.ascontiguousarray(current[::-1])\n",
            ),
        ),
    ),
    # --- 7: synthesis --------------------------------------------------------------------
    Mutant(
        "syn-reflect-top",
        "7",
        "the synthesis mirrors rows at the top edge (|y + ky - k/2|) instead of replicating",
        (
            _r(
                "synthesis.py",
                "    return src[channel, min(max(y + dy, 0), height - 1), col0 + dx :]\n",
                "    return src[channel, min(abs(y + dy), height - 1), col0 + dx :]\n",
            ),
        ),
    ),
    Mutant(
        "syn-zero-pad-left",
        "7",
        "the first synthesis stage pads the left edge with zeros instead of replicating",
        (
            _r(
                "synthesis.py",
                "            dst_row[p] = src_row[0]\n",
                "            dst_row[p] = 0\n",
            ),
        ),
    ),
    # --- 8: samples ----------------------------------------------------------------------
    Mutant(
        "chroma-sum-no-wrap",
        "8.1",
        "the 4:2:0 sum computed without the int32 wrap",
        (
            _r(
                "chroma.py",
                "            out[y, x] = np.int64(wrap32(total)) >> 2\n",
                "            out[y, x] = min(max(total >> 2, -2147483648), 2147483647)\n",
            ),
        ),
    ),
    Mutant(
        "chroma-no-plus-2",
        "8.1",
        "the 4:2:0 average rounded down (no + 2)",
        (
            _r(
                "chroma.py",
                "            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1] + 2\n",
                "            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1]\n",
            ),
        ),
    ),
    Mutant(
        "chroma-clip-first",
        "8.1, 8.2",
        "chroma clipped to 0..4096 before the 4:2:0 reduction instead of after",
        (
            _r(
                "samples.py",
                "            channel = reduce_chroma_420(channel)\n",
                "            channel = reduce_chroma_420(np.clip(channel, 0, ONE_Q12))\n",
            ),
        ),
    ),
    Mutant(
        "chroma-top-left",
        "8.1",
        "4:2:0 chroma taken from the top-left sample of each 2x2 block",
        (
            _r(
                "chroma.py",
                "            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1] + 2\n",
                "            total = 4 * np.int64(top[x0]) + 2\n",
            ),
        ),
    ),
    Mutant(
        "samples-no-rounding",
        "8.2",
        "sample conversion without the + 2048 rounding",
        (
            _r(
                "samples.py",
                "    samples = (c * maxval + (ONE_Q12 >> 1)) >> SYN_FRAC\n",
                "    samples = (c * maxval) >> SYN_FRAC\n",
            ),
        ),
    ),
    Mutant(
        "samples-clip-4095",
        "8.2",
        "synthesis output clipped to 0..4095 (4096 read as out of range)",
        (
            _r(
                "samples.py",
                "    c = np.clip(np.asarray(plane, dtype=np.int64), 0, ONE_Q12)\n",
                "    c = np.clip(np.asarray(plane, dtype=np.int64), 0, ONE_Q12 - 1)\n",
            ),
        ),
    ),
    Mutant(
        "samples-scale-2^b",
        "8.2",
        "samples scaled by 2^bit_depth instead of 2^bit_depth - 1 (then clipped to maxval)",
        (
            _r(
                "samples.py",
                "    samples = (c * maxval + (ONE_Q12 >> 1)) >> SYN_FRAC\n",
                "    samples = np.minimum((c * (maxval + 1) + (ONE_Q12 >> 1)) >> SYN_FRAC, "
                "maxval)\n",
            ),
        ),
    ),
    Mutant(
        "raw-big-endian",
        "8.3",
        "canonical raw samples of deep pictures written big-endian",
        (
            _r(
                "samples.py",
                '    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")\n',
                '    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype(">u2")\n',
            ),
        ),
    ),
    # --- version 2: the cross-grid context (bitstream-v2.md 5.2a) ---
    Mutant(
        "v2-cross-rounded-position",
        "v2 5.2a",
        "the co-located coarse position rounded to nearest, (y + 2^(k-1)) >> k",
        (
            _r(
                "latents.py",
                "row[t] = latents[offset + (y >> shift) * width + (x >> shift)] << ARM_FRAC\n",
                "half = 1 << (shift - 1)\n"
                "            yy = min((y + half) >> shift, cross[c, X_HEIGHT] - 1)\n"
                "            xx = min((x + half) >> shift, width - 1)\n"
                "            row[t] = latents[offset + yy * width + xx] << ARM_FRAC\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-cross-next-grid-only",
        "v2 5.2a",
        "every cross-grid value taken from the next coarser grid g + 1",
        (
            _r(
                "latents.py",
                "        coarse = level + k\n        if coarse < header.n_grids",
                "        coarse = level + 1\n        if level + k < header.n_grids",
            ),
            _r(
                "latents.py",
                "(offsets[coarse], grid.height, grid.width, k)\n",
                "(offsets[coarse], grid.height, grid.width, 1)\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-cross-not-q8",
        "v2 5.2a",
        "cross-grid values as plain latents, without the << ARM_FRAC",
        (
            _r(
                "latents.py",
                "row[t] = latents[offset + (y >> shift) * width + (x >> shift)] << ARM_FRAC\n",
                "row[t] = latents[offset + (y >> shift) * width + (x >> shift)]\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-cross-missing-grid-repeats-coarsest",
        "v2 5.2a",
        "past the coarsest grid the coarsest grid's value is used instead of 0",
        (
            _r(
                "latents.py",
                "        coarse = level + k\n"
                "        if coarse < header.n_grids and available[coarse]:\n",
                "        kk = min(k, header.n_grids - 1 - level)\n"
                "        coarse = level + kk\n"
                "        if kk > 0 and available[coarse]:\n",
            ),
            _r(
                "latents.py",
                "(offsets[coarse], grid.height, grid.width, k)\n",
                "(offsets[coarse], grid.height, grid.width, kk)\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-cross-before-spatial",
        "v2 5.2a",
        "the cross-grid values come first in the ARM input, the spatial context after",
        (
            _r(
                "latents.py",
                "            gather_contexts(\n                buf_a, d, y0, n, r,",
                "            gather_contexts(\n"
                "                buf_a[cross.shape[0] :], d, y0, n, r,",
            ),
            _r(
                "latents.py",
                "                gather_cross("
                "buf_a, ctx_dy.shape[0], latents, cross, d, y0, n, r)\n",
                "                gather_cross(buf_a, 0, latents, cross, d, y0, n, r)\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-fine-to-coarse",
        "v2 5.1",
        "grids decoded finest first, so the coarser grids are still zero when read",
        (
            _r(
                "syntax.py",
                "        return tuple(reversed(levels)) if self.cross_grids else tuple(levels)\n",
                "        return tuple(levels)\n",
            ),
        ),
        versions=(2,),
    ),
    Mutant(
        "v2-cross-grids-unbounded",
        "v2 3.2, 9 rule 4",
        "cross_grids > n_grids - 1 accepted (the missing grids read as 0)",
        (
            _r(
                "syntax.py",
                '            cross_grids <= v["n_grids"] - 1,\n',
                "            True,\n",
            ),
        ),
        versions=(2,),
    ),
]

EQUIVALENT: list[Mutant] = [
    Mutant(
        "ups-wrap-each-product",
        "2.2, 6",
        "the upsampling sums wrap every product and every addition separately",
        (
            _r(
                "upsampling.py",
                "            acc[x] = wrap32(np.int64(acc[x]) + weight * src_row[x])\n",
                "            acc[x] = wrap32(np.int64(acc[x]) + np.int64(wrap32(weight * "
                "src_row[x])))\n",
            ),
        ),
        equivalent="wrap32 is a ring homomorphism Z -> Z/2^32: wrapping the operands of an "
        "addition or multiplication, or only its result, gives the same int32. An "
        "implementation may wrap after every operation or once at the end of a sum of "
        "products computed in a wider type.",
    ),
    Mutant(
        "chroma-wrap-each-add",
        "8.1",
        "the 4:2:0 sum wraps after every addition",
        (
            _r(
                "chroma.py",
                "            total = np.int64(top[x0]) + top[x1] + bottom[x0] + bottom[x1] + 2\n",
                "            total = np.int64(wrap32(np.int64(wrap32(np.int64(wrap32("
                "np.int64(wrap32(np.int64(top[x0]) + top[x1])) + bottom[x0])) + bottom[x1])) "
                "+ 2))\n",
            ),
        ),
        equivalent="as above: wrapping each partial sum or only the total gives the same int32.",
    ),
    Mutant(
        "round-shift-half-as-shift",
        "2.2",
        "2^(n-1) of round_shift computed as (1 << n) >> 1",
        (
            _r(
                "layer_kernels.py",
                "    rounding = np.int64(0)\n    if w_shift > 0:\n"
                "        rounding = np.int64(1) << (w_shift - 1)\n",
                "    rounding = (np.int64(1) << w_shift) >> 1\n",
            ),
        ),
        equivalent="(1 << n) >> 1 is 2^(n-1) for n >= 1 and 0 for n = 0, so round_shift(x, 0) "
        "= x needs no special case written this way.",
    ),
    Mutant(
        "chroma-trunc-negative",
        "8.1, 8.2",
        "the 4:2:0 average of a negative sum rounded toward zero",
        (
            _r(
                "chroma.py",
                "            out[y, x] = np.int64(wrap32(total)) >> 2\n",
                "            wrapped = np.int64(wrap32(total))\n"
                "            out[y, x] = -((-wrapped) >> 2) if wrapped < 0 else wrapped >> 2\n",
            ),
        ),
        equivalent="a negative wrapped sum gives a chroma value <= 0 either way, and 8.2 clips "
        "every value <= 0 to the sample 0.",
    ),
    Mutant(
        "laplace-fallback-without-the-1",
        "5.4",
        "the D = 0 fallback written as i * 2^24 / K (without the 1 per symbol)",
        (
            _r(
                "latents.py",
                "    return i + (i * spare) // k\n",
                "    return (i * _TOTAL) // k\n",
            ),
        ),
        equivalent="i + floor(i (2^24 - K) / K) = i + floor(i 2^24 / K - i) = floor(i 2^24 / K) "
        "for every integer i.",
    ),
    Mutant(
        "laplace-g-at-mu",
        "5.4",
        "G(i) takes the upper branch when b == mu (b <= mu instead of b < mu)",
        (
            _r(
                "latents.py",
                "    return half if b < mu else _ONE30 - half\n",
                "    return half if b <= mu else _ONE30 - half\n",
            ),
        ),
        equivalent="at b == mu, t = 0 and EXP_NEG[0] = 2^30, so both branches give 2^29.",
    ),
    Mutant(
        "laplace-tail-threshold-5600",
        "5.4",
        "the tail mass taken as 0 from t >= 5600 on instead of t >= 5632",
        (
            _r(
                "latents.py",
                "    e = np.int64(0) if t > last else e\n",
                "    e = np.int64(0) if t >= 5600 else e\n",
            ),
        ),
        equivalent="EXP_NEG[t] = round(2^30 e^(-t/256)) is 0 for every t >= 5501 (the table's "
        "entries 5501..5631 are 0).",
    ),
    Mutant(
        "rans-init-one-word",
        "5.5",
        "the initial state reads at most two words (if instead of while)",
        (
            _r(
                "latents.py",
                "        while pos < n_words and state < _TWO32:\n",
                "        if pos < n_words and state < _TWO32:\n",
            ),
        ),
        equivalent="word[0] != 0 (else the stream is rejected), so after one more word the "
        "state is at least 2^32 and the loop never runs twice.",
    ),
    Mutant(
        "rans-end-pos-unchecked",
        "5.5, 9 rule 7",
        "the end condition checks state == 0 only, not pos == n",
        (
            _r(
                "latents.py",
                "    return STATUS_OK if pos == words.shape[0] and state == 0 else "
                "STATUS_SIZE_MISMATCH\n",
                "    return STATUS_OK if state == 0 else STATUS_SIZE_MISMATCH\n",
            ),
        ),
        equivalent="while words remain, the state is at least 1 after every step: after the "
        "start (word[0] != 0, else rule 7 rejects) and after every read it is at least 2^32, "
        "and a step from a state >= 2^32 gives (state >> 24) f(s) + q - cdf(s) >= 256. So "
        "state == 0 at the end implies pos == n.",
    ),
    # --- 6: upsampling -------------------------------------------------------------------
    Mutant(
        "egk-long-code-by-range",
        "4.2, 9 rule 6",
        "the `z + k > 17` rule dropped: long codes left to the range check",
        (
            _r(
                "weights.py",
                "        max_zeros = MAX_CODE_BITS - k\n",
                "        max_zeros = MAX_CODE_BITS + 16\n",
            ),
        ),
        equivalent="a code with z + k >= 18 has x >= 2^18, so u >= 2^18 - 2^16 and |v| >= "
        "98304: the range check (or, for a section that ends first, truncation) rejects it "
        "too. The rule bounds the work per code; it never changes a decision.",
    ),
    Mutant(
        "conv-center-k-minus-1-half",
        "7",
        "the kernel centre taken as (k - 1) / 2 instead of k / 2 rounded down",
        (
            _r(
                "layer_kernels.py",
                "            taps_dy.append((tap // k) % k - k // 2)\n"
                "            taps_dx.append(tap % k - k // 2)\n",
                "            taps_dy.append((tap // k) % k - (k - 1) // 2)\n"
                "            taps_dx.append(tap % k - (k - 1) // 2)\n",
            ),
        ),
        equivalent="every kernel size is odd (1, 3, 5, 7), where (k - 1) / 2 = floor(k / 2).",
    ),
]


def all_mutants() -> list[Mutant]:
    return MUTANTS + EQUIVALENT


# ---------------------------------------------------------------------------
# Applying a mutant to a copy of the package


def copy_package(destination: Path) -> Path:
    """decoder/ (and the spec tables) as package `coolchic_ref` under `destination`,
    file times preserved (Numba's cache keys on them). Returns the package directory."""
    package = destination / PACKAGE
    if package.exists():
        shutil.rmtree(package)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(DECODER, package, ignore=ignore, copy_function=shutil.copy2)
    shutil.copytree(TABLES, package / "tables", ignore=ignore, copy_function=shutil.copy2)
    return package


def apply_rewrites(package: Path, rewrites: tuple[Rewrite, ...]) -> None:
    """Apply the rewrites in order; ValueError unless each `old` occurs exactly once."""
    for rewrite in rewrites:
        path = package / rewrite.path
        text = path.read_text()
        count = text.count(rewrite.old)
        if count != 1:
            raise ValueError(
                f"{rewrite.path}: text to rewrite found {count} times: {rewrite.old!r}"
            )
        path.write_text(text.replace(rewrite.old, rewrite.new))


def check_catalogue(mutants: list[Mutant] | None = None) -> list[str]:
    """Problems of the catalogue against the current decoder source (empty: none):
    a rewrite whose text is not found exactly once, or that does not parse afterwards."""
    problems = []
    names = [m.name for m in all_mutants()]
    if len(set(names)) != len(names):
        problems.append("mutant names are not unique")
    for mutant in mutants or all_mutants():
        texts: dict[str, str] = {}
        for rewrite in mutant.rewrites:
            text = texts.get(rewrite.path)
            if text is None:
                text = (DECODER / rewrite.path).read_text()
            count = text.count(rewrite.old)
            if count != 1:
                problems.append(f"{mutant.name}: {rewrite.path}: old text found {count} times")
                continue
            texts[rewrite.path] = text.replace(rewrite.old, rewrite.new)
        for path, text in texts.items():
            try:
                ast.parse(text)
            except SyntaxError as error:
                problems.append(f"{mutant.name}: {path} does not parse: {error}")
    return problems


def _touches_shared_kernels(mutant: Mutant) -> bool:
    """Whether a rewrite lies inside a Numba kernel of a file other files' kernels call."""
    for rewrite in mutant.rewrites:
        if rewrite.path not in SHARED_KERNEL_FILES:
            continue
        text = (DECODER / rewrite.path).read_text()
        line = text[: text.index(rewrite.old)].count("\n") + 1
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.lineno <= line <= node.end_lineno:
                if any("njit" in ast.unparse(d) for d in node.decorator_list):
                    return True
    return False


# ---------------------------------------------------------------------------
# The suite


@dataclass(frozen=True)
class Stream:
    name: str
    path: Path
    version: int
    sha256: str | None  # None: the stream must be rejected
    seconds: float = 0.0  # decoding time as plain Python (for the CI subset)


def load_suite(directory: Path = SUITE) -> list[Stream]:
    """Every stream of the manifest, with its bitstream version (byte 4 of the stream;
    the manifest's `bitstream_version` for a stream too short to have one)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    default_version = int(manifest.get("bitstream_version", 1))
    streams = []
    for entry in manifest["streams"]:
        path = directory / "streams" / entry["stream"]
        head = path.read_bytes()[:5]
        version = head[4] if len(head) == 5 and head[:4] == b"CCRF" else default_version
        if entry.get("reject") is not None and version not in BITSTREAM_VERSIONS:
            # An invalid stream may have a broken version byte on purpose (rule 2).
            version = default_version
        streams.append(
            Stream(entry["stream"].removesuffix(".cool"), path, version, entry.get("sha256"))
        )
    return streams


# ---------------------------------------------------------------------------
# Running a (mutated) copy of the decoder on streams


WORKER = r"""
import hashlib, json, sys, traceback
try:
    import coolchic_ref
    from coolchic_ref import decode, StreamError
    assert coolchic_ref.__file__.startswith(sys.argv[1]), coolchic_ref.__file__
except Exception as error:
    print(json.dumps({"import_error": f"{type(error).__name__}: {error}"}), flush=True)
    sys.exit(3)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    name, path = json.loads(line)
    try:
        image = decode(open(path, "rb").read())
        outcome = {"name": name, "sha256": image.sha256()}
    except StreamError as error:
        outcome = {"name": name, "rejected": str(error)}
    except Exception as error:
        outcome = {"name": name, "crash": f"{type(error).__name__}: {str(error)[:200]}"}
    print(json.dumps(outcome), flush=True)
"""


@dataclass
class Outcome:
    """What a decoder did with one stream."""

    sha256: str | None = None
    rejected: str | None = None
    crash: str | None = None  # an exception other than StreamError, or a timeout

    def caught(self, stream: Stream) -> bool:
        """Whether this outcome breaks the conformance rule for the stream."""
        if stream.sha256 is None:
            return self.sha256 is not None  # an invalid stream decoded to a picture
        return self.sha256 != stream.sha256


class MutantRunError(RuntimeError):
    """The mutated package could not even be imported (a broken catalogue entry)."""


def run_decoder(
    package_root: Path,
    streams: list[Stream],
    env: dict[str, str],
    first_timeout: float,
    stream_timeout: float,
) -> dict[str, Outcome]:
    """Decode `streams` with the package under package_root in fresh processes.

    One worker process decodes stream after stream; a stream that takes longer than
    its timeout (the first one includes the Numba compilation) is recorded as a crash
    ("timeout") and the worker restarted on the remaining streams.
    """
    outcomes: dict[str, Outcome] = {}
    todo = list(streams)
    while todo:
        process = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(package_root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=package_root,
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def read(pipe=process.stdout, out=lines) -> None:
            for text in pipe:
                out.put(text)
            out.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            first = json.loads(lines.get(timeout=first_timeout) or "{}")
            if "ready" not in first:
                raise MutantRunError(first.get("import_error", "the worker did not start"))
            timeout = first_timeout
            while todo:
                stream = todo[0]
                process.stdin.write(json.dumps([stream.name, str(stream.path)]) + "\n")
                process.stdin.flush()
                try:
                    line = lines.get(timeout=timeout)
                except queue.Empty:
                    outcomes[stream.name] = Outcome(crash=f"timeout ({timeout:.0f} s)")
                    todo.pop(0)
                    break
                if line is None:  # the worker died (a crash of the interpreter)
                    outcomes[stream.name] = Outcome(crash="the decoding process died")
                    todo.pop(0)
                    break
                result = json.loads(line)
                assert result["name"] == stream.name
                outcomes[stream.name] = Outcome(
                    result.get("sha256"), result.get("rejected"), result.get("crash")
                )
                todo.pop(0)
                timeout = stream_timeout
        except queue.Empty:
            raise MutantRunError("the worker did not start in time") from None
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass
            try:
                process.wait(timeout=5 if not todo else 0.1)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
        # The first stream after a restart again includes the compilation.
    return outcomes


@dataclass
class MutantResult:
    mutant: Mutant
    caught_by: list[str]
    tried: int
    seconds: float
    notes: dict[str, str] = field(default_factory=dict)  # stream -> crash / rejection text


class Runner:
    """Runs mutants on copies of the package in a scratch directory.

    jit=True: Numba kernels compiled, each mutant in its own cache directory (see the
    module docstring); jit=False: NUMBA_DISABLE_JIT=1 (slow, but no compilation).
    """

    def __init__(self, scratch: Path, jit: bool = True, threads: int = 1) -> None:
        self.scratch = scratch
        self.jit = jit
        self.threads = threads
        self.warm_cache: Path | None = None

    def _env(self, cache: Path | None) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("NUMBA_") and k not in ("PYTHONPATH", "COVERAGE_PROCESS_START")
        }
        env["PYTHONPATH"] = str(self.scratch / "copy")
        env["NUMBA_NUM_THREADS"] = str(self.threads)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if self.jit:
            env["NUMBA_CACHE_DIR"] = str(cache)
        else:
            env["NUMBA_DISABLE_JIT"] = "1"
        return env

    def _timeouts(self) -> tuple[float, float]:
        # First stream: import plus, jitted, a cold compilation (13-40 s on a loaded
        # 2-core machine); later ones: the slowest stream as plain Python is ~30 s.
        return (300.0, 60.0) if self.jit else (120.0, 120.0)

    def warm_up(self, streams: list[Stream]) -> dict[str, Outcome]:
        """Decode `streams` with the unmutated copy; keeps its Numba cache for later mutants."""
        copy_package(self.scratch / "copy")
        cache = self.scratch / "cache-warm"
        shutil.rmtree(cache, ignore_errors=True)
        outcomes = run_decoder(self.scratch / "copy", streams, self._env(cache), *self._timeouts())
        self.warm_cache = cache
        return outcomes

    def run(self, mutant: Mutant, streams: list[Stream]) -> MutantResult:
        start = time.perf_counter()
        package = copy_package(self.scratch / "copy")
        apply_rewrites(package, mutant.rewrites)
        cache = self.scratch / "cache-mutant"
        shutil.rmtree(cache, ignore_errors=True)
        if self.jit and self.warm_cache is not None and not _touches_shared_kernels(mutant):
            shutil.copytree(self.warm_cache, cache)
        chosen = [s for s in streams if s.version in mutant.versions]
        outcomes = run_decoder(self.scratch / "copy", chosen, self._env(cache), *self._timeouts())
        caught = [s.name for s in chosen if outcomes[s.name].caught(s)]
        notes = {}
        for s in chosen:
            outcome = outcomes[s.name]
            if outcome.crash:
                notes[s.name] = outcome.crash
            elif outcome.rejected and s.sha256 is not None:
                notes[s.name] = f"rejected: {outcome.rejected}"
        shutil.rmtree(cache, ignore_errors=True)
        return MutantResult(mutant, caught, len(chosen), time.perf_counter() - start, notes)


def run_mutants(
    mutants: list[Mutant], streams: list[Stream], scratch: Path, jit: bool, jobs: int
) -> list[MutantResult] | None:
    """Every mutant on every stream of its versions, `jobs` mutants at a time (each job
    with its own copy of the package and warm cache); None if the unmutated copy fails."""
    runners: queue.Queue[Runner] = queue.Queue()
    start = time.perf_counter()

    def warm(index: int) -> list[str]:
        runner = Runner(scratch / f"job{index}", jit=jit)
        runner.scratch.mkdir(parents=True, exist_ok=True)
        baseline = runner.warm_up(streams)
        runners.put(runner)
        return [s.name for s in streams if baseline[s.name].caught(s)]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        failing = sorted({name for names in pool.map(warm, range(jobs)) for name in names})
    if failing:
        print(f"error: the unmutated decoder fails {', '.join(failing)}", file=sys.stderr)
        return None
    print(f"unmutated copy: {len(streams)} streams pass ({time.perf_counter() - start:.0f} s)")

    def run(mutant: Mutant) -> MutantResult:
        runner = runners.get()
        try:
            result = runner.run(mutant, streams)
        finally:
            runners.put(runner)
        flag = ""
        if mutant.equivalent and result.caught_by:
            flag = "  <-- an 'equivalent' rewrite is caught"
        elif not mutant.equivalent and len(result.caught_by) < TARGET_CATCHES:
            flag = "  <-- below target"
        print(
            f"{mutant.name:34s} caught by {len(result.caught_by):2d} / {result.tried}"
            f" ({result.seconds:.0f} s){flag}",
            flush=True,
        )
        return result

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(run, mutants))


# ---------------------------------------------------------------------------
# Coverage of the normative modules by the suite


COVERAGE_SCRIPT = r"""
import sys
from coolchic_ref.conformance import run_suite
results = run_suite(sys.argv[1])
failed = [r.line() for r in results if not r.passed]
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


def measure_coverage(scratch: Path, suite: Path = SUITE) -> dict:
    """Line coverage of NORMATIVE_MODULES by the conformance suite alone (NUMBA_DISABLE_JIT=1).

    Runs the reference runner on the suite in a fresh process under `coverage run`
    with the installed package (decoder/), then reports per module.
    """
    data_file = scratch / ".coverage"
    include = ",".join(str(DECODER / name) for name in NORMATIVE_MODULES)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env["NUMBA_DISABLE_JIT"] = "1"
    env["COVERAGE_FILE"] = str(data_file)
    script = scratch / "coverage_suite.py"
    script.write_text(COVERAGE_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "coverage", "run", f"--include={include}", str(script), str(suite)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the suite fails under coverage:\n{done.stdout}{done.stderr}")
    report = subprocess.run(
        [sys.executable, "-m", "coverage", "json", "-o", str(scratch / "coverage.json")],
        env=env,
        capture_output=True,
        text=True,
    )
    if report.returncode != 0:
        raise RuntimeError(f"coverage json failed: {report.stderr}")
    data = json.loads((scratch / "coverage.json").read_text())
    modules = {}
    for path, info in data["files"].items():
        summary = info["summary"]
        modules[Path(path).name] = {
            "statements": summary["num_statements"],
            "covered": summary["covered_lines"],
            "missing": info["missing_lines"],
        }
    statements = sum(m["statements"] for m in modules.values())
    covered = sum(m["covered"] for m in modules.values())
    return {
        "percent": 100.0 * covered / statements,
        "statements": statements,
        "covered": covered,
        "modules": modules,
    }


# ---------------------------------------------------------------------------
# The report


def _decoder_revision() -> str:
    """Commit of the worktree, and a hash of the decoder sources the mutants were applied to."""
    digest = hashlib.sha256()
    for path in sorted(DECODER.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return f"commit {commit or 'unknown'}, decoder sources sha256 {digest.hexdigest()[:12]}"


def _stream_list(names: list[str], limit: int = 12) -> str:
    numbers = [name.split("-", 1)[0] for name in names]
    text = ", ".join(numbers[:limit])
    return text + (f", ... (+{len(numbers) - limit})" if len(numbers) > limit else "")


def render_report(
    results: list[MutantResult],
    streams: list[Stream],
    coverage: dict | None,
    settings: str,
    command: str,
) -> str:
    versions = sorted({s.version for s in streams})
    lines = [
        "# Conformance suite: mutation analysis and coverage",
        "",
        f"Generated by `{command}` ({settings}); {_decoder_revision()}.",
        "Each mutant is a misreading of the spec applied to a copy of the reference decoder",
        "(catalogue and method: `tools/mutation.py`). A stream catches a mutant when the",
        "mutant's output breaks the conformance rule: a valid stream decoded to other samples",
        "(or rejected, or crashing), an invalid stream decoded to a picture.",
        f"Target: every real misreading caught by at least {TARGET_CATCHES} streams; the",
        "provably equivalent rewrites by none.",
        "",
    ]
    for version in versions:
        chosen = [s for s in streams if s.version == version]
        real = [r for r in results if version in r.mutant.versions and not r.mutant.equivalent]
        equivalent = [r for r in results if version in r.mutant.versions and r.mutant.equivalent]
        weak = [r for r in real if len(r.caught_by) < TARGET_CATCHES]
        lines += [
            f"## Bitstream version {version}",
            "",
            f"{len(chosen)} streams ({sum(s.sha256 is not None for s in chosen)} valid, "
            f"{sum(s.sha256 is None for s in chosen)} invalid); {len(real)} misreadings, "
            f"{len(real) - len(weak)} caught by at least {TARGET_CATCHES} streams"
            + (f"; below the target: {', '.join(r.mutant.name for r in weak)}." if weak else "."),
            "",
            "| mutant | spec | misreading | caught by | streams (number) |",
            "|---|---|---|---|---|",
        ]
        for r in real:
            lines.append(
                f"| `{r.mutant.name}` | {r.mutant.section} | {r.mutant.misreading} | "
                f"{len(r.caught_by)} / {r.tried} | {_stream_list(r.caught_by)} |"
            )
        if equivalent:
            lines += [
                "",
                "Provably equivalent rewrites (an implementation is free to write these):",
                "",
                "| rewrite | spec | what it changes | why it is equivalent | caught by |",
                "|---|---|---|---|---|",
            ]
            for r in equivalent:
                lines.append(
                    f"| `{r.mutant.name}` | {r.mutant.section} | {r.mutant.misreading} | "
                    f"{r.mutant.equivalent} | {len(r.caught_by)} / {r.tried} |"
                )
        counts = {s.name: 0 for s in chosen}
        for r in real:
            for name in r.caught_by:
                counts[name] = counts.get(name, 0) + 1
        lines += [
            "",
            "Misreadings caught by each stream:",
            "",
            ", ".join(f"{name.split('-', 1)[0]}: {n}" for name, n in counts.items()),
            "",
        ]
    if coverage is not None:
        lines += [
            "## Line coverage of the normative decoder modules by the suite alone",
            "",
            f"**{coverage['percent']:.1f} %** ({coverage['covered']} of {coverage['statements']}"
            " statements): `coverage run` of the reference runner on tests/conformance, with",
            "NUMBA_DISABLE_JIT=1 so that the kernels run as Python lines.",
            "",
            "| module | statements | covered | missing lines |",
            "|---|---|---|---|",
        ]
        for name, module in sorted(coverage["modules"].items()):
            missing = ", ".join(str(n) for n in module["missing"]) or "-"
            lines.append(f"| {name} | {module['statements']} | {module['covered']} | {missing} |")
        lines.append("")
    timing = sum(r.seconds for r in results)
    lines += [f"Mutant runs took {timing:.0f} s in all.", ""]
    return "\n".join(lines)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Mutation analysis and coverage of the conformance suite."
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="print the catalogue and exit")
    parser.add_argument("--check", action="store_true", help="check the catalogue applies; exit")
    parser.add_argument("--no-jit", action="store_true", help="run the copies as plain Python")
    parser.add_argument("--no-coverage", action="store_true", help="skip the coverage figure")
    parser.add_argument("--suite", type=Path, default=SUITE, help="conformance suite directory")
    parser.add_argument(
        "--jobs", type=int, default=2, help="mutants run at once (default 2, see the report)"
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="report (Markdown; raw counts in .json beside)"
    )
    args = parser.parse_args(argv)

    if args.list:
        for mutant in all_mutants():
            kind = "equivalent" if mutant.equivalent else "misreading"
            print(f"{mutant.name:34s} {mutant.section:14s} {kind}: {mutant.misreading}")
        return 0
    problems = check_catalogue()
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.check:
        print(f"catalogue OK: {len(MUTANTS)} misreadings, {len(EQUIVALENT)} equivalent rewrites")
        return 0
    mutants = all_mutants()
    if args.only:
        unknown = set(args.only) - {m.name for m in mutants}
        if unknown:
            print(f"error: unknown mutant(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 1
        mutants = [m for m in mutants if m.name in args.only]

    streams = load_suite(args.suite)
    with tempfile.TemporaryDirectory(prefix="cc-mutation-") as tmp:
        scratch = Path(tmp)
        start = time.perf_counter()
        results = run_mutants(mutants, streams, scratch, jit=not args.no_jit, jobs=args.jobs)
        if results is None:
            return 1
        print(f"mutants: {time.perf_counter() - start:.0f} s wall with {args.jobs} job(s)")
        coverage = None if args.no_coverage else measure_coverage(scratch, args.suite)
    if coverage is not None:
        print(f"coverage of the normative modules: {coverage['percent']:.1f} %")
    settings = "jitted, 1 Numba thread" if not args.no_jit else "NUMBA_DISABLE_JIT=1"
    settings += f", {args.jobs} job(s)"
    command = "python tools/mutation.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    _write_atomic(args.out, render_report(results, streams, coverage, settings, command))
    raw = {
        "settings": settings,
        "mutants": {
            r.mutant.name: {
                "equivalent": bool(r.mutant.equivalent),
                "versions": list(r.mutant.versions),
                "caught_by": r.caught_by,
                "tried": r.tried,
                "seconds": round(r.seconds, 1),
                "notes": r.notes,
            }
            for r in results
        },
        "coverage": coverage,
    }
    _write_atomic(args.out.with_suffix(".json"), json.dumps(raw, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
