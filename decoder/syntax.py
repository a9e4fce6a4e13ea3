"""Stream syntax (spec section 3): the header declared as data, and its parser.

The header of each bitstream version is a `SyntaxTable`, an ordered tuple of
`Field`s and `Group`s (a group's fields repeat once per item, e.g. per ARM
layer, as many times as its count field says). Every field record holds the
field's name, struct format (width and signedness), allowed values, spec
section and, where it is fixed, its byte offset. `parse_header` walks the
table of the stream's version with one generic reader that range-checks each
field as it reads it; the rules that relate several fields (picture size,
residual widths, last layers, MAC limits, shift relations, grid rules) stay
explicit code in `_parse_v1`, at the place in the stream where the spec can
first tell. A new version adds its table to `SYNTAX` (and its cross-field
rules) here, nowhere else.

Public API for the decoder, tools and tests (stable names):

- `SYNTAX[version]` / `syntax_table(version)`: the `SyntaxTable`; `HEADER_V1`.
- `table.field("width")`, `table.field("arm.out")`: a `Field` by name (a
  group's field as `<group>.<field>`); `table.group("grid")`: a `Group`.
- `Field`: `name`, `fmt` (struct format), `size`, `signed`, `type_range`,
  `low` / `high` and `limits` (allowed range, inclusive), `allowed` (allowed
  values where not a whole range), `multiple_of`, `section`, `offset` (from
  the start of the header for the fixed fields magic..n_syn_layers; from the
  start of the item for a group's fields; None where it depends on earlier
  counts), `violation(v)`, `clamp(v)` / `wrap(v)` (into the type's range).
- `table.offset(name)`: byte offset of a fixed field (ValueError otherwise).
- `table.header_bytes(counts)`: header length for given count field values;
  `table.header_size(data)`: the same from the raw count bytes of any data.
- `table.locate(data)`: every field of any byte string as `Located` (name
  like `arm0.out` or `grid2.substream_bytes`, field, offset), counts taken as
  they are, fields past the end omitted; `Located.read` / `Located.write`
  patch a field in place.
- `table.read(data)`: the raw field values of a header, unvalidated, as a
  `HeaderValues` dict: scalar fields by name (magic as bytes), and per group
  a list of items, each a dict field name -> value.
- `table.pack(values)`: bytes of `HeaderValues` (items may also be tuples in
  field order; a missing count field is the length of its group), without
  validation; `header_values(header)` turns a parsed `StreamHeader` back
  into `HeaderValues`, so `HEADER_V1.pack(header_values(h))` re-serialises it.
- Limits as constants (`MAX_SIDE`, `MAX_GRIDS`, ...), enums `ColorFormat`,
  `LayerKind`, `Activation` with what follows from each code.

Nothing picture-sized happens until `parse_header` has checked rules 1-5 of
spec section 9.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from functools import cached_property
from typing import Any

from .errors import StreamError

MAGIC = b"CCRF"
VERSIONS = (1, 2)  # every version this decoder reads
VERSION = VERSIONS[-1]  # the newest

ARM_FRAC = 8  # ARM activations are Q8
SYN_FRAC = 12  # dense latent and synthesis activations are Q12
PRECISION = 24  # rANS probability precision, bits

MAX_SIDE = 16384
MAX_PIXELS = 1 << 24
MAX_GRIDS = 7
MAX_CTX_ROWCOL = 3
MAX_CROSS_GRIDS = MAX_GRIDS - 1  # v2: coarser grids in the ARM context
MAX_UPS_HALF_TAPS = 8
MAX_ARM_LAYERS = 5
MAX_SYN_LAYERS = 8
MAX_LAYER_WIDTH = 64
MAX_MAC_ARM = 8192
MAX_MAC_SYN = 16384
SYN_KERNELS = (1, 3, 5, 7)
MAX_WEIGHTS_BYTES = 1 << 24
MAX_SHIFT = 16  # weight shifts, ups_shift
MAX_ARM_B_SHIFT = 24
MAX_SYN_B_SHIFT = 28
MAX_EGK = 16  # exp-Golomb orders
ARM_OUTPUTS = 2  # (mu, log_scale)


# --- coded choices (spec 3.2, 3.3) ------------------------------------------------


class ColorFormat(IntEnum):
    """`color_format` (spec 3.2) and what follows from it (3.4, 8).

    n_channels: synthesis outputs / planes; chroma_420: U and V are reduced
    2x2 (spec 8.1); label: short lower-case name (CLI, info); long_name: name in
    messages; is_yuv: planes are Y, U, V.
    """

    GREY = (0, 1, False, "grey", "grey", False)
    RGB = (1, 3, False, "rgb", "RGB", False)
    YUV444 = (2, 3, False, "yuv444", "YUV 4:4:4", True)
    YUV420 = (3, 3, True, "yuv420", "YUV 4:2:0", True)

    n_channels: int
    chroma_420: bool
    label: str
    long_name: str
    is_yuv: bool

    def __new__(
        cls, code: int, n_channels: int, chroma_420: bool, label: str, long_name: str, is_yuv: bool
    ) -> ColorFormat:
        member = int.__new__(cls, code)
        member._value_ = code
        member.n_channels = n_channels
        member.chroma_420 = chroma_420
        member.label = label
        member.long_name = long_name
        member.is_yuv = is_yuv
        return member


class LayerKind(IntEnum):
    """Layer `type` (spec 3.3). adds_input: the output adds the layer's input,
    which requires out == C_in (spec 2.3); label: name in the textual form."""

    LINEAR = (0, "linear", False)
    RESIDUAL = (1, "residual", True)

    label: str
    adds_input: bool

    def __new__(cls, code: int, label: str, adds_input: bool) -> LayerKind:
        member = int.__new__(cls, code)
        member._value_ = code
        member.label = label
        member.adds_input = adds_input
        return member


class Activation(IntEnum):
    """Layer `act` (spec 2.2, 3.3); label: name in the textual form."""

    NONE = (0, "none")
    RELU = (1, "relu")
    LEAKYRELU = (2, "leakyrelu")

    label: str

    def __new__(cls, code: int, label: str) -> Activation:
        member = int.__new__(cls, code)
        member._value_ = code
        member.label = label
        return member


ACTIVATION_NAMES = tuple(a.label for a in Activation)


# --- the syntax table ---------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One header field: how it is packed and which values it may take.

    fmt: little-endian struct format ("<B" u8, "<H" u16, "<I" u32, "<h" i16,
    "<4s" bytes). low, high: allowed range, inclusive (None: the type's range).
    allowed: the allowed values when they are not a whole range. multiple_of:
    allowed values are also multiples of this. offset: bytes
    from the start of the header (fixed fields) or of the group item (a
    group's fields); None where earlier counts move it. label: the name in
    error messages.
    """

    name: str
    fmt: str
    low: int | None = None
    high: int | None = None
    allowed: tuple[Any, ...] | None = None
    multiple_of: int = 1
    section: str = "3.2"
    doc: str = ""
    label: str = ""
    offset: int | None = None

    @cached_property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @cached_property
    def is_bytes(self) -> bool:
        return self.fmt.endswith("s")

    @cached_property
    def signed(self) -> bool:
        return self.fmt[-1].islower() and not self.is_bytes

    @cached_property
    def type_range(self) -> tuple[int, int]:
        """Smallest and largest value the field's type can hold."""
        bits = 8 * self.size
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @cached_property
    def limits(self) -> tuple[int, int]:
        """Smallest and largest allowed value (the type's range where the table sets none)."""
        type_low, type_high = self.type_range
        low = type_low if self.low is None else self.low
        high = type_high if self.high is None else self.high
        return low + (-low) % self.multiple_of, high - high % self.multiple_of

    @cached_property
    def message_name(self) -> str:
        return self.label or self.name

    def range_violation(self, value: Any, name: str | None = None) -> str | None:
        """Why `value` is outside the allowed range or values (one line), or None."""
        name = name or self.message_name
        if self.allowed is not None:
            return None if value in self.allowed else f"{name} = {value} not in {self.allowed}"
        low, high = self.limits
        return None if low <= value <= high else f"{name} = {value} outside [{low}, {high}]"

    def violation(self, value: Any, name: str | None = None) -> str | None:
        """Why `value` is not allowed in this field (one line), or None if it is.

        The parser checks `multiple_of` with the grid rules (`_grid_rules`), where
        the spec lists it; this checks everything about one value.
        """
        problem = self.range_violation(value, name)
        if problem is None and self.multiple_of > 1 and value % self.multiple_of:
            name = name or self.message_name
            problem = f"{name} = {value} not a multiple of {self.multiple_of}"
        return problem

    def clamp(self, value: int) -> int:
        """`value` clamped to the field's type range (so that it can be packed)."""
        low, high = self.type_range
        return min(max(value, low), high)

    def wrap(self, value: int) -> int:
        """`value` reduced modulo 2^bits into the field's type (two's complement if signed)."""
        low, high = self.type_range
        return (value - low) % (high - low + 1) + low

    @cached_property
    def _struct(self) -> struct.Struct:
        return struct.Struct(self.fmt)

    def unpack(self, data: bytes | bytearray | memoryview, offset: int) -> Any:
        return self._struct.unpack_from(data, offset)[0]

    def pack(self, value: Any) -> bytes:
        return self._struct.pack(value)


