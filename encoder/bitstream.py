"""The encoder's stream writer (spec bitstream-v1.md and bitstream-v2.md, sections 3 to 5).

An `IntegerCodec` is the complete integer description of one stream: header
values (the version included), quantized weights and latents. `write_stream`
validates it against the spec's limits, picks the exp-Golomb orders, writes the
header and the weights section, and entropy-codes each non-constant latent grid
with constriction's rANS coder (`constriction.stream.stack.AnsCoder`, 24-bit
precision), fed with the spec's exact integer frequency tables (section 5.4).

NumPy and constriction only: no torch, so tests and tools can build streams
without the deep-learning stack. This is an implementation independent of the
reference decoder (`coolchic_ref` decoder modules are never imported here).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from . import integer_model as im
from .format import (
    ACTIVATIONS,
    ARM_KERNELS,
    INT16_MAX,
    INT16_MIN,
    MAGIC,
    MAX_ARM_LAYERS,
    MAX_BIT_DEPTH,
    MAX_CROSS_GRIDS,
    MAX_EGK,
    MAX_GRIDS,
    MAX_LAYER_WIDTH,
    MAX_MAC_ARM,
    MAX_MAC_SYN,
    MAX_N_CTX_ROWCOL,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_SYN_LAYERS,
    MAX_UPS_SHIFT,
    MAX_UPS_TAPS,
    MAX_W_SHIFT,
    MAX_WEIGHTS_BYTES,
    MIN_BIT_DEPTH,
    SYN_KERNELS,
    VERSION_V1,
    VERSION_V2,
    VERSIONS,
    ColorFormat,
    LayerKind,
    context_size,
    grid_shape,
    header_bytes,
    max_arm_b_shift,
    max_cross_grids,
    max_syn_b_shift,
)

# Largest 2-D probability array handed to constriction at once (elements), so
# that grids with a large alphabet are coded in bounded memory.
_CHUNK_ELEMENTS = 1 << 17


@dataclass
class LayerDesc:
    """One layer (spec 3.3). ARM layers are fully connected: kernel must be 1."""

    out_channels: int
    kernel: int
    kind: LayerKind  # a coded value (0, 1) is converted to its LayerKind
    activation: str  # "none" | "relu" | "leakyrelu"

    def __post_init__(self) -> None:
        self.kind = LayerKind(self.kind)

    def describe(self) -> str:
        """Cool-chic's textual form, e.g. ``16-1-linear-relu``."""
        return f"{self.out_channels}-{self.kernel}-{self.kind.label}-{self.activation}"


@dataclass
class IntegerCodec:
    """Integer description of one stream.

    Weights are integers in [-32768, 32767]: ARM weights Q`arm_w_shift`, ARM
    biases Q`arm_b_shift`, upsampling taps Q`ups_shift`, synthesis weights
    Q`syn_w_shift`, synthesis biases Q`syn_b_shift`. Latents are integers in
    [-32768, 32767]; grid g has shape (ceil(H / 2^g), ceil(W / 2^g)).

    `version` is the stream's version (1 or 2). It defaults to 1 so that a codec
    built without it (random codecs, the conformance tools) writes the v1 stream it
    always wrote; the encoder passes the version it was asked for. `cross_grids` is
    v2's C (0 in v1): the first ARM layer has `arm_inputs = dim_arm + C` inputs, the
    spatial context first (v2 5.2a).
    """

    color_format: ColorFormat  # validate_codec rejects a value outside ColorFormat
    bit_depth: int
    width: int
    height: int
    n_ctx_rowcol: int
    arm_layers: list[LayerDesc]
    syn_layers: list[LayerDesc]
    arm_weights: list[tuple[np.ndarray, np.ndarray]]  # (W (out, in), B (out,))
    ups_taps: np.ndarray  # (T,)
    syn_weights: list[tuple[np.ndarray, np.ndarray]]  # (W (out, in, k, k), B (out,))
    arm_w_shift: int
    arm_b_shift: int
    ups_shift: int
    syn_w_shift: int
    syn_b_shift: int
    latents: list[np.ndarray]
    version: int = VERSION_V1
    cross_grids: int = 0

    @property
    def n_grids(self) -> int:
        return len(self.latents)

    @property
    def n_channels(self) -> int:
        return ColorFormat(self.color_format).n_channels

    @property
    def dim_arm(self) -> int:
        """Spatial context size 2 r (r + 1) (spec 5.2), without the cross-grid inputs."""
        return context_size(self.n_ctx_rowcol)

    @property
    def arm_inputs(self) -> int:
        """Inputs of the first ARM layer: dim_arm + cross_grids (v2 3.3, 5.2a)."""
        return self.dim_arm + self.cross_grids


