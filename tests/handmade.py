"""Hand-made streams for tests, written straight from the spec.

Independent of the encoder and of the decoder's processes: the header is
packed from the decoder's syntax table (spec 3.2, the one layout tools and
tests share), the weights with a tiny exp-Golomb writer (spec 4), and the
substreams with a pure-Python rANS encoder that inverts spec 5.5. The ARM has
a single layer with zero weights, so every latent of every grid gets the same
Laplace distribution (mu, log_scale from the two biases); that keeps the
encoder free of any ARM evaluation while still exercising real substreams.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from coolchic_ref.syntax import HEADER_V1, MAGIC, PRECISION, ColorFormat, context_size, grid_shape

SPEC_TABLES = Path(__file__).resolve().parent.parent / "spec" / "tables"


def _table(name: str) -> list[int]:
    return [int(line) for line in (SPEC_TABLES / name).read_text().split()]


EXP_NEG = _table("exp_neg_q30.txt")
INV_SCALE = _table("inv_scale_q20.txt")


# --- exp-Golomb (spec 4.2) -------------------------------------------------


def egk_code(value: int, k: int) -> str:
    """Order-k signed exp-Golomb code of `value`, as '0'/'1' characters."""
    u = 2 * value - 1 if value > 0 else -2 * value
    x = u + (1 << k)
    zeros = x.bit_length() - 1 - k
    return "0" * zeros + format(x, "b")


def pack_bits(bits: str) -> bytes:
    """MSB-first bytes of a bit string, the last byte padded with zero bits."""
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


# --- header (spec 3.2) ------------------------------------------------------


@dataclass
class HeaderFields:
    """Raw header field values, packed as they are (no validation).

    The layout (order, widths, signedness) is the decoder's syntax table
    (`coolchic_ref.syntax.HEADER_V1`, spec 3.2); tests/test_syntax_table.py
    checks that table against spec 3.2 and against a header packed byte by byte.
    """

    magic: bytes = MAGIC
    version: int = 1
    color_format: int = ColorFormat.GREY
    bit_depth: int = 8
    width: int = 8
    height: int = 8
    n_ctx_rowcol: int = 1
    ups_half_taps: int = 1
    # (out, type, act) per ARM layer; (out, kernel, type, act) per synthesis layer
    arm_layers: list[tuple[int, int, int]] = field(default_factory=lambda: [(2, 0, 0)])
    syn_layers: list[tuple[int, int, int, int]] = field(default_factory=lambda: [(1, 1, 0, 0)])
    arm_w_shift: int = 0
    arm_b_shift: int = 0
    arm_w_egk: int = 0
    arm_b_egk: int = 0
    ups_shift: int = 0
    ups_egk: int = 0
    syn_w_shift: int = 0
    syn_b_shift: int = 0
    syn_w_egk: int = 0
    syn_b_egk: int = 0
    weights_bytes: int = 1
    # (latent_min, latent_max, substream_bytes) per grid
    grids: list[tuple[int, int, int]] = field(default_factory=lambda: [(0, 0, 0)])
    n_grids: int | None = None  # None: len(grids)
    n_arm_layers: int | None = None
    n_syn_layers: int | None = None

    def values(self) -> dict:
        """The fields as `HeaderValues` of the syntax table (groups arm, syn, grid)."""
        values = {name: getattr(self, name) for name in HEADER_V1.fields if "." not in name}
        values.update(arm=self.arm_layers, syn=self.syn_layers, grid=self.grids)
        return values

    def pack(self) -> bytes:
        return HEADER_V1.pack(self.values())

    def stream(self, filler: int = 0) -> bytes:
        """Header plus sections of the declared lengths filled with `filler` bytes."""
        body = self.weights_bytes + sum(size for _, _, size in self.grids)
        return self.pack() + bytes([filler]) * body


# --- entropy coding (spec 5.4, 5.5) -------------------------------------------


def laplace_cdf(mu: int, log_scale: int, latent_min: int, alphabet: int) -> list[int]:
    """cdf(0..K) of spec 5.4, Python integers."""
    mass = (1 << PRECISION) - alphabet
    s = min(max(log_scale, -1536), 2048)
    inv = INV_SCALE[s + 1536]
    m = min(max(mu, -(1 << 23)), 1 << 23)

    def g(i: int) -> int:
        b = ((latent_min + i) << 8) - 128
        t = (abs(b - m) * inv) >> 20
        e = EXP_NEG[t] if t < 5632 else 0
        return e >> 1 if b < m else (1 << 30) - (e >> 1)

    cum = [g(i) for i in range(alphabet + 1)]
    d = cum[-1] - cum[0]
    if d > 0:
        return [i + (cum[i] - cum[0]) * mass // d for i in range(alphabet + 1)]
    return [i + i * mass // alphabet for i in range(alphabet + 1)]


def rans_encode(symbols: list[int], cdf: list[int]) -> bytes:
    """Substream (little-endian u32 words) that spec 5.5 decodes into `symbols`.

    Symbols are pushed in reverse (a stack coder); a word is flushed before a
    push would overflow the 64-bit state; the final state's words come first.
    """
    state = 0
    words: list[int] = []
    for s in reversed(symbols):
        freq = cdf[s + 1] - cdf[s]
        if (state >> (64 - PRECISION)) >= freq:
            words.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // freq) << PRECISION) | (state % freq + cdf[s])
    if state:
        words.append(state & 0xFFFFFFFF)
        if state >> 32:
            words.append(state >> 32)
    return struct.pack(f"<{len(words)}I", *reversed(words))


def wavefront(height: int, width: int, r: int) -> list[tuple[int, int]]:
    """Positions (y, x) in the wavefront order of spec 5.2."""
    return sorted(
        ((y, x) for y in range(height) for x in range(width)),
        key=lambda p: (p[1] + (r + 1) * p[0], p[0]),
    )


# --- complete streams -----------------------------------------------------------


def make_stream(
    width: int = 8,
    height: int = 6,
    color_format: int = 1,
    bit_depth: int = 8,
    n_grids: int = 3,
    seed: int = 0,
    mu_bias: int = 0,
    log_scale_bias: int = 1,
    syn_layers: list[tuple[int, int, int, int]] | None = None,
    constant: bool = False,
) -> bytes:
    """A valid stream (see `make_stream_with_latents`)."""
    return make_stream_with_latents(**locals())[0]


def make_stream_with_latents(
    width: int = 8,
    height: int = 6,
    color_format: int = 1,
    bit_depth: int = 8,
    n_grids: int = 3,
    seed: int = 0,
    mu_bias: int = 0,
    log_scale_bias: int = 1,
    syn_layers: list[tuple[int, int, int, int]] | None = None,
    constant: bool = False,
) -> tuple[bytes, list[np.ndarray]]:
    """A valid stream and its latent grids with random latents, taps and synthesis weights.

    ARM: one layer 2-1-linear-none with zero weights and biases (mu_bias,
    log_scale_bias), Q0 weights and biases, so mu = 256 mu_bias and
    log_scale = 256 log_scale_bias (Q8) at every position.
    constant=True makes every grid constant (no substreams).
    """
    rng = np.random.default_rng(seed)
    n_channels = ColorFormat(color_format).n_channels
    if syn_layers is None:
        syn_layers = [(4, 3, 0, 1), (4, 1, 1, 2), (n_channels, 1, 0, 0)]
    r = 1
    dim_arm = context_size(r)
    fields = HeaderFields(
        color_format=color_format,
        bit_depth=bit_depth,
        width=width,
        height=height,
        n_ctx_rowcol=r,
        ups_half_taps=2,
        arm_layers=[(2, 0, 0)],
        syn_layers=syn_layers,
        arm_w_egk=0,
        arm_b_egk=1,
        ups_shift=8,
        ups_egk=6,
        syn_w_shift=6,
        syn_b_shift=10,
        syn_w_egk=4,
        syn_b_egk=8,
    )
    # Weights section (spec 4.3)
    bits = [egk_code(0, fields.arm_w_egk) * (2 * dim_arm)]
    bits += [egk_code(v, fields.arm_b_egk) for v in (mu_bias, log_scale_bias)]
    bits += [egk_code(v, fields.ups_egk) for v in (170, -42)]
    in_channels = n_grids
    for out, kernel, _, _ in syn_layers:
        w = rng.integers(-12, 13, size=out * in_channels * kernel * kernel)
        b = rng.integers(0, 1025, size=out)  # Q10: 0 .. 1
        bits += [egk_code(int(v), fields.syn_w_egk) for v in w]
        bits += [egk_code(int(v), fields.syn_b_egk) for v in b]
        in_channels = out
    weights = pack_bits("".join(bits))
    fields.weights_bytes = len(weights)

    grids = []
    latents = []
    substreams = b""
    for level in range(n_grids):
        h, w = grid_shape(height, width, level)
        if constant:
            value = int(rng.integers(-3, 4))
            grids.append((value, value, 0))
            latents.append(np.full((h, w), value))
            continue
        latent = np.clip(np.rint(rng.laplace(0.0, 2.0, size=(h, w))), -9, 9).astype(int)
        latent[0, 0] = -9  # make sure K > 1
        latents.append(latent)
        latent_min, latent_max = int(latent.min()), int(latent.max())
        cdf = laplace_cdf(
            256 * mu_bias, 256 * log_scale_bias, latent_min, latent_max - latent_min + 1
        )
        symbols = [int(latent[y, x]) - latent_min for y, x in wavefront(h, w, r)]
        substream = rans_encode(symbols, cdf)
        grids.append((latent_min, latent_max, len(substream)))
        substreams += substream
    fields.grids = grids
    return fields.pack() + weights + substreams, latents