@dataclass(frozen=True)
class Group:
    """Fields repeated once per item, `count` (a field read earlier) times."""

    name: str
    count: str
    fields: tuple[Field, ...]
    label: str = ""
    section: str = "3.2"

    @property
    def item_size(self) -> int:
        return sum(f.size for f in self.fields)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name}.{name}")


Element = Field | Group
HeaderValues = dict[str, Any]


@dataclass(frozen=True)
class Located:
    """A field at its place in one stream: `name` is e.g. `width`, `arm0.out`."""

    name: str
    field: Field
    offset: int
    group: str | None = None
    index: int | None = None

    def read(self, data: bytes | bytearray | memoryview) -> Any:
        return self.field.unpack(data, self.offset)

    def write(self, data: bytearray, value: Any) -> None:
        """Overwrite the field in `data` (struct.error if `value` does not fit the type)."""
        packed = self.field.pack(value)  # before touching `data`: pack_into may half-write
        data[self.offset : self.offset + len(packed)] = packed


def _place(elements: Sequence[Element]) -> tuple[Element, ...]:
    """The elements with offsets filled in: fixed ones up to the first group, item-relative
    ones inside groups, None for the rest."""
    placed: list[Element] = []
    position: int | None = 0
    for element in elements:
        if isinstance(element, Group):
            item_offset = 0
            fields = []
            for f in element.fields:
                fields.append(replace(f, offset=item_offset))
                item_offset += f.size
            placed.append(replace(element, fields=tuple(fields)))
            position = None
        else:
            placed.append(replace(element, offset=position))
            if position is not None:
                position += element.size
    return tuple(placed)