def parse_layers(text: str) -> list[LayerDesc]:
    """Parse ``<out>-<kernel>-<linear|residual>-<none|relu|leakyrelu>,...`` (spec 3.3)."""
    layers = []
    for item in text.split(","):
        item = item.strip()
        parts = item.split("-")
        if len(parts) != 4:
            raise ValueError(f"layer {item!r}: expected <out>-<kernel>-<type>-<activation>")
        out_text, kernel_text, kind, activation = parts
        try:
            out_channels, kernel = int(out_text), int(kernel_text)
        except ValueError as error:
            raise ValueError(f"layer {item!r}: out and kernel must be integers") from error
        try:
            layer_kind = LayerKind.from_label(kind)
        except ValueError:
            kinds = " or ".join(repr(k.label) for k in LayerKind)
            raise ValueError(f"layer {item!r}: type must be {kinds}") from None
        if activation not in ACTIVATIONS:
            raise ValueError(f"layer {item!r}: activation must be one of {ACTIVATIONS}")
        layers.append(LayerDesc(out_channels, kernel, layer_kind, activation))
    return layers


def format_layers(layers: list[LayerDesc]) -> str:
    """Inverse of `parse_layers`."""
    return ",".join(layer.describe() for layer in layers)


# ---------------------------------------------------------------------------
# Validation (spec 3.2 - 3.4 and the weight range of 4.2)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _in_range(value: int, low: int, high: int, name: str) -> None:
    _require(
        isinstance(value, (int, np.integer)) and low <= value <= high,
        f"{name} = {value!r} outside [{low}, {high}]",
    )


