"""Weights section: signed exp-Golomb integers, read MSB first (spec section 4).

The parameter counts are small (at most about 25,000 by the limits of spec 3.4),
so this is plain Python. The section is turned once into a string of '0'/'1'
characters: `str.find` then counts a run of leading zeros and `int(s, 2)` reads
a field, both in C, which keeps 5000 parameters at a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StreamError
from .syntax import StreamHeader

MAX_CODE_BITS = 17  # z + k, spec 4.2
WEIGHT_MIN = -32768
WEIGHT_MAX = 32767
# Longest code word: z zeros, the 1, then z + k bits, with z + k <= 17 (k = 0).
MAX_BITS_PER_PARAMETER = 2 * MAX_CODE_BITS + 1


@dataclass
class NetworkWeights:
    """The integer parameters of the three modules, as coded (spec 4.3).

    arm: per ARM layer (W (out, in) int32 Q`arm_w_shift`, B (out,) int32 Q`arm_b_shift`).
    ups_taps: (T,) int32 Q`ups_shift`, the folded upsampling taps v[0..T-1].
    synthesis: per layer (W (out, in, k, k) int32 Q`syn_w_shift`, B (out,) int32
    Q`syn_b_shift`).
    """

    arm: list[tuple[np.ndarray, np.ndarray]]
    ups_taps: np.ndarray
    synthesis: list[tuple[np.ndarray, np.ndarray]]

    @property
    def n_parameters(self) -> int:
        layers = self.arm + self.synthesis
        return self.ups_taps.size + sum(w.size + b.size for w, b in layers)


class BitReader:
    """MSB-first reader over a byte string that never reads past its end (spec 4.1).

    `limit_bits` caps how many bits are expanded: a caller that knows it can
    never consume more than that many bits avoids expanding a huge section.
    Reads beyond the expanded part and within the section cannot happen then;
    reads beyond the section raise "weights section truncated".
    """

    def __init__(self, data: bytes | memoryview, limit_bits: int | None = None) -> None:
        n_bytes = len(data)
        if limit_bits is not None:
            n_bytes = min(n_bytes, -(-limit_bits // 8))
        head = bytes(data[:n_bytes])
        self.bits = bin(int.from_bytes(head, "big") | (1 << (8 * n_bytes)))[3:] if head else ""
        self.size = len(self.bits)
        self.pos = 0

    def read_bits(self, n: int) -> int:
        """The next n bits as an unsigned integer, first bit most significant."""
        end = self.pos + n
        if end > self.size:
            raise StreamError("weights section truncated")
        value = int(self.bits[self.pos : end], 2) if n else 0
        self.pos = end
        return value

    def read_egk(self, k: int) -> int:
        """One signed exp-Golomb value of order k, with the rejections of spec 4.2."""
        bits = self.bits
        pos = self.pos
        # The zero run may be at most 17 - k long: the (18 - k)-th zero rejects.
        max_zeros = MAX_CODE_BITS - k
        one = bits.find("1", pos, pos + max_zeros + 1)
        if one < 0:
            if pos + max_zeros + 1 <= self.size:
                raise StreamError("weight code too long")
            raise StreamError("weights section truncated")
        n = one - pos + k  # z + k
        end = one + 1 + n
        if end > self.size:
            raise StreamError("weights section truncated")
        u = int(bits[one:end], 2) - (1 << k)  # bits[one] is x's leading 1
        self.pos = end
        v = (u + 1) >> 1 if u & 1 else -(u >> 1)
        if v < WEIGHT_MIN or v > WEIGHT_MAX:
            raise StreamError("weight out of range")
        return v

    def read_egk_array(self, count: int, k: int) -> list[int]:
        return [self.read_egk(k) for _ in range(count)]


def _count_parameters(header: StreamHeader) -> int:
    layers = header.arm_layers + header.syn_layers
    return header.ups_half_taps + sum(layer.n_weights + layer.out_channels for layer in layers)


def read_weights(header: StreamHeader, section: bytes | memoryview) -> NetworkWeights:
    """Decode the weights section (spec 4.3); `section` is all of it (`weights_bytes` long).

    Raises StreamError "weight code too long", "weight out of range",
    "weights section truncated" or "weights section size mismatch".
    """
    n_bytes = len(section)
    limit = _count_parameters(header) * MAX_BITS_PER_PARAMETER
    reader = BitReader(section, limit_bits=limit)

    def read_layers(layers, quant, conv: bool) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for layer in layers:
            shape = (layer.out_channels, layer.in_channels)
            if conv:
                shape += (layer.kernel, layer.kernel)
            w = np.array(reader.read_egk_array(layer.n_weights, quant.w_egk), dtype=np.int32)
            b = np.array(reader.read_egk_array(layer.out_channels, quant.b_egk), dtype=np.int32)
            out.append((w.reshape(shape), b))
        return out

    arm = read_layers(header.arm_layers, header.arm_quant, conv=False)
    taps = np.array(reader.read_egk_array(header.ups_half_taps, header.ups_egk), dtype=np.int32)
    synthesis = read_layers(header.syn_layers, header.syn_quant, conv=True)

    # The last parameter must end in the last byte, padded with zero bits.
    used_bytes = -(-reader.pos // 8)
    if used_bytes != n_bytes or reader.read_bits(8 * used_bytes - reader.pos) != 0:
        raise StreamError(
            f"weights section size mismatch: {reader.pos} bits of parameters "
            f"in a {n_bytes}-byte section"
        )
    return NetworkWeights(arm=arm, ups_taps=taps, synthesis=synthesis)