@dataclass(frozen=True)
class SyntaxTable:
    """The header syntax of one bitstream version, in stream order."""

    version: int
    elements: tuple[Element, ...]
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "elements", _place(self.elements))
        by_name: dict[str, Field] = {}
        for element in self.elements:
            if isinstance(element, Group):
                for f in element.fields:
                    by_name[f"{element.name}.{f.name}"] = f
            else:
                by_name[element.name] = element
        object.__setattr__(self, "_by_name", by_name)

    def field(self, name: str) -> Field:
        """A field by name: `width`, or a group's field as `arm.out`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no header field {name!r} in version {self.version}") from None

    def group(self, name: str) -> Group:
        for element in self.elements:
            if isinstance(element, Group) and element.name == name:
                return element
        raise KeyError(f"no header group {name!r} in version {self.version}")

    @property
    def fields(self) -> dict[str, Field]:
        """Every field by qualified name (`width`, `arm.out`), in stream order."""
        return dict(self._by_name)

    @property
    def groups(self) -> tuple[Group, ...]:
        return tuple(e for e in self.elements if isinstance(e, Group))

    @property
    def fixed(self) -> dict[str, Field]:
        """The fields at fixed offsets (before the first group), by name."""
        return {e.name: e for e in self.elements if isinstance(e, Field) and e.offset is not None}

    def offset(self, name: str) -> int:
        """Byte offset of a field at a fixed offset."""
        f = self.field(name)
        if f.offset is None or "." in name:
            raise ValueError(f"header field {name!r} has no fixed offset")
        return f.offset

    @property
    def fixed_bytes(self) -> int:
        """Length of the fixed part (every field at a fixed offset)."""
        return sum(f.size for f in self.fixed.values())

    def header_bytes(self, counts: Mapping[str, int]) -> int:
        """Header length when the count fields (e.g. `n_grids`) have these values."""
        total = 0
        for element in self.elements:
            if isinstance(element, Group):
                total += element.item_size * counts[element.count]
            else:
                total += element.size
        return total

    def header_size(self, data: bytes | bytearray | memoryview) -> int:
        """header_bytes from the raw count fields of `data` (0 if they are not all there)."""
        counts = {}
        for group in self.groups:
            count = self.field(group.count)
            if count.offset is None or len(data) < count.offset + count.size:
                return 0
            counts[group.count] = count.unpack(data, count.offset)
        return self.header_bytes(counts)

    def locate(self, data: bytes | bytearray | memoryview) -> list[Located]:
        """Every header field of any byte string, placed from its own count fields.

        Counts are taken as they are (not validated); fields that would end
        past the end of `data` are omitted.
        """
        located: list[Located] = []
        values: dict[str, Any] = {}
        position = 0
        for element in self.elements:
            if isinstance(element, Group):
                count = values.get(element.count)
                if count is None:
                    break
                for index in range(count):
                    for f in element.fields:
                        name = f"{element.name}{index}.{f.name}"
                        located.append(Located(name, f, position, element.name, index))
                        position += f.size
            else:
                located.append(Located(element.name, element, position))
                if position + element.size <= len(data):
                    values[element.name] = element.unpack(data, position)
                position += element.size
        return [loc for loc in located if loc.offset + loc.field.size <= len(data)]

    def read(self, data: bytes | bytearray | memoryview) -> HeaderValues:
        """Raw values of every header field, not validated; StreamError if the header is cut."""
        reader = _FieldReader(data, self, validate=False)
        reader.read_to_end()
        return reader.values

    def pack(self, values: Mapping[str, Any]) -> bytes:
        """The header bytes of `values` (see `HeaderValues`), not validated.

        A group's items are dicts (field name -> value) or sequences in field
        order; a count field missing from `values` (or None) is its group's
        length. A value that does not fit its field's type raises struct.error.
        """
        counts = {g.count: len(values[g.name]) for g in self.groups}
        out = bytearray()
        for element in self.elements:
            if isinstance(element, Group):
                for item in values[element.name]:
                    for index, f in enumerate(element.fields):
                        value = item[f.name] if isinstance(item, Mapping) else item[index]
                        out += f.pack(value)
            else:
                value = values.get(element.name)
                if value is None:
                    value = counts[element.name]
                out += element.pack(value)
        return bytes(out)


_SHIFT = "Q format (fractional bits) of"
_EGK = "exp-Golomb order of"

HEADER_V1 = SyntaxTable(
    version=1,
    elements=(
        Field("magic", "<4s", allowed=(MAGIC,), doc="identifies the format (ASCII CCRF)"),
        Field("version", "<B", 1, 1, doc="bitstream version: selects this table"),
        Field("color_format", "<B", min(ColorFormat), max(ColorFormat), doc="ColorFormat"),
        Field("bit_depth", "<B", 8, 16, doc="bits per output sample"),
        Field("width", "<H", 1, MAX_SIDE, doc="picture width W (luma samples)"),
        Field("height", "<H", 1, MAX_SIDE, doc="picture height H; also W * H <= 2^24"),
        Field("n_grids", "<B", 1, MAX_GRIDS, doc="number of latent grids N"),
        Field("n_ctx_rowcol", "<B", 1, MAX_CTX_ROWCOL, doc="ARM context radius r (5.2)"),
        Field("ups_half_taps", "<B", 1, MAX_UPS_HALF_TAPS, doc="coded upsampling taps T"),
        Field("n_arm_layers", "<B", 1, MAX_ARM_LAYERS, doc="ARM layers, output included"),
        Field("n_syn_layers", "<B", 1, MAX_SYN_LAYERS, doc="synthesis layers"),
        Group(
            "arm",
            count="n_arm_layers",
            label="ARM layer",
            fields=(
                Field("out", "<B", 1, MAX_LAYER_WIDTH, section="3.3", doc="output channels"),
                Field("type", "<B", min(LayerKind), max(LayerKind), section="3.3"),
                Field(
                    "act", "<B", min(Activation), max(Activation), section="3.3", label="activation"
                ),
            ),
        ),
        Group(
            "syn",
            count="n_syn_layers",
            label="synthesis layer",
            fields=(
                Field("out", "<B", 1, MAX_LAYER_WIDTH, section="3.3", doc="output channels"),
                Field(
                    "kernel",
                    "<B",
                    min(SYN_KERNELS),
                    max(SYN_KERNELS),
                    SYN_KERNELS,
                    section="3.3",
                    doc="square kernel size",
                ),
                Field("type", "<B", min(LayerKind), max(LayerKind), section="3.3"),
                Field(
                    "act", "<B", min(Activation), max(Activation), section="3.3", label="activation"
                ),
            ),
        ),
        Field("arm_w_shift", "<B", 0, MAX_SHIFT, doc=f"{_SHIFT} the ARM weights"),
        Field("arm_b_shift", "<B", 0, MAX_ARM_B_SHIFT, doc=f"{_SHIFT} the ARM biases"),
        Field("arm_w_egk", "<B", 0, MAX_EGK, doc=f"{_EGK} the ARM weights"),
        Field("arm_b_egk", "<B", 0, MAX_EGK, doc=f"{_EGK} the ARM biases"),
        Field("ups_shift", "<B", 0, MAX_SHIFT, doc=f"{_SHIFT} the upsampling taps"),
        Field("ups_egk", "<B", 0, MAX_EGK, doc=f"{_EGK} the upsampling taps"),
        Field("syn_w_shift", "<B", 0, MAX_SHIFT, doc=f"{_SHIFT} the synthesis weights"),
        Field("syn_b_shift", "<B", 0, MAX_SYN_B_SHIFT, doc=f"{_SHIFT} the synthesis biases"),
        Field("syn_w_egk", "<B", 0, MAX_EGK, doc=f"{_EGK} the synthesis weights"),
        Field("syn_b_egk", "<B", 0, MAX_EGK, doc=f"{_EGK} the synthesis biases"),
        Field("weights_bytes", "<I", 1, MAX_WEIGHTS_BYTES, doc="length of the weights section"),
        Group(
            "grid",
            count="n_grids",
            label="grid",
            fields=(
                Field("latent_min", "<h", doc="smallest latent value of the grid"),
                Field("latent_max", "<h", doc="largest latent value; >= latent_min"),
                Field("substream_bytes", "<I", multiple_of=4, doc="length of the substream"),
            ),
        ),
    ),
)


def _header_v2() -> SyntaxTable:
    """Version 2 (bitstream-v2.md 3.2): version 1 with `cross_grids` after `n_syn_layers`."""
    elements: list[Element] = []
    for element in HEADER_V1.elements:
        if element.name == "version":
            element = replace(element, low=2, high=2)
        elements.append(replace(element, offset=None) if isinstance(element, Field) else element)
        if element.name == "n_syn_layers":
            elements.append(
                Field(
                    "cross_grids",
                    "<B",
                    0,
                    MAX_CROSS_GRIDS,
                    doc="coarser grids whose co-located latents join the ARM context; <= N - 1",
                )
            )
    return SyntaxTable(version=2, elements=tuple(elements))


HEADER_V2 = _header_v2()

SYNTAX: dict[int, SyntaxTable] = {1: HEADER_V1, 2: HEADER_V2}


def syntax_table(version: int) -> SyntaxTable:
    """The header syntax of `version`; StreamError (rule 2) if this decoder has none."""
    try:
        return SYNTAX[version]
    except KeyError:
        readable = " and ".join(str(v) for v in VERSIONS)
        raise StreamError(
            f"unsupported version {version} (this decoder reads {readable})"
        ) from None


# --- the parsed header --------------------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One ARM or synthesis layer (spec 3.3). ARM layers have kernel 1."""

    in_channels: int
    out_channels: int
    kernel: int
    kind: LayerKind
    activation: Activation

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LayerKind(self.kind))
        object.__setattr__(self, "activation", Activation(self.activation))

    @property
    def residual(self) -> bool:
        """kind.adds_input (the spelling of the textual form)."""
        return self.kind.adds_input

    def describe(self) -> str:
        """`<out>-<kernel>-<kind>-<activation>` (spec 3.3's textual form)."""
        return f"{self.out_channels}-{self.kernel}-{self.kind.label}-{self.activation.label}"

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
    version: int = 1
    cross_grids: int = 0  # v2: C, coarser grids in the ARM context (0 in v1)

    @property
    def n_grids(self) -> int:
        return len(self.grids)

    @property
    def arm_inputs(self) -> int:
        """Inputs of the first ARM layer: the spatial context, then C cross-grid values."""
        return self.dim_arm + self.cross_grids

    def decoding_order(self) -> tuple[int, ...]:
        """Grids in the order they are decoded: v2 coarsest first (its finer grids read
        it), v1 any order (grid 0 first here)."""
        levels = range(self.n_grids)
        return tuple(reversed(levels)) if self.cross_grids else tuple(levels)

    @property
    def n_channels(self) -> int:
        return self.color_format.n_channels

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


