"""Stream syntax: the bit layout of the header, in one place (spec section 3).

Everything here is parsing and validation; no picture-sized work happens until
`parse_header` has checked rules 1-5 of spec section 9.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .errors import StreamError

MAGIC = b"CCRF"
VERSION = 1

ARM_FRAC = 8  # ARM activations are Q8
SYN_FRAC = 12  # dense latent and synthesis activations are Q12
PRECISION = 24  # rANS probability precision, bits

MAX_SIDE = 16384
MAX_PIXELS = 1 << 24
MAX_GRIDS = 7
MAX_ARM_LAYERS = 5
MAX_SYN_LAYERS = 8
MAX_LAYER_WIDTH = 64
MAX_MAC_ARM = 8192
MAX_MAC_SYN = 16384
SYN_KERNELS = (1, 3, 5, 7)
MAX_WEIGHTS_BYTES = 1 << 24

ACTIVATION_NAMES = ("none", "relu", "leakyrelu")


class ColorFormat(IntEnum):
    GREY = 0
    RGB = 1
    YUV444 = 2
    YUV420 = 3


@dataclass(frozen=True)
class LayerSpec:
    """One ARM or synthesis layer (spec 3.3). ARM layers have kernel 1."""

    in_channels: int
    out_channels: int
    kernel: int
    residual: bool
    activation: int  # 0 none, 1 relu, 2 leakyrelu

    def describe(self) -> str:
        kind = "residual" if self.residual else "linear"
        return f"{self.out_channels}-{self.kernel}-{kind}-{ACTIVATION_NAMES[self.activation]}"

    @property
    def mac(self) -> int:
        return self.kernel * self.kernel * self.in_channels * self.out_channels

    @property
    def n_weights(self) -> int:
        return self.mac


@dataclass(frozen=True)
class ModuleQuant:
    """Fixed-point formats and exp-Golomb orders of one module's parameters."""

    w_shift: int
    b_shift: int
    w_egk: int
    b_egk: int


@dataclass(frozen=True)
class GridInfo:
    """Latent grid g: its size, alphabet and substream (spec 3.2, 5.1)."""

    height: int
    width: int
    latent_min: int
    latent_max: int
    substream_bytes: int

    @property
    def alphabet_size(self) -> int:
        return self.latent_max - self.latent_min + 1

    @property
    def is_constant(self) -> bool:
        return self.latent_min == self.latent_max


@dataclass(frozen=True)
class StreamHeader:
    color_format: ColorFormat
    bit_depth: int
    width: int
    height: int
    n_ctx_rowcol: int
    ups_half_taps: int
    arm_layers: tuple[LayerSpec, ...]
    syn_layers: tuple[LayerSpec, ...]
    arm_quant: ModuleQuant
    ups_shift: int
    ups_egk: int
    syn_quant: ModuleQuant
    weights_bytes: int
    grids: tuple[GridInfo, ...]
    header_bytes: int

    @property
    def n_grids(self) -> int:
        return len(self.grids)

    @property
    def n_channels(self) -> int:
        return 1 if self.color_format == ColorFormat.GREY else 3

    @property
    def dim_arm(self) -> int:
        return context_size(self.n_ctx_rowcol)

    @property
    def mac_arm(self) -> int:
        """ARM multiplications per coded latent."""
        return sum(layer.mac for layer in self.arm_layers)

    @property
    def mac_syn(self) -> int:
        """Synthesis multiplications per pixel."""
        return sum(layer.mac for layer in self.syn_layers)

    @property
    def substream_offsets(self) -> tuple[int, ...]:
        """Byte offset of each grid's substream in the stream."""
        offsets = []
        position = self.header_bytes + self.weights_bytes
        for grid in self.grids:
            offsets.append(position)
            position += grid.substream_bytes
        return tuple(offsets)

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.weights_bytes + sum(g.substream_bytes for g in self.grids)


def context_size(n_ctx_rowcol: int) -> int:
    """Number of causal context positions, 2 r (r + 1) (spec 5.2)."""
    return 2 * n_ctx_rowcol * (n_ctx_rowcol + 1)


