"""Header layout of spec 3.2 / 3.3 on raw bytes, with the allowed range of every field.

Works on any byte string, valid or not: the byte-level mutators use it to find
fields and sections. The limits come from `coolchic_ref.syntax`; the shift
ranges are spec 3.2's. `coolchic_ref` is imported only when a function runs, so
that the atheris worker can instrument it first.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_INPUT = 1 << 20  # longest input the fuzzer makes (bytes)


def decoder_syntax():
    from coolchic_ref import syntax

    return syntax


@dataclass(frozen=True)
class Field:
    """One header field: where it is, how it is packed, and its allowed values."""

    name: str
    offset: int
    fmt: str  # struct format: <B, <H, <I, <h
    low: int
    high: int

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @property
    def type_range(self) -> tuple[int, int]:
        bits = 8 * self.size
        if self.fmt == "<h":
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1


QUANT_FIELDS = (
    ("arm_w_shift", 0, 16),
    ("arm_b_shift", 0, 24),
    ("arm_w_egk", 0, 16),
    ("arm_b_egk", 0, 16),
    ("ups_shift", 0, 16),
    ("ups_egk", 0, 16),
    ("syn_w_shift", 0, 16),
    ("syn_b_shift", 0, 28),
    ("syn_w_egk", 0, 16),
    ("syn_b_egk", 0, 16),
)
OFF_N_GRIDS, OFF_N_ARM, OFF_N_SYN = 11, 14, 15


def header_fields(data: bytes) -> list[Field]:
    """The header fields of `data`, laid out from its own count fields (spec 3.2).

    Works on any bytes: counts are taken as they are (not validated) and fields
    beyond the end of `data` are omitted.
    """
    s = decoder_syntax()
    fields = [
        Field("version", 4, "<B", 1, 1),
        Field("color_format", 5, "<B", 0, 3),
        Field("bit_depth", 6, "<B", 8, 16),
        Field("width", 7, "<H", 1, s.MAX_SIDE),
        Field("height", 9, "<H", 1, s.MAX_SIDE),
        Field("n_grids", OFF_N_GRIDS, "<B", 1, s.MAX_GRIDS),
        Field("n_ctx_rowcol", 12, "<B", 1, 3),
        Field("ups_half_taps", 13, "<B", 1, 8),
        Field("n_arm_layers", OFF_N_ARM, "<B", 1, s.MAX_ARM_LAYERS),
        Field("n_syn_layers", OFF_N_SYN, "<B", 1, s.MAX_SYN_LAYERS),
    ]
    if len(data) < 16:
        return [f for f in fields if f.offset + f.size <= len(data)]
    n_grids, n_arm, n_syn = data[OFF_N_GRIDS], data[OFF_N_ARM], data[OFF_N_SYN]
    pos = 16
    for index in range(n_arm):
        for name, low, high in (("out", 1, s.MAX_LAYER_WIDTH), ("type", 0, 1), ("act", 0, 2)):
            fields.append(Field(f"arm{index}.{name}", pos, "<B", low, high))
            pos += 1
    for index in range(n_syn):
        for name, low, high in (
            ("out", 1, s.MAX_LAYER_WIDTH),
            ("kernel", 1, max(s.SYN_KERNELS)),
            ("type", 0, 1),
            ("act", 0, 2),
        ):
            fields.append(Field(f"syn{index}.{name}", pos, "<B", low, high))
            pos += 1
    for name, low, high in QUANT_FIELDS:
        fields.append(Field(name, pos, "<B", low, high))
        pos += 1
    fields.append(Field("weights_bytes", pos, "<I", 1, s.MAX_WEIGHTS_BYTES))
    pos += 4
    for g in range(n_grids):
        fields.append(Field(f"grid{g}.latent_min", pos, "<h", -32768, 32767))
        fields.append(Field(f"grid{g}.latent_max", pos + 2, "<h", -32768, 32767))
        fields.append(Field(f"grid{g}.substream_bytes", pos + 4, "<I", 0, (1 << 32) - 4))
        pos += 8
    return [f for f in fields if f.offset + f.size <= len(data)]


def header_size(data: bytes) -> int:
    """header_bytes of spec 3.2 from the raw count fields (0 if they are not there)."""
    if len(data) < 16:
        return 0
    return 30 + 3 * data[OFF_N_ARM] + 4 * data[OFF_N_SYN] + 8 * data[OFF_N_GRIDS]


@dataclass
class Sections:
    """Byte ranges of the sections of a stream, from its raw header fields."""

    header_end: int
    weights: tuple[int, int]
    substreams: list[tuple[int, int]]
    length_fields: list[Field]  # weights_bytes, then substream_bytes of each grid


def sections(data: bytes) -> Sections | None:
    """Section ranges if the header is complete (the lengths need not add up)."""
    end = header_size(data)
    if end == 0 or len(data) < end:
        return None
    by_name = {f.name: f for f in header_fields(data)}
    weights_field = by_name["weights_bytes"]
    pos = end + read_field(data, weights_field)
    weights = (end, pos)
    subs, length_fields = [], [weights_field]
    for g in range(data[OFF_N_GRIDS]):
        f = by_name[f"grid{g}.substream_bytes"]
        length_fields.append(f)
        size = read_field(data, f)
        subs.append((pos, pos + size))
        pos += size
    return Sections(end, weights, subs, length_fields)


def read_field(data: bytes, f: Field) -> int:
    return struct.unpack_from(f.fmt, data, f.offset)[0]


def write_field(data: bytearray, f: Field, value: int) -> None:
    low, high = f.type_range
    struct.pack_into(f.fmt, data, f.offset, min(max(value, low), high))


def declared_pixels(data: bytes) -> int:
    """width * height as the header declares them (0 if the fields are not there)."""
    by_name = {f.name: f for f in header_fields(data)}
    if "height" not in by_name:
        return 0
    return read_field(data, by_name["width"]) * read_field(data, by_name["height"])