def header_values(header: StreamHeader) -> HeaderValues:
    """The raw field values of a parsed header (inverse of `parse_header`'s reading)."""

    def quant(prefix: str, q: ModuleQuant) -> dict[str, int]:
        return {
            f"{prefix}_w_shift": q.w_shift,
            f"{prefix}_b_shift": q.b_shift,
            f"{prefix}_w_egk": q.w_egk,
            f"{prefix}_b_egk": q.b_egk,
        }

    return {
        "magic": MAGIC,
        "version": header.version,
        "color_format": int(header.color_format),
        "bit_depth": header.bit_depth,
        "width": header.width,
        "height": header.height,
        "n_grids": header.n_grids,
        "n_ctx_rowcol": header.n_ctx_rowcol,
        "ups_half_taps": header.ups_half_taps,
        "n_arm_layers": len(header.arm_layers),
        "n_syn_layers": len(header.syn_layers),
        "cross_grids": header.cross_grids,  # not in the v1 table, so not packed there
        "arm": [
            {"out": la.out_channels, "type": int(la.kind), "act": int(la.activation)}
            for la in header.arm_layers
        ],
        "syn": [
            {
                "out": la.out_channels,
                "kernel": la.kernel,
                "type": int(la.kind),
                "act": int(la.activation),
            }
            for la in header.syn_layers
        ],
        **quant("arm", header.arm_quant),
        "ups_shift": header.ups_shift,
        "ups_egk": header.ups_egk,
        **quant("syn", header.syn_quant),
        "weights_bytes": header.weights_bytes,
        "grid": [
            {
                "latent_min": g.latent_min,
                "latent_max": g.latent_max,
                "substream_bytes": g.substream_bytes,
            }
            for g in header.grids
        ],
    }


