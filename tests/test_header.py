"""Header syntax and the rejection rules 1-5 of spec section 9, on hand-packed headers."""

from __future__ import annotations

import struct

import pytest
from handmade import HeaderFields

from coolchic_ref.errors import StreamError
from coolchic_ref.syntax import (
    HEADER_V1,
    MAX_ARM_LAYERS,
    MAX_GRIDS,
    MAX_PIXELS,
    MAX_SYN_LAYERS,
    SYN_KERNELS,
    ColorFormat,
    parse_header,
)


def rejects(fields: HeaderFields, match: str) -> None:
    with pytest.raises(StreamError, match=match):
        parse_header(fields.stream())


def test_minimal_header_parses() -> None:
    fields = HeaderFields()
    data = fields.stream()
    header = parse_header(data)
    assert header.header_bytes == 30 + 3 * 1 + 4 * 1 + 8 * 1 == len(fields.pack())
    assert header.total_bytes == len(data)
    assert header.color_format == ColorFormat.GREY
    assert (header.width, header.height, header.n_grids) == (8, 8, 1)


def test_all_fields_are_read_in_order() -> None:
    fields = HeaderFields(
        color_format=3,
        bit_depth=10,
        width=300,
        height=200,
        n_ctx_rowcol=2,
        ups_half_taps=4,
        arm_layers=[(12, 1, 1), (7, 0, 2), (2, 0, 0)],
        syn_layers=[(5, 1, 0, 1), (5, 3, 1, 2), (3, 5, 0, 0)],
        arm_w_shift=9,
        arm_b_shift=13,
        arm_w_egk=3,
        arm_b_egk=4,
        ups_shift=7,
        ups_egk=5,
        syn_w_shift=11,
        syn_b_shift=20,
        syn_w_egk=6,
        syn_b_egk=16,
        weights_bytes=77,
        grids=[(-5, 5, 8), (-300, -300, 0), (32767, 32767, 0), (-32768, 32767, 12)],
    )
    header = parse_header(fields.stream())
    assert header.color_format == ColorFormat.YUV420
    assert header.bit_depth == 10 and (header.width, header.height) == (300, 200)
    assert header.n_ctx_rowcol == 2 and header.dim_arm == 12 and header.ups_half_taps == 4
    assert [layer.describe() for layer in header.arm_layers] == [
        "12-1-residual-relu",
        "7-1-linear-leakyrelu",
        "2-1-linear-none",
    ]
    assert [layer.in_channels for layer in header.arm_layers] == [12, 12, 7]
    assert [layer.describe() for layer in header.syn_layers] == [
        "5-1-linear-relu",
        "5-3-residual-leakyrelu",
        "3-5-linear-none",
    ]
    assert [layer.in_channels for layer in header.syn_layers] == [4, 5, 5]
    q = header.arm_quant
    assert (q.w_shift, q.b_shift, q.w_egk, q.b_egk) == (9, 13, 3, 4)
    assert (header.ups_shift, header.ups_egk) == (7, 5)
    q = header.syn_quant
    assert (q.w_shift, q.b_shift, q.w_egk, q.b_egk) == (11, 20, 6, 16)
    assert header.weights_bytes == 77
    grids = [
        (g.height, g.width, g.latent_min, g.latent_max, g.substream_bytes) for g in header.grids
    ]
    assert grids == [
        (200, 300, -5, 5, 8),
        (100, 150, -300, -300, 0),
        (50, 75, 32767, 32767, 0),
        (25, 38, -32768, 32767, 12),
    ]
    assert header.grids[3].alphabet_size == 65536
    offsets = header.substream_offsets
    assert offsets[0] == header.header_bytes + 77 and offsets[3] == offsets[0] + 8


# --- rules 1 to 3 -----------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"C", b"CCRF", b"CCRG\x01" + bytes(60), b"\x00" * 100])
def test_not_a_stream(data: bytes) -> None:
    with pytest.raises(StreamError, match="not a coolchic-ref stream"):
        parse_header(data)


@pytest.mark.parametrize("version", [0, 3, 255])
def test_unknown_version(version: int) -> None:
    rejects(HeaderFields(version=version), "unsupported version")


def test_every_header_prefix_is_truncated() -> None:
    header = HeaderFields().pack()
    for size in range(5, len(header)):
        with pytest.raises(StreamError, match="truncated header"):
            parse_header(header[:size])


# --- rule 4: each field out of range -------------------------------------------------


COUNTS = {group.count for group in HEADER_V1.groups}
RANGED = [
    name
    for name, f in HEADER_V1.fields.items()
    if "." not in name and name not in COUNTS and f.limits != f.type_range and name != "version"
]