def _integer_array(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`array` as int64 after checking dtype, shape and the int16 range."""
    array = np.asarray(array)
    _require(
        array.dtype.kind in "iu" or array.dtype == bool,
        f"{name}: dtype {array.dtype} is not an integer type",
    )
    _require(array.shape == shape, f"{name}: shape {array.shape}, expected {shape}")
    array = array.astype(np.int64)
    if array.size:
        low, high = int(array.min()), int(array.max())
        _require(
            INT16_MIN <= low and high <= INT16_MAX,
            f"{name}: values in [{low}, {high}] exceed [{INT16_MIN}, {INT16_MAX}]",
        )
    return array


def _check_layers(
    layers: list[LayerDesc], first_in: int, max_count: int, what: str, kernels: tuple[int, ...]
) -> int:
    """Check a layer stack (spec 3.3); return its MAC count per position."""
    _require(1 <= len(layers) <= max_count, f"{what}: {len(layers)} layers, allowed 1..{max_count}")
    in_channels, mac = first_in, 0
    for index, layer in enumerate(layers):
        name = f"{what} layer {index}"
        _in_range(layer.out_channels, 1, MAX_LAYER_WIDTH, f"{name} out_channels")
        _require(layer.kernel in kernels, f"{name}: kernel {layer.kernel} not in {kernels}")
        _require(layer.activation in ACTIVATIONS, f"{name}: activation {layer.activation!r}")
        _require(
            not layer.kind.adds_input or layer.out_channels == in_channels,
            f"{name}: {layer.kind.label} layer needs out_channels == inputs ({in_channels})",
        )
        mac += layer.kernel * layer.kernel * in_channels * layer.out_channels
        in_channels = layer.out_channels
    return mac


def validate_codec(codec: IntegerCodec) -> None:
    """Raise ValueError if `codec` cannot be written as a conforming stream."""
    _in_range(codec.color_format, min(ColorFormat), max(ColorFormat), "color_format")
    _in_range(codec.bit_depth, MIN_BIT_DEPTH, MAX_BIT_DEPTH, "bit_depth")
    _in_range(codec.width, 1, MAX_SIDE, "width")
    _in_range(codec.height, 1, MAX_SIDE, "height")
    _require(
        codec.width * codec.height <= MAX_PIXELS,
        f"picture {codec.width}x{codec.height} exceeds {MAX_PIXELS} samples",
    )
    _require(
        codec.version in VERSIONS,
        f"version = {codec.version!r}: this encoder writes versions {VERSIONS}",
    )
    _in_range(len(codec.latents), 1, MAX_GRIDS, "number of grids")
    _in_range(codec.n_ctx_rowcol, 1, MAX_N_CTX_ROWCOL, "n_ctx_rowcol")
    if codec.version == VERSION_V1:
        _require(
            codec.cross_grids == 0,
            f"cross_grids = {codec.cross_grids!r}: version 1 streams have no cross-grid "
            "context (version 2 has)",
        )
    else:
        _in_range(
            codec.cross_grids,
            0,
            max_cross_grids(codec.version, len(codec.latents)),
            f"cross_grids (at most {MAX_CROSS_GRIDS} and n_grids - 1)",
        )
    n_taps = len(np.asarray(codec.ups_taps).reshape(-1))
    _in_range(n_taps, 1, MAX_UPS_TAPS, "number of upsampling taps")
    mac_arm = _check_layers(codec.arm_layers, codec.arm_inputs, MAX_ARM_LAYERS, "ARM", ARM_KERNELS)
    mac_syn = _check_layers(
        codec.syn_layers, codec.n_grids, MAX_SYN_LAYERS, "synthesis", SYN_KERNELS
    )
    _require(codec.arm_layers[-1].out_channels == 2, "last ARM layer must have 2 outputs")
    _require(
        codec.syn_layers[-1].out_channels == codec.n_channels,
        f"last synthesis layer must have {codec.n_channels} outputs for this colour format",
    )
    _require(mac_arm <= MAX_MAC_ARM, f"ARM needs {mac_arm} MAC per latent, limit {MAX_MAC_ARM}")
    _require(
        mac_syn <= MAX_MAC_SYN, f"synthesis needs {mac_syn} MAC per pixel, limit {MAX_MAC_SYN}"
    )
    _in_range(codec.arm_w_shift, 0, MAX_W_SHIFT, "arm_w_shift")
    _in_range(codec.arm_b_shift, 0, max_arm_b_shift(codec.arm_w_shift), "arm_b_shift")
    _in_range(codec.ups_shift, 0, MAX_UPS_SHIFT, "ups_shift")
    _in_range(codec.syn_w_shift, 0, MAX_W_SHIFT, "syn_w_shift")
    _in_range(codec.syn_b_shift, 0, max_syn_b_shift(codec.syn_w_shift), "syn_b_shift")

    for what, layers, weights, first_in, conv in (
        ("ARM", codec.arm_layers, codec.arm_weights, codec.arm_inputs, False),
        ("synthesis", codec.syn_layers, codec.syn_weights, codec.n_grids, True),
    ):
        _require(
            len(weights) == len(layers),
            f"{what}: {len(weights)} (W, B) pairs for {len(layers)} layers",
        )
        in_channels = first_in
        for index, (layer, (w, b)) in enumerate(zip(layers, weights, strict=True)):
            shape = (layer.out_channels, in_channels)
            if conv:
                shape += (layer.kernel, layer.kernel)
            _integer_array(w, shape, f"{what} layer {index} weights")
            _integer_array(b, (layer.out_channels,), f"{what} layer {index} biases")
            in_channels = layer.out_channels
    taps = np.asarray(codec.ups_taps)
    _integer_array(taps, (taps.size,), "upsampling taps")
    for level, latent in enumerate(codec.latents):
        shape = grid_shape(codec.height, codec.width, level)
        _integer_array(latent, shape, f"grid {level} latents")


# ---------------------------------------------------------------------------
# Signed exp-Golomb codes (spec 4.2)


def zigzag(values: np.ndarray) -> np.ndarray:
    """Zigzag index u of each value: 0, 1, -1, 2, -2, ... map to 0, 1, 2, 3, 4, ..."""
    v = np.asarray(values, dtype=np.int64)
    return np.where(v > 0, 2 * v - 1, -2 * v)


def egk_bits(values: np.ndarray, k: int) -> int:
    """Total length in bits of the order-k signed exp-Golomb codes of `values`.

    The code of x = u + 2^k (u the zigzag index) is z zeros then x in z + k + 1
    bits, with z + k + 1 the bit length of x: 2 * bitlen(x) - k - 1 bits.
    """
    x = zigzag(values) + (1 << k)
    _, bit_length = np.frexp(x.astype(np.float64))  # exact: x < 2^18
    return int(np.sum(2 * bit_length.astype(np.int64) - k - 1))


def choose_egk(values: np.ndarray) -> int:
    """The order k in 0..16 that minimizes the coded bits (smallest k on ties)."""
    costs = [egk_bits(values, k) for k in range(MAX_EGK + 1)]
    return int(np.argmin(costs))


def egk_code(value: int, k: int) -> str:
    """Order-k signed exp-Golomb code of `value` as a string of '0'/'1'."""
    u = 2 * value - 1 if value > 0 else -2 * value
    x = u + (1 << k)
    zeros = x.bit_length() - 1 - k
    return "0" * zeros + format(x, "b")


class _BitWriter:
    """Collects bits, most significant bit of each byte first (spec 4.1)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write_egk(self, values: np.ndarray, k: int) -> None:
        self.parts.extend(egk_code(int(v), k) for v in np.asarray(values).reshape(-1))

    def to_bytes(self) -> bytes:
        bits = "".join(self.parts)
        bits += "0" * (-len(bits) % 8)  # the remaining bits of the last byte are 0
        return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


@dataclass
class _Orders:
    arm_w: int
    arm_b: int
    ups: int
    syn_w: int
    syn_b: int


def _weights_section(codec: IntegerCodec) -> tuple[bytes, _Orders]:
    """Weights section bytes (spec 4.3) and the exp-Golomb orders it uses."""

    def flat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.asarray(a, dtype=np.int64).reshape(-1) for a in arrays])

    orders = _Orders(
        arm_w=choose_egk(flat([w for w, _ in codec.arm_weights])),
        arm_b=choose_egk(flat([b for _, b in codec.arm_weights])),
        ups=choose_egk(np.asarray(codec.ups_taps, dtype=np.int64).reshape(-1)),
        syn_w=choose_egk(flat([w for w, _ in codec.syn_weights])),
        syn_b=choose_egk(flat([b for _, b in codec.syn_weights])),
    )
    writer = _BitWriter()
    # W[o][i] (o outer) is C order of the (out, in) array; W[o][i][ky][kx]
    # likewise of (out, in, k, k).
    for w, b in codec.arm_weights:
        writer.write_egk(w, orders.arm_w)
        writer.write_egk(b, orders.arm_b)
    writer.write_egk(codec.ups_taps, orders.ups)
    for w, b in codec.syn_weights:
        writer.write_egk(w, orders.syn_w)
        writer.write_egk(b, orders.syn_b)
    return writer.to_bytes(), orders