# --- parsing ----------------------------------------------------------------------


class _FieldReader:
    """Reads the elements of a syntax table in order, little-endian, from `data`.

    Rejects reads past the end (rule 3) and, when `validate`, a field outside
    its allowed values (rule 4) as soon as it is read. Values go to `values`
    (a `HeaderValues` dict); `pos` is the next byte.
    """

    def __init__(
        self, data: bytes | bytearray | memoryview, table: SyntaxTable, validate: bool = True
    ) -> None:
        self.data = data
        self.table = table
        self.validate = validate
        self.values: HeaderValues = {}
        self.pos = 0
        self._next = 0  # index of the next element of the table

    def _take(self, f: Field, name: str) -> Any:
        if self.pos + f.size > len(self.data):
            raise StreamError("truncated header")
        value = f.unpack(self.data, self.pos)
        self.pos += f.size
        if self.validate:
            problem = f.range_violation(value, name)
            if problem is not None:
                raise StreamError(problem)
        return value

    def read_through(
        self, name: str | None, each: Callable[[int, dict[str, int]], None] | None = None
    ) -> None:
        """Read the next elements up to and including `name` (None: to the end).

        each(index, item) runs after every item of a group read here, before the
        next item is read.
        """
        elements = self.table.elements
        while self._next < len(elements):
            element = elements[self._next]
            self._next += 1
            if isinstance(element, Group):
                items: list[dict[str, int]] = []
                self.values[element.name] = items
                for index in range(self.values[element.count]):
                    item = {}
                    for f in element.fields:
                        message_name = f"{element.label} {index} {f.message_name}"
                        item[f.name] = self._take(f, message_name)
                    items.append(item)
                    if each is not None:
                        each(index, item)
            else:
                self.values[element.name] = self._take(element, element.message_name)
            if element.name == name:
                return
        if name is not None:
            raise KeyError(name)

    def read_to_end(self) -> None:
        self.read_through(None)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise StreamError(message)