def grid_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """(rows, columns) of latent grid `level`: ceil(H / 2^level), ceil(W / 2^level)."""
    return -(-height // (1 << level)), -(-width // (1 << level))


class _Reader:
    """Little-endian field reader that rejects reads past the end (rule 3)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise StreamError("truncated header")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise StreamError(message)


def _in_range(value: int, low: int, high: int, name: str) -> int:
    _check(low <= value <= high, f"{name} = {value} outside [{low}, {high}]")
    return value


def _read_layers(
    reader: _Reader, count: int, first_in: int, with_kernel: bool, what: str
) -> tuple[LayerSpec, ...]:
    layers = []
    in_channels = first_in
    for index in range(count):
        name = f"{what} layer {index}"
        out_channels = _in_range(reader.take("<B"), 1, MAX_LAYER_WIDTH, f"{name} out")
        kernel = reader.take("<B") if with_kernel else 1
        _check(kernel in SYN_KERNELS, f"{name} kernel = {kernel} not in {SYN_KERNELS}")
        layer_type = _in_range(reader.take("<B"), 0, 1, f"{name} type")
        activation = _in_range(reader.take("<B"), 0, 2, f"{name} activation")
        residual = layer_type == 1
        _check(
            not residual or out_channels == in_channels,
            f"{name} is residual but has {in_channels} inputs and {out_channels} outputs",
        )
        layers.append(LayerSpec(in_channels, out_channels, kernel, residual, activation))
        in_channels = out_channels
    return tuple(layers)


def _read_quant(reader: _Reader, frac: int, max_b_shift: int, what: str) -> ModuleQuant:
    w_shift = _in_range(reader.take("<B"), 0, 16, f"{what}_w_shift")
    b_shift = _in_range(reader.take("<B"), 0, max_b_shift, f"{what}_b_shift")
    _check(
        b_shift <= frac + w_shift,
        f"{what}_b_shift = {b_shift} exceeds {frac} + {what}_w_shift = {frac + w_shift}",
    )
    w_egk = _in_range(reader.take("<B"), 0, 16, f"{what}_w_egk")
    b_egk = _in_range(reader.take("<B"), 0, 16, f"{what}_b_egk")
    return ModuleQuant(w_shift, b_shift, w_egk, b_egk)


def parse_header(data: bytes) -> StreamHeader:
    """Parse and validate the header; check the stream length (spec 9, rules 1-5).

    Raises StreamError with a one-line message on any violation.
    """
    if len(data) < 5 or data[:4] != MAGIC:
        raise StreamError("not a coolchic-ref stream (bad magic)")
    reader = _Reader(data)
    reader.pos = 4
    version = reader.take("<B")
    _check(version == VERSION, f"unsupported version {version} (this decoder reads {VERSION})")

    color_format = ColorFormat(_in_range(reader.take("<B"), 0, 3, "color_format"))
    bit_depth = _in_range(reader.take("<B"), 8, 16, "bit_depth")
    width = _in_range(reader.take("<H"), 1, MAX_SIDE, "width")
    height = _in_range(reader.take("<H"), 1, MAX_SIDE, "height")
    _check(width * height <= MAX_PIXELS, f"picture {width}x{height} exceeds {MAX_PIXELS} pixels")
    n_grids = _in_range(reader.take("<B"), 1, MAX_GRIDS, "n_grids")
    n_ctx_rowcol = _in_range(reader.take("<B"), 1, 3, "n_ctx_rowcol")
    ups_half_taps = _in_range(reader.take("<B"), 1, 8, "ups_half_taps")
    n_arm_layers = _in_range(reader.take("<B"), 1, MAX_ARM_LAYERS, "n_arm_layers")
    n_syn_layers = _in_range(reader.take("<B"), 1, MAX_SYN_LAYERS, "n_syn_layers")

    arm_layers = _read_layers(reader, n_arm_layers, context_size(n_ctx_rowcol), False, "ARM")
    syn_layers = _read_layers(reader, n_syn_layers, n_grids, True, "synthesis")
    n_channels = 1 if color_format == ColorFormat.GREY else 3
    _check(arm_layers[-1].out_channels == 2, "last ARM layer must have 2 outputs")
    _check(
        syn_layers[-1].out_channels == n_channels,
        f"last synthesis layer must have {n_channels} outputs for this colour format",
    )
    mac_arm = sum(layer.mac for layer in arm_layers)
    mac_syn = sum(layer.mac for layer in syn_layers)
    _check(mac_arm <= MAX_MAC_ARM, f"ARM needs {mac_arm} MAC per latent, limit {MAX_MAC_ARM}")
    _check(mac_syn <= MAX_MAC_SYN, f"synthesis needs {mac_syn} MAC per pixel, limit {MAX_MAC_SYN}")

    arm_quant = _read_quant(reader, ARM_FRAC, 24, "arm")
    ups_shift = _in_range(reader.take("<B"), 0, 16, "ups_shift")
    ups_egk = _in_range(reader.take("<B"), 0, 16, "ups_egk")
    syn_quant = _read_quant(reader, SYN_FRAC, 28, "syn")
    weights_bytes = _in_range(reader.take("<I"), 1, MAX_WEIGHTS_BYTES, "weights_bytes")

    grids = []
    for level in range(n_grids):
        latent_min = reader.take("<h")
        latent_max = reader.take("<h")
        substream_bytes = reader.take("<I")
        _check(
            latent_min <= latent_max,
            f"grid {level}: latent_min {latent_min} > latent_max {latent_max}",
        )
        _check(substream_bytes % 4 == 0, f"grid {level}: substream size not a multiple of 4")
        _check(
            latent_min < latent_max or substream_bytes == 0,
            f"grid {level} is constant but has a {substream_bytes}-byte substream",
        )
        rows, cols = grid_shape(height, width, level)
        grids.append(GridInfo(rows, cols, latent_min, latent_max, substream_bytes))

    header = StreamHeader(
        color_format=color_format,
        bit_depth=bit_depth,
        width=width,
        height=height,
        n_ctx_rowcol=n_ctx_rowcol,
        ups_half_taps=ups_half_taps,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_quant=arm_quant,
        ups_shift=ups_shift,
        ups_egk=ups_egk,
        syn_quant=syn_quant,
        weights_bytes=weights_bytes,
        grids=tuple(grids),
        header_bytes=reader.pos,
    )
    expected = header.total_bytes
    if len(data) < expected:
        raise StreamError(f"truncated stream: {len(data)} bytes, header declares {expected}")
    if len(data) > expected:
        raise StreamError(f"trailing data: {len(data)} bytes, header declares {expected}")
    return header
