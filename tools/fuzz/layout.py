"""Header fields and section ranges of any byte string, from the decoder's syntax table.

The byte-level mutators use this to find fields (with their allowed ranges,
spec 3.2 / 3.3) and sections in valid and invalid inputs alike. Offsets,
formats and limits all come from `coolchic_ref.syntax`'s table of the
version the fuzzer makes (`HEADER_V1`). `coolchic_ref` is imported only when a
function runs, so that the atheris worker can instrument it first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from coolchic_ref.syntax import Located, SyntaxTable

MAX_INPUT = 1 << 20  # longest input the fuzzer makes (bytes)


def decoder_syntax():
    """The module `coolchic_ref.syntax` (imported on first use)."""
    from coolchic_ref import syntax

    return syntax


def header_table() -> SyntaxTable:
    """The syntax table of the streams the fuzzer mutates (version 1)."""
    return decoder_syntax().HEADER_V1


# Header fields by (count field values, bytes available up to the header's end): the
# layout depends on nothing else, and the mutators ask for it several times per input.
_LAYOUTS: dict[tuple[tuple[int, ...], int], tuple[Located, ...]] = {}


@functools.cache
def _count_fields() -> tuple:
    """The count fields of the table's groups (`n_grids`, ...): (field, offset) pairs."""
    table = header_table()
    return tuple((table.field(g.count), table.offset(g.count)) for g in table.groups)


@functools.lru_cache(maxsize=4096)
def _header_bytes(counts: tuple[int, ...]) -> int:
    table = header_table()
    return table.header_bytes({g.count: n for g, n in zip(table.groups, counts, strict=True)})


def _counts(data: bytes) -> tuple[int, ...] | None:
    """The raw values of the count fields, None if `data` ends before one of them."""
    count_fields = _count_fields()
    if any(len(data) < offset + f.size for f, offset in count_fields):
        return None
    return tuple(f.unpack(data, offset) for f, offset in count_fields)


def header_fields(data: bytes) -> tuple[Located, ...]:
    """The numeric header fields of `data`, laid out from its own count fields (spec 3.2).

    Works on any bytes: counts are taken as they are (not validated) and fields
    beyond the end of `data` are omitted. The magic is left out (rule 1 has its
    own mutations: flips, truncations).
    """
    counts = _counts(data)
    if counts is None:
        return tuple(f for f in header_table().locate(data) if not f.field.is_bytes)
    key = (counts, min(len(data), _header_bytes(counts)))
    fields = _LAYOUTS.get(key)
    if fields is None:
        if len(_LAYOUTS) >= 4096:
            _LAYOUTS.clear()
        fields = tuple(f for f in header_table().locate(data) if not f.field.is_bytes)
        _LAYOUTS[key] = fields
    return fields


def quant_fields() -> list:
    """The table's shift and exp-Golomb order fields (spec 3.2), in stream order."""
    return [f for name, f in header_table().fields.items() if name.endswith(("_shift", "_egk"))]


def header_size(data: bytes) -> int:
    """header_bytes of spec 3.2 from the raw count fields (0 if they are not there)."""
    counts = _counts(data)
    return 0 if counts is None else _header_bytes(counts)


@dataclass
class Sections:
    """Byte ranges of the sections of a stream, from its raw header fields."""

    header_end: int
    weights: tuple[int, int]
    substreams: list[tuple[int, int]]
    length_fields: list[Located]  # weights_bytes, then substream_bytes of each grid


def sections(data: bytes) -> Sections | None:
    """Section ranges if the header is complete (the lengths need not add up)."""
    end = header_size(data)
    if end == 0 or len(data) < end:
        return None
    fields = header_fields(data)
    weights_field = next(f for f in fields if f.name == "weights_bytes")
    pos = end + weights_field.read(data)
    weights = (end, pos)
    subs, length_fields = [], [weights_field]
    for f in fields:
        if f.group == "grid" and f.field.name == "substream_bytes":
            length_fields.append(f)
            size = f.read(data)
            subs.append((pos, pos + size))
            pos += size
    return Sections(end, weights, subs, length_fields)


def read_field(data: bytes, f: Located) -> int:
    return f.read(data)


def write_field(data: bytearray, f: Located, value: int) -> None:
    """Set field `f` of `data` to `value`, clamped to what the field's type can hold."""
    f.write(data, f.field.clamp(value))


def declared_pixels(data: bytes) -> int:
    """width * height as the header declares them (0 if the fields are not there)."""
    by_name = {f.name: f for f in header_fields(data)}
    if "height" not in by_name:
        return 0
    return by_name["width"].read(data) * by_name["height"].read(data)