def _layers(items: list[dict[str, int]], first_in: int) -> tuple[LayerSpec, ...]:
    """LayerSpecs of a layer group's items; C_in chains from `first_in` (spec 3.3)."""
    layers = []
    in_channels = first_in
    for item in items:
        out = item["out"]
        kernel = item.get("kernel", 1)
        layers.append(LayerSpec(in_channels, out, kernel, item["type"], item["act"]))
        in_channels = out
    return tuple(layers)


def _residual_rule(
    values: HeaderValues, group: str, first_in: int
) -> Callable[[int, dict[str, int]], None]:
    """Spec 3.3: a layer whose kind adds its input has out == C_in."""
    label = HEADER_V1.group(group).label

    def check(index: int, item: dict[str, int]) -> None:
        in_channels = first_in if index == 0 else values[group][index - 1]["out"]
        out = item["out"]
        _check(
            not LayerKind(item["type"]).adds_input or out == in_channels,
            f"{label} {index} is residual but has {in_channels} inputs and {out} outputs",
        )

    return check


def _bias_shift_rule(values: HeaderValues, prefix: str, frac: int) -> None:
    """Spec 3.4: <prefix>_b_shift <= frac + <prefix>_w_shift."""
    w_shift = values[f"{prefix}_w_shift"]
    b_shift = values[f"{prefix}_b_shift"]
    _check(
        b_shift <= frac + w_shift,
        f"{prefix}_b_shift = {b_shift} exceeds {frac} + {prefix}_w_shift = {frac + w_shift}",
    )


