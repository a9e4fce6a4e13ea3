"""Reading a conformance stream back: its layout, and the integer codec it codes.

The header is read with the decoder's syntax table (`coolchic_ref.syntax`,
spec 3.2: field names, offsets and widths, read without validation). Everything
that decides samples is read with the encoder's tools only: the weights
section bit by bit (spec 4.1, 4.2), the rANS substreams with constriction
driven by the encoder's integer ARM and Laplace tables (spec 5). The reference
decoder's weights reader, entropy decoder and pipeline are not used, and
`write_stream` of the codec read must give the stream back (checked by the
generator), so the encoder's writer vouches for the header read too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import (
    ACTIVATIONS,
    IntegerCodec,
    LayerDesc,
    context_size,
    grid_shape,
    wavefront_order,
)
from coolchic_ref.encoder.format import LayerKind
from coolchic_ref.syntax import HEADER_V1, SYNTAX, Located, SyntaxTable

EGK_NAMES = ("arm_w_egk", "arm_b_egk", "ups_egk", "syn_w_egk", "syn_b_egk")


@dataclass
class StreamLayout:
    """Header values and section offsets of a stream whose header is complete."""

    values: dict[str, Any]  # the syntax table's raw header values
    fields: dict[str, Located]  # every header field by name (`width`, `grid1.latent_max`)
    header_bytes: int
    substream_offsets: list[int]

    @property
    def weights_bytes(self) -> int:
        return self.values["weights_bytes"]

    @property
    def weights(self) -> tuple[int, int]:
        """Byte range of the weights section."""
        return self.header_bytes, self.header_bytes + self.weights_bytes

    @property
    def grids(self) -> list[dict[str, int]]:
        """Per grid: latent_min, latent_max, substream_bytes."""
        return self.values["grid"]

    @property
    def empty_coded_grids(self) -> list[int]:
        """Grids with an alphabet K > 1 but no substream (every latent is latent_min, 5.5)."""
        return [
            level
            for level, grid in enumerate(self.grids)
            if grid["latent_min"] < grid["latent_max"] and grid["substream_bytes"] == 0
        ]

    @property
    def orders(self) -> dict[str, int]:
        """Exp-Golomb orders by prefix: arm_w, arm_b, ups, syn_w, syn_b."""
        return {name[: -len("_egk")]: self.values[name] for name in EGK_NAMES}


def syntax_of(data: bytes) -> SyntaxTable:
    """The syntax table of the stream's version (version 1 for an unknown one, so that
    invalid streams with a broken version byte can still be laid out)."""
    return SYNTAX.get(data[4] if len(data) > 4 else 1, HEADER_V1)


def stream_layout(data: bytes) -> StreamLayout:
    """The layout of `data` from the syntax table (its header must be complete)."""
    table = syntax_of(data)
    values = table.read(data)
    header_bytes = table.header_size(data)
    offsets, offset = [], header_bytes + values["weights_bytes"]
    for grid in values["grid"]:
        offsets.append(offset)
        offset += grid["substream_bytes"]
    fields = {located.name: located for located in table.locate(data)}
    return StreamLayout(values, fields, header_bytes, offsets)


def set_field(data: bytes, name: str, value: int) -> bytes:
    """`data` with header field `name` (e.g. `grid1.latent_max`) set to `value`."""
    out = bytearray(data)
    stream_layout(data).fields[name].write(out, value)
    return bytes(out)


def code_bits(value: int, k: int) -> int:
    """z + k of the order-k exp-Golomb code of `value` (spec 4.2): its length is 2 z + k + 1."""
    u = 2 * value - 1 if value > 0 else -2 * value
    return (u + (1 << k)).bit_length() - 1


class _Bits:
    """MSB-first bits of a byte string (spec 4.1)."""

    def __init__(self, data: bytes) -> None:
        self.bits = "".join(format(byte, "08b") for byte in data)
        self.pos = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("weights section truncated")
        value = int(self.bits[self.pos : self.pos + n], 2) if n else 0
        self.pos += n
        return value

    def egk(self, k: int) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
        u = ((1 << (zeros + k)) | self.read(zeros + k)) - (1 << k)
        return (u + 1) // 2 if u % 2 else -(u // 2)

    def values(self, count: int, k: int) -> np.ndarray:
        return np.array([self.egk(k) for _ in range(count)], dtype=np.int64)


def _decode_grid(
    codec: IntegerCodec, level: int, words: np.ndarray, latent_min: int, alphabet: int
) -> np.ndarray:
    """Grid `level`'s latents from its substream, with constriction's rANS decoder.

    Diagonal by diagonal in wavefront order (spec 5.2): the ARM (the encoder's
    integer model) runs on the contexts of a whole diagonal, then constriction
    decodes the diagonal's symbols with the spec's integer frequencies.
    """
    import constriction

    height, width = grid_shape(codec.height, codec.width, level)
    latent = np.zeros((height, width), dtype=np.int64)
    if words.size == 0:  # spec 5.5: state 0, every symbol decodes to s = 0
        return latent + latent_min
    # The stream stores constriction's compressed words in reverse order.
    coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words[::-1], dtype=np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    r = codec.n_ctx_rowcol
    order = wavefront_order(height, width, r)
    y_all, x_all = np.divmod(order, width)
    diagonal = x_all + (r + 1) * y_all
    bounds = np.flatnonzero(np.diff(diagonal)) + 1
    offsets = im.context_offsets(r)
    # v2 5.2a: the coarser grids are decoded already (read_codec goes coarsest first);
    # the encoder's model gives their values for the whole grid, raster order.
    grids = [*codec.latents[:level], latent, *codec.latents[level + 1 :]]
    cross = im.cross_contexts(grids, level, codec.cross_grids)
    for ys, xs in zip(np.split(y_all, bounds), np.split(x_all, bounds), strict=True):
        contexts = np.zeros((len(offsets) + codec.cross_grids, ys.size), dtype=np.int64)
        for j, (dy, dx) in enumerate(offsets):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (xx >= 0) & (xx < width)
            contexts[j, inside] = latent[yy[inside], xx[inside]]
        contexts[len(offsets) :] = cross[:, ys * width + xs]
        mu, log_scale = im.run_arm(codec, contexts)
        cdf = im.laplace_cdf_table(mu, log_scale, latent_min, alphabet)
        probabilities = (np.diff(cdf, axis=1) - 1).astype(np.float64)
        latent[ys, xs] = np.asarray(coder.decode(family, probabilities)) + latent_min
    if not coder.is_empty():
        raise ValueError(f"grid {level}: substream not fully consumed")
    return latent


def read_codec(data: bytes) -> IntegerCodec:
    """The integer codec a valid stream codes.

    A grid whose header declares K > 1 but has no substream decodes to
    latent_min everywhere (spec 5.5); `write_stream` of the codec then writes
    it as a constant grid (a different but equivalent stream).
    """
    layout = stream_layout(data)
    v = layout.values
    arm_layers = [
        LayerDesc(a["out"], 1, LayerKind(a["type"]), ACTIVATIONS[a["act"]]) for a in v["arm"]
    ]
    syn_layers = [
        LayerDesc(s["out"], s["kernel"], LayerKind(s["type"]), ACTIVATIONS[s["act"]])
        for s in v["syn"]
    ]
    start, end = layout.weights
    bits = _Bits(data[start:end])

    def layers_weights(layers: list[LayerDesc], c_in: int, w_k: int, b_k: int, conv: bool):
        weights = []
        for layer in layers:
            shape = (layer.out_channels, c_in) + ((layer.kernel,) * 2 if conv else ())
            w = bits.values(int(np.prod(shape)), w_k).reshape(shape)
            weights.append((w, bits.values(layer.out_channels, b_k)))
            c_in = layer.out_channels
        return weights

    r = v["n_ctx_rowcol"]
    cross_grids = v.get("cross_grids", 0)  # v2 only
    arm_inputs = context_size(r) + cross_grids
    arm_weights = layers_weights(arm_layers, arm_inputs, v["arm_w_egk"], v["arm_b_egk"], False)
    taps = bits.values(v["ups_half_taps"], v["ups_egk"])
    syn_weights = layers_weights(syn_layers, v["n_grids"], v["syn_w_egk"], v["syn_b_egk"], True)
    if -(-bits.pos // 8) != layout.weights_bytes or bits.read(len(bits.bits) - bits.pos) != 0:
        raise ValueError("weights section size mismatch")

    codec = IntegerCodec(
        color_format=v["color_format"],
        bit_depth=v["bit_depth"],
        width=v["width"],
        height=v["height"],
        n_ctx_rowcol=r,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_weights=arm_weights,
        ups_taps=taps,
        syn_weights=syn_weights,
        arm_w_shift=v["arm_w_shift"],
        arm_b_shift=v["arm_b_shift"],
        ups_shift=v["ups_shift"],
        syn_w_shift=v["syn_w_shift"],
        syn_b_shift=v["syn_b_shift"],
        latents=[None] * v["n_grids"],
        version=v["version"],
        cross_grids=cross_grids,
    )
    # Coarsest first: in v2 a grid's context reads the coarser grids (v2 5.1).
    for level in reversed(range(v["n_grids"])):
        grid = layout.grids[level]
        offset, low, size = (
            layout.substream_offsets[level],
            grid["latent_min"],
            grid["substream_bytes"],
        )
        alphabet = grid["latent_max"] - low + 1
        if alphabet == 1:
            codec.latents[level] = np.full(grid_shape(codec.height, codec.width, level), low)
            continue
        words = np.frombuffer(data[offset : offset + size], dtype="<u4")
        codec.latents[level] = _decode_grid(codec, level, words, low, alphabet)
    if layout.substream_offsets[-1] + layout.grids[-1]["substream_bytes"] != len(data):
        raise ValueError("stream length differs from the sum of its sections")
    return codec
