"""The header syntax table (coolchic_ref.syntax): against the spec text and real streams.

The table is what the parser, the tools and tests/handmade.py read the layout
from, so it is checked here against spec 3.2 / 3.3 as written (field order,
types, allowed values) and against every stored stream (re-serialisation).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from coolchic_ref.errors import StreamError
from coolchic_ref.syntax import (
    HEADER_V1,
    HEADER_V2,
    SYNTAX,
    Activation,
    ColorFormat,
    Field,
    Group,
    LayerKind,
    LayerSpec,
    header_values,
    parse_header,
    syntax_table,
)

ROOT = Path(__file__).resolve().parent.parent
SPEC = (ROOT / "spec" / "bitstream-v1.md").read_text()
SPEC_V2 = (ROOT / "spec" / "bitstream-v2.md").read_text()
STREAMS = sorted((ROOT / "tests" / "conformance" / "streams").glob("*.cool")) + sorted(
    (ROOT / "tests" / "regressions").glob("*.cool")
)
TYPES = {"u8": "<B", "u16": "<H", "u32": "<I", "i16": "<h", "4 bytes": "<4s"}


def spec_section(title: str) -> str:
    start = SPEC.index(f"### {title}")
    return SPEC[start : SPEC.index("\n### ", start + 1)]


def table_rows(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows[1:]  # without the heading row


def spec_range(text: str) -> tuple[int, int] | None:
    """'1..16384', '1..2^24', '`1`' -> (low, high); anything else -> None."""
    text = text.strip("`")
    number = r"(\d+)(?:\^(\d+))?"
    match = re.fullmatch(rf"{number}\.\.{number}", text)
    if match:
        a, a_exp, b, b_exp = match.groups()
        low = int(a) ** int(a_exp) if a_exp else int(a)
        return low, int(b) ** int(b_exp) if b_exp else int(b)
    if re.fullmatch(r"\d+", text):
        return int(text), int(text)
    return None


def spec_layer_fields() -> dict[str, tuple[int, ...]]:
    """Allowed values of each layer descriptor field, from spec 3.3."""
    allowed = {}
    for name, values, *_ in table_rows(spec_section("3.3 Layer descriptors")):
        key = re.match(r"`(\w+)`", name).group(1)
        found = spec_range(values)
        if found:
            allowed[key] = tuple(range(found[0], found[1] + 1))
        else:
            allowed[key] = tuple(int(v) for v in values.split(","))
    return allowed


def test_table_matches_spec_3_2_and_3_3() -> None:
    elements = list(HEADER_V1.elements)
    layer_allowed = spec_layer_fields()
    grid_group = HEADER_V1.group("grid")
    # The offset column, checked on a header with A = 2 ARM and S = 3 synthesis layers.
    n_arm, n_syn = 2, 3
    p = 16 + 3 * n_arm + 4 * n_syn
    counts = {"n_arm_layers": n_arm, "n_syn_layers": n_syn, "n_grids": 1}
    sample = bytearray(HEADER_V1.header_bytes(counts))
    for count_name, value in counts.items():
        offset = HEADER_V1.offset(count_name)
        sample[offset : offset + 1] = HEADER_V1.field(count_name).pack(value)
    located = {entry.name: entry.offset for entry in HEADER_V1.locate(bytes(sample))}
    for offset, name, kind, allowed, _ in table_rows(spec_section("3.2 Header syntax")):
        plain = re.fullmatch(r"(\d+)", offset)
        relative = re.fullmatch(r"`p \+ (\d+)`", offset)
        field_name = re.fullmatch(r"`(\w+)`", name)
        if field_name and (plain or relative):
            expected = int(plain.group(1)) if plain else p + int(relative.group(1))
            assert located[field_name.group(1)] == expected, name
        if name.startswith("for g in"):
            # The three per-grid fields: the grid group, checked field by field.
            field_name = re.search(r"`(\w+)\[g\]`", name).group(1)
            f = grid_group.field(field_name)
            assert f.fmt == TYPES[kind], field_name
            if "multiple of" in allowed:
                assert f.multiple_of == int(allowed.split()[-1])
            else:
                assert f.limits == f.type_range, field_name  # a rule of 3.4, not a range
            if elements and elements[0] is grid_group:
                elements.pop(0)
            continue
        element = elements.pop(0)
        if name.endswith("layers"):  # 'ARM layers', 'synthesis layers'
            assert isinstance(element, Group), name
            # The type column names the count as the section's text does (A or S).
            symbol, size = re.fullmatch(r"`?(\w+)`? x (\d+) bytes", kind).groups()
            count = {"A": "n_arm_layers", "S": "n_syn_layers"}.get(symbol, symbol)
            assert (element.count, element.item_size) == (count, int(size))
            described = re.findall(r"`(\w+)` (u8|u16|u32|i16)", _)
            assert [(f.name, f.fmt) for f in element.fields] == [
                (field_name, TYPES[t]) for field_name, t in described
            ]
            for f in element.fields:
                values = tuple(v for v in range(0, 256) if f.violation(v) is None)
                assert values == layer_allowed[f.name], (element.name, f.name)
            continue
        assert isinstance(element, Field), name
        assert f"`{element.name}`" == name
        assert element.fmt == TYPES[kind], name
        if element.name == "magic":
            assert element.allowed == (bytes.fromhex(allowed.split("`")[1]),)
        else:
            assert element.limits == spec_range(allowed), name
    assert elements == [], "fields of the table missing from spec 3.2"


@pytest.mark.parametrize("spec, table", [(SPEC, HEADER_V1), (SPEC_V2, HEADER_V2)], ids=["v1", "v2"])
def test_header_size_formula_of_spec(spec: str, table) -> None:
    # spec 3.2: header_bytes = 30 + 3 * n_arm_layers + 4 * n_syn_layers + 8 * N (v2: 31 + ...)
    formula = re.search(
        r"`header_bytes = (?:p \+ 14 \+ 8N = )?(\d+) \+ (\d+) \* n_arm_layers \+ (\d+) \* "
        r"n_syn_layers \+ (\d+) \* N`",
        spec,
    )
    base, arm, syn, grid = (int(x) for x in formula.groups())
    for n_arm, n_syn, n_grids in [(1, 1, 1), (5, 8, 7), (0, 0, 0), (255, 255, 255)]:
        counts = {"n_arm_layers": n_arm, "n_syn_layers": n_syn, "n_grids": n_grids}
        expected = base + arm * n_arm + syn * n_syn + grid * n_grids
        assert table.header_bytes(counts) == expected


def test_v2_table_matches_spec_v2_3_2() -> None:
    """bitstream-v2.md 3.2: version 2, `cross_grids` (u8, 0..6) at offset 16, then the
    version-1 fields in their order, one byte later."""
    section = SPEC_V2[SPEC_V2.index("### 3.2") : SPEC_V2.index("### 3.3")]
    rows = {row[1].strip("`"): row for row in table_rows(section) if len(row) == 5}
    offset, _, kind, allowed, _ = rows["cross_grids"]
    field = HEADER_V2.field("cross_grids")
    assert (field.offset, field.fmt) == (int(offset), TYPES[kind])
    assert field.limits == spec_range(allowed.split(",")[0])
    assert HEADER_V2.field("version").limits == spec_range(rows["version"][3])
    v1_names = [e.name for e in HEADER_V1.elements]
    v2_names = [e.name for e in HEADER_V2.elements]
    at = v1_names.index("n_syn_layers") + 1
    assert v2_names == v1_names[:at] + ["cross_grids"] + v1_names[at:]
    for name, f in HEADER_V1.fixed.items():
        if name != "version":
            assert HEADER_V2.field(name) == f


def test_fixed_offsets() -> None:
    # Spec 3.2 in order: magic 4 bytes, version u8, color_format u8, bit_depth u8,
    # width u16, height u16, then five u8.
    expected = {"magic": 0, "version": 4, "color_format": 5, "bit_depth": 6, "width": 7}
    expected |= {"height": 9, "n_grids": 11, "n_ctx_rowcol": 12, "ups_half_taps": 13}
    expected |= {"n_arm_layers": 14, "n_syn_layers": 15}
    assert {name: f.offset for name, f in HEADER_V1.fixed.items()} == expected
    assert all(HEADER_V1.offset(name) == offset for name, offset in expected.items())
    assert HEADER_V1.fixed_bytes == 16
    for name in ("weights_bytes", "arm.out", "grid.latent_min"):
        with pytest.raises(ValueError, match="no fixed offset"):
            HEADER_V1.offset(name)
    assert [f.offset for f in HEADER_V1.group("syn").fields] == [0, 1, 2, 3]
    assert HEADER_V1.field("syn.kernel").allowed == (1, 3, 5, 7)
    with pytest.raises(KeyError):
        HEADER_V1.field("kernel")


def test_versions() -> None:
    assert SYNTAX[1] is HEADER_V1 and syntax_table(1) is HEADER_V1
    assert HEADER_V1.field("version").limits == (1, 1)
    assert SYNTAX[2] is HEADER_V2 and syntax_table(2) is HEADER_V2
    assert HEADER_V2.field("version").limits == (2, 2)
    with pytest.raises(StreamError, match="unsupported version 3"):
        syntax_table(3)


@pytest.mark.parametrize("path", STREAMS, ids=lambda p: p.name)
def test_stored_streams_round_trip(path: Path) -> None:
    data = path.read_bytes()
    # The table of the stream's version (version 1 for an unknown or missing version byte).
    table = SYNTAX.get(data[4] if len(data) > 4 else 1, HEADER_V1)
    size = table.header_size(data)
    located = table.locate(data)
    if size and size <= len(data):
        assert located[-1].offset + located[-1].field.size == size
        assert table.pack(table.read(data)) == data[:size]
    try:
        header = parse_header(data)
    except StreamError:
        return
    assert size == header.header_bytes
    assert table.pack(header_values(header)) == data[:size]
    values = table.read(data)
    by_name = {loc.name: loc.read(data) for loc in located}
    assert by_name["width"] == values["width"] == header.width
    for g, grid in enumerate(header.grids):
        assert by_name[f"grid{g}.latent_max"] == values["grid"][g]["latent_max"] == grid.latent_max
    for index, layer in enumerate(header.syn_layers):
        assert by_name[f"syn{index}.kernel"] == layer.kernel


def test_locate_any_bytes() -> None:
    data = (ROOT / "tests" / "conformance" / "streams").glob("*.cool").__next__().read_bytes()
    full = HEADER_V1.locate(data)
    for cut in range(0, 60):
        part = HEADER_V1.locate(data[:cut])
        assert part == [loc for loc in full if loc.offset + loc.field.size <= cut]
    assert HEADER_V1.header_size(data[:15]) == 0
    # Counts are taken as they are: 255 ARM layers declared, 20 bytes given (16 + 3 + 1).
    junk = bytearray(data[:20])
    junk[HEADER_V1.offset("n_arm_layers")] = 255
    names = [loc.name for loc in HEADER_V1.locate(bytes(junk))]
    assert names[-1] == "arm1.out" and HEADER_V1.header_size(junk) > 255 * 3


def test_patch_a_field() -> None:
    data = bytearray((ROOT / "tests" / "regressions" / "fuzz-ok.cool").read_bytes())
    header = parse_header(bytes(data))
    loc = {loc.name: loc for loc in HEADER_V1.locate(data)}
    loc["arm_w_egk"].write(data, 17)
    with pytest.raises(StreamError, match="arm_w_egk = 17 outside"):
        parse_header(bytes(data))
    loc["arm_w_egk"].write(data, header.arm_quant.w_egk)
    last = loc[f"grid{header.n_grids - 1}.substream_bytes"]
    with pytest.raises(struct.error):
        last.write(data, -1)
    assert last.field.clamp(-1) == 0 and last.field.clamp(1 << 40) == (1 << 32) - 1
    assert last.field.wrap(-1) == (1 << 32) - 1 and last.field.wrap((1 << 32) + 5) == 5
    latent_min = HEADER_V1.field("grid.latent_min")
    assert [latent_min.wrap(v) for v in (32768, -32769, 65535, 7)] == [-32768, 32767, -1, 7]
    assert parse_header(bytes(data)) == header


def test_field_violations() -> None:
    width = HEADER_V1.field("width")
    assert width.violation(0) == "width = 0 outside [1, 16384]"
    assert width.violation(16384) is None
    size = HEADER_V1.field("grid.substream_bytes")
    assert size.limits == (0, (1 << 32) - 4) and size.violation(6).endswith("multiple of 4")
    assert HEADER_V1.field("grid.latent_min").signed
    assert not HEADER_V1.field("weights_bytes").signed


def test_enums() -> None:
    assert [(c.n_channels, c.chroma_420, c.label) for c in ColorFormat] == [
        (1, False, "grey"),
        (3, False, "rgb"),
        (3, False, "yuv444"),
        (3, True, "yuv420"),
    ]
    assert ColorFormat(3) is ColorFormat.YUV420 and ColorFormat.YUV420 == 3
    assert [c.name.lower() for c in ColorFormat] == [c.label for c in ColorFormat]
    assert [k.adds_input for k in LayerKind] == [False, True]
    assert [a.label for a in Activation] == ["none", "relu", "leakyrelu"]
    layer = LayerSpec(4, 4, 3, True, 2)  # ints and bools still build a layer
    assert layer.kind is LayerKind.RESIDUAL and layer.activation is Activation.LEAKYRELU
    assert layer.describe() == "4-3-residual-leakyrelu" and layer.residual