def _grid_rules(index: int, item: dict[str, int]) -> None:
    """Spec 3.2, 3.4: latent_min <= latent_max; the substream size is a multiple of 4;
    a constant grid has no substream."""
    latent_min, latent_max = item["latent_min"], item["latent_max"]
    size = item["substream_bytes"]
    _check(
        latent_min <= latent_max,
        f"grid {index}: latent_min {latent_min} > latent_max {latent_max}",
    )
    step = HEADER_V1.field("grid.substream_bytes").multiple_of
    _check(size % step == 0, f"grid {index}: substream size not a multiple of {step}")
    _check(
        latent_min < latent_max or size == 0,
        f"grid {index} is constant but has a {size}-byte substream",
    )


def _parse(reader: _FieldReader) -> StreamHeader:
    """The fields after `version` (versions 1 and 2), with the rules that relate them."""
    v = reader.values
    reader.read_through("height")
    width, height = v["width"], v["height"]
    _check(width * height <= MAX_PIXELS, f"picture {width}x{height} exceeds {MAX_PIXELS} pixels")
    reader.read_through("n_syn_layers")
    cross_grids = 0
    if reader.table.version >= 2:
        reader.read_through("cross_grids")
        cross_grids = v["cross_grids"]
        _check(
            cross_grids <= v["n_grids"] - 1,
            f"cross_grids = {cross_grids} exceeds n_grids - 1 = {v['n_grids'] - 1}",
        )

    arm_inputs = context_size(v["n_ctx_rowcol"]) + cross_grids
    reader.read_through("arm", each=_residual_rule(v, "arm", arm_inputs))
    reader.read_through("syn", each=_residual_rule(v, "syn", v["n_grids"]))
    arm_layers = _layers(v["arm"], arm_inputs)
    syn_layers = _layers(v["syn"], v["n_grids"])
    color_format = ColorFormat(v["color_format"])
    n_channels = color_format.n_channels
    _check(
        arm_layers[-1].out_channels == ARM_OUTPUTS,
        f"last ARM layer must have {ARM_OUTPUTS} outputs",
    )
    _check(
        syn_layers[-1].out_channels == n_channels,
        f"last synthesis layer must have {n_channels} outputs for this colour format",
    )
    mac_arm = sum(layer.mac for layer in arm_layers)
    mac_syn = sum(layer.mac for layer in syn_layers)
    _check(mac_arm <= MAX_MAC_ARM, f"ARM needs {mac_arm} MAC per latent, limit {MAX_MAC_ARM}")
    _check(mac_syn <= MAX_MAC_SYN, f"synthesis needs {mac_syn} MAC per pixel, limit {MAX_MAC_SYN}")

    reader.read_through("arm_b_shift")
    _bias_shift_rule(v, "arm", ARM_FRAC)
    reader.read_through("syn_b_shift")
    _bias_shift_rule(v, "syn", SYN_FRAC)
    reader.read_through("grid", each=_grid_rules)

    def quant(prefix: str) -> ModuleQuant:
        return ModuleQuant(
            v[f"{prefix}_w_shift"],
            v[f"{prefix}_b_shift"],
            v[f"{prefix}_w_egk"],
            v[f"{prefix}_b_egk"],
        )

    grids = tuple(
        GridInfo(
            *grid_shape(height, width, level),
            g["latent_min"],
            g["latent_max"],
            g["substream_bytes"],
        )
        for level, g in enumerate(v["grid"])
    )
    return StreamHeader(
        color_format=color_format,
        bit_depth=v["bit_depth"],
        width=width,
        height=height,
        n_ctx_rowcol=v["n_ctx_rowcol"],
        ups_half_taps=v["ups_half_taps"],
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_quant=quant("arm"),
        ups_shift=v["ups_shift"],
        ups_egk=v["ups_egk"],
        syn_quant=quant("syn"),
        weights_bytes=v["weights_bytes"],
        grids=grids,
        header_bytes=reader.pos,
        version=v["version"],
        cross_grids=cross_grids,
    )


_PARSERS: dict[int, Callable[[_FieldReader], StreamHeader]] = {1: _parse, 2: _parse}


def parse_header(data: bytes | bytearray | memoryview) -> StreamHeader:
    """Parse and validate the header; check the stream length (spec 9, rules 1-5).

    Raises StreamError with a one-line message on any violation.
    """
    if len(data) < 5 or bytes(data[:4]) != MAGIC:
        raise StreamError("not a coolchic-ref stream (bad magic)")
    table = syntax_table(data[4])
    reader = _FieldReader(data, table)
    reader.read_through("version")
    header = _PARSERS[table.version](reader)
    expected = header.total_bytes
    if len(data) < expected:
        raise StreamError(f"truncated stream: {len(data)} bytes, header declares {expected}")
    if len(data) > expected:
        raise StreamError(f"trailing data: {len(data)} bytes, header declares {expected}")
    return header