def out_of_range_values(name: str) -> list[int]:
    """Just below and just above the allowed range of a field, and its type's largest value."""
    f = HEADER_V1.field(name)
    (low, high), (type_low, type_high) = f.limits, f.type_range
    candidates = (low - 1, high + 1, type_high)
    return sorted({v for v in candidates if type_low <= v <= type_high and not low <= v <= high})


def test_ranged_fields_are_the_spec_ones() -> None:
    assert RANGED == [
        "color_format",
        "bit_depth",
        "width",
        "height",
        "n_ctx_rowcol",
        "ups_half_taps",
        "arm_w_shift",
        "arm_b_shift",
        "arm_w_egk",
        "arm_b_egk",
        "ups_shift",
        "ups_egk",
        "syn_w_shift",
        "syn_b_shift",
        "syn_w_egk",
        "syn_b_egk",
        "weights_bytes",
    ]


@pytest.mark.parametrize(
    ("name", "value"), [(name, value) for name in RANGED for value in out_of_range_values(name)]
)
def test_field_out_of_range(name: str, value: int) -> None:
    fields = HeaderFields()
    setattr(fields, name, value)
    if name == "color_format":
        fields.syn_layers = [(3, 1, 0, 0)]  # so that only the colour format is wrong
    with pytest.raises(StreamError, match=f"{name} = {value} outside"):
        parse_header(fields.pack())  # rejected from the header alone


def test_field_limits_are_accepted() -> None:
    top = {name: HEADER_V1.field(name).high for name in RANGED}
    fields = HeaderFields(
        bit_depth=top["bit_depth"],
        width=top["width"],
        height=MAX_PIXELS // top["width"],  # W * H = 2^24 exactly
        n_ctx_rowcol=top["n_ctx_rowcol"],
        ups_half_taps=top["ups_half_taps"],
        arm_layers=[(24, 0, 0)] * (MAX_ARM_LAYERS - 1) + [(2, 0, 0)],
        syn_layers=[(1, 1, 0, 0)] * MAX_SYN_LAYERS,
        weights_bytes=top["weights_bytes"],
        grids=[(0, 0, 0)] * MAX_GRIDS,
    )
    for name in RANGED:
        if name.startswith(("arm_", "ups_", "syn_")):
            setattr(fields, name, top[name])
    fields.syn_layers[0] = (1, max(SYN_KERNELS), 0, 0)
    header = parse_header(fields.stream())
    assert header.width * header.height == MAX_PIXELS and header.n_grids == MAX_GRIDS
    assert (header.arm_quant.b_shift, header.syn_quant.b_shift) == (24, 28)  # spec 3.2


def test_picture_too_large() -> None:
    rejects(HeaderFields(width=16384, height=1025), "exceeds")
    rejects(HeaderFields(width=4097, height=4097), "exceeds")


@pytest.mark.parametrize("n_grids", [0, 8])
def test_grid_count(n_grids: int) -> None:
    rejects(HeaderFields(n_grids=n_grids, grids=[(0, 0, 0)] * max(n_grids, 1)), "n_grids")


@pytest.mark.parametrize("count", [0, 6])
def test_arm_layer_count(count: int) -> None:
    rejects(HeaderFields(n_arm_layers=count), "n_arm_layers")


@pytest.mark.parametrize("count", [0, 9])
def test_synthesis_layer_count(count: int) -> None:
    rejects(HeaderFields(n_syn_layers=count), "n_syn_layers")


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([(0, 0, 0), (2, 0, 0)], "out"),
        ([(65, 0, 0), (2, 0, 0)], "out"),
        ([(4, 2, 0), (2, 0, 0)], "type"),
        ([(4, 0, 3), (2, 0, 0)], "activation"),
        ([(4, 0, 0), (3, 0, 0)], "last ARM layer"),
        ([(5, 1, 0), (2, 0, 0)], "residual"),  # dim_arm = 4 inputs
        ([(4, 1, 0), (2, 1, 0)], "residual"),
    ],
)
def test_arm_layer_rules(layers: list[tuple[int, int, int]], match: str) -> None:
    rejects(HeaderFields(arm_layers=layers), match)


@pytest.mark.parametrize(
    ("layers", "match"),
    [
        ([(1, 0, 0, 0)], "kernel"),
        ([(1, 2, 0, 0)], "kernel"),
        ([(1, 9, 0, 0)], "kernel"),
        ([(1, 1, 2, 0)], "type"),
        ([(1, 1, 0, 3)], "activation"),
        ([(2, 1, 0, 0)], "last synthesis layer"),
        ([(4, 1, 0, 0), (4, 3, 1, 0), (2, 1, 1, 0)], "residual"),
        ([(2, 1, 1, 0), (1, 1, 0, 0)], "residual"),  # first layer has N = 1 input
    ],
)
def test_synthesis_layer_rules(layers: list[tuple[int, int, int, int]], match: str) -> None:
    rejects(HeaderFields(syn_layers=layers), match)