# ---------------------------------------------------------------------------
# Latents (spec 5)


def wavefront_order(height: int, width: int, n_ctx_rowcol: int) -> np.ndarray:
    """Raster indices (y * width + x) of a grid's positions in wavefront order (spec 5.2).

    Sorted by the diagonal d = x + (r + 1) y, then by y.
    """
    y, x = np.divmod(np.arange(height * width, dtype=np.int64), width)
    diagonal = x + (n_ctx_rowcol + 1) * y
    return np.lexsort((y, diagonal))


def encode_grid(codec: IntegerCodec, level: int) -> bytes:
    """rANS substream of grid `level` (spec 5.5); empty for a constant grid.

    Costs O(latents x K): constriction takes each latent's full frequency
    table. Fine for trained codecs (K of a few tens); a large picture with an
    int16-wide alphabet (K up to 65536) takes minutes.
    """
    import constriction  # imported here: only stream writing needs it

    latent = np.asarray(codec.latents[level], dtype=np.int64)
    latent_min, latent_max = int(latent.min()), int(latent.max())
    alphabet = latent_max - latent_min + 1
    if alphabet == 1:
        return b""
    mu, log_scale = im.arm_mu_log_scale(codec, level)
    order = wavefront_order(latent.shape[0], latent.shape[1], codec.n_ctx_rowcol)
    symbols = (latent.reshape(-1)[order] - latent_min).astype(np.int32)
    mu = mu.reshape(-1)[order]
    log_scale = log_scale.reshape(-1)[order]

    coder = constriction.stream.stack.AnsCoder()
    # perfect=False: constriction's fast quantization maps probabilities p_i
    # with sum(p) = 2^24 - K to cdf(i) = sum_{j<i} p_j + i, exactly the spec's
    # integer cdf when p_i = f_i - 1 (integers < 2^24 are exact in float32
    # and float64). tests/test_bitstream_writer.py checks this.
    family = constriction.stream.model.Categorical(perfect=False)
    rows = max(1, _CHUNK_ELEMENTS // (alphabet + 1))
    starts = range(0, symbols.size, rows)
    # A stack coder decodes in reverse of encoding: code the last chunk first,
    # each with encode_reverse, so that decoding follows the wavefront order.
    for start in reversed(starts):
        stop = min(start + rows, symbols.size)
        cdf = im.laplace_cdf_table(mu[start:stop], log_scale[start:stop], latent_min, alphabet)
        probabilities = (np.diff(cdf, axis=1) - 1).astype(np.float64)
        coder.encode_reverse(symbols[start:stop], family, probabilities)
    words = np.asarray(coder.get_compressed(), dtype=np.uint32)
    # constriction's decoder pops words from the end: store them reversed so
    # that the spec's decoder reads them front to back.
    return words[::-1].astype("<u4").tobytes()


# ---------------------------------------------------------------------------
# The stream


def _layer_bytes(layers: list[LayerDesc], with_kernel: bool) -> bytes:
    data = b""
    for layer in layers:
        fields = [layer.out_channels]
        if with_kernel:
            fields.append(layer.kernel)
        fields += [int(layer.kind), ACTIVATIONS.index(layer.activation)]
        data += bytes(fields)
    return data


def _header(
    codec: IntegerCodec, orders: _Orders, weights_bytes: int, substreams: list[bytes]
) -> bytes:
    """The header (spec 3.2 of v1 and v2): the one place that knows its layout.

    Version 2 is version 1 with one u8, cross_grids, inserted after n_syn_layers
    (offset 16); every later field moves one byte up.
    """
    header = MAGIC + struct.pack(
        "<BBBHHBBBBB",
        codec.version,
        codec.color_format,
        codec.bit_depth,
        codec.width,
        codec.height,
        codec.n_grids,
        codec.n_ctx_rowcol,
        len(np.asarray(codec.ups_taps).reshape(-1)),
        len(codec.arm_layers),
        len(codec.syn_layers),
    )
    if codec.version >= VERSION_V2:
        header += bytes([codec.cross_grids])
    header += _layer_bytes(codec.arm_layers, with_kernel=False)
    header += _layer_bytes(codec.syn_layers, with_kernel=True)
    header += bytes(
        [
            codec.arm_w_shift,
            codec.arm_b_shift,
            orders.arm_w,
            orders.arm_b,
            codec.ups_shift,
            orders.ups,
            codec.syn_w_shift,
            codec.syn_b_shift,
            orders.syn_w,
            orders.syn_b,
        ]
    )
    header += struct.pack("<I", weights_bytes)
    for latent, substream in zip(codec.latents, substreams, strict=True):
        latent = np.asarray(latent)
        _require(len(substream) < 1 << 32, "substream longer than 2^32 - 1 bytes")
        header += struct.pack("<hhI", int(latent.min()), int(latent.max()), len(substream))
    expected = header_bytes(
        codec.version, len(codec.arm_layers), len(codec.syn_layers), codec.n_grids
    )
    assert len(header) == expected, (len(header), expected)
    return header


def write_stream(codec: IntegerCodec) -> bytes:
    """Validate `codec` and return the complete stream (spec 3.1), of `codec.version`."""
    validate_codec(codec)
    weights, orders = _weights_section(codec)
    _require(
        1 <= len(weights) <= MAX_WEIGHTS_BYTES,
        f"weights section of {len(weights)} bytes exceeds {MAX_WEIGHTS_BYTES}",
    )
    substreams = [encode_grid(codec, level) for level in range(codec.n_grids)]
    header = _header(codec, orders, len(weights), substreams)
    return header + weights + b"".join(substreams)