def test_residual_with_matching_width_is_accepted() -> None:
    fields = HeaderFields(arm_layers=[(4, 1, 1), (2, 0, 0)], syn_layers=[(1, 3, 1, 2)])
    header = parse_header(fields.stream())
    assert header.arm_layers[0].residual and header.syn_layers[0].residual


def test_mac_limits() -> None:
    # ARM: 24 * 64 + 64 * 64 + 64 * 2 = 5760 <= 8192; with another 64 x 64 layer 9856.
    ok = HeaderFields(n_ctx_rowcol=3, arm_layers=[(64, 0, 1), (64, 0, 1), (2, 0, 0)])
    parse_header(ok.stream())
    big = HeaderFields(n_ctx_rowcol=3, arm_layers=[(64, 0, 1), (64, 0, 1), (64, 0, 1), (2, 0, 0)])
    rejects(big, "ARM needs 9856 MAC")
    # Synthesis: 7x7 from 1 grid to 64, then 64 -> 64 and 64 -> 1: 3136 + 4096 + 64.
    parse_header(HeaderFields(syn_layers=[(64, 7, 0, 1), (64, 1, 0, 1), (1, 1, 0, 0)]).stream())
    edge = HeaderFields(syn_layers=[(64, 1, 0, 1)] + [(64, 1, 1, 1)] * 3 + [(1, 1, 0, 0)])
    parse_header(edge.stream())  # 64 + 3 * 4096 + 64 = 12416
    over = HeaderFields(syn_layers=[(64, 1, 0, 1)] + [(64, 1, 1, 1)] * 4 + [(1, 1, 0, 0)])
    rejects(over, "synthesis needs 16512 MAC")


def test_shift_relations() -> None:
    # arm_b_shift <= 8 + arm_w_shift; syn_b_shift <= 12 + syn_w_shift
    parse_header(HeaderFields(arm_w_shift=2, arm_b_shift=10).stream())
    rejects(HeaderFields(arm_w_shift=2, arm_b_shift=11), "arm_b_shift")
    parse_header(HeaderFields(syn_w_shift=3, syn_b_shift=15).stream())
    rejects(HeaderFields(syn_w_shift=3, syn_b_shift=16), "syn_b_shift")


def test_grid_rules() -> None:
    rejects(HeaderFields(grids=[(3, 2, 0)]), "latent_min 3 > latent_max 2")
    rejects(HeaderFields(grids=[(0, 1, 6)]), "grid 0: substream size not a multiple of 4")
    rejects(HeaderFields(grids=[(5, 5, 4)]), "constant but has a 4-byte substream")
    parse_header(HeaderFields(grids=[(0, 1, 0)]).stream())  # K > 1 with an empty substream


# --- rule 5: stream length ----------------------------------------------------------


def test_stream_length() -> None:
    fields = HeaderFields(weights_bytes=10, grids=[(0, 3, 8), (0, 0, 0)])
    data = fields.stream()
    assert parse_header(data).total_bytes == len(data)
    for size in range(len(fields.pack()), len(data)):
        with pytest.raises(StreamError, match="truncated stream"):
            parse_header(data[:size])
    with pytest.raises(StreamError, match="trailing data"):
        parse_header(data + b"\x00")


def test_huge_declared_picture_truncated() -> None:
    # A 16384x1024 picture whose sections are missing: rejected from the header alone.
    fields = HeaderFields(width=16384, height=1024, weights_bytes=1 << 20, grids=[(0, 9, 1 << 24)])
    with pytest.raises(StreamError, match="truncated stream"):
        parse_header(fields.pack())


def test_header_size_formula() -> None:
    for n_arm, n_syn, n_grids in [(1, 1, 1), (5, 8, 7), (3, 2, 4)]:
        fields = HeaderFields(
            arm_layers=[(4, 0, 0)] * (n_arm - 1) + [(2, 0, 0)],
            syn_layers=[(1, 1, 0, 0)] * n_syn,
            grids=[(0, 0, 0)] * n_grids,
        )
        assert (
            parse_header(fields.stream()).header_bytes == 30 + 3 * n_arm + 4 * n_syn + 8 * n_grids
        )


def test_struct_layout_by_hand() -> None:
    # The same minimal stream written byte by byte, independent of HeaderFields.
    data = b"CCRF" + bytes([1, 0, 8]) + struct.pack("<HH", 8, 8) + bytes([1, 1, 1, 1, 1])
    data += bytes([2, 0, 0]) + bytes([1, 1, 0, 0]) + bytes(10) + struct.pack("<I", 1)
    data += struct.pack("<hhI", 0, 0, 0) + b"\x00"
    assert data == HeaderFields().stream()
    parse_header(data)
