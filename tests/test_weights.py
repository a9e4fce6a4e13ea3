"""Weights section (spec section 4): exp-Golomb decoding, rejections, parameter order."""

from __future__ import annotations

import time

import numpy as np
import pytest
from handmade import HeaderFields, egk_code, pack_bits

from coolchic_ref.errors import StreamError
from coolchic_ref.syntax import parse_header
from coolchic_ref.weights import BitReader, read_weights


def decode_values(bits: str, k: int, count: int) -> list[int]:
    reader = BitReader(pack_bits(bits))
    return [reader.read_egk(k) for _ in range(count)]


def test_zigzag_order_k0() -> None:
    # u = 0, 1, 2, 3, 4 code 0, 1, -1, 2, -2
    assert decode_values("1" + "010" + "011" + "00100" + "00101", 0, 5) == [0, 1, -1, 2, -2]


def test_msb_first_bit_reading() -> None:
    reader = BitReader(bytes([0b10110000, 0xFF]))
    assert reader.read_bits(1) == 1
    assert reader.read_bits(3) == 0b011
    assert reader.read_bits(6) == 0b000011
    assert reader.read_bits(0) == 0
    assert reader.read_bits(6) == 0b111111
    with pytest.raises(StreamError, match="weights section truncated"):
        reader.read_bits(1)


@pytest.mark.parametrize("k", range(17))
def test_round_trip_every_order(k: int) -> None:
    # Every value of [-32768, 32767] has x = u + 2^k < 2^18, i.e. z + k <= 17.
    rng = np.random.default_rng(k)
    values = [int(v) for v in rng.integers(-32768, 32768, size=200)]
    values += [int(v) for v in rng.integers(-min(1 << k, 32768), min(1 << k, 32767), size=200)]
    values += [0, 1, -1, 32767, -32768]
    bits = "".join(egk_code(v, k) for v in values)
    assert decode_values(bits, k, len(values)) == values


@pytest.mark.parametrize("k", range(17))
def test_range_limits(k: int) -> None:
    # 32767 and -32768 decode; 32768 and -32769 are "weight out of range".
    assert decode_values(egk_code(32767, k), k, 1) == [32767]
    assert decode_values(egk_code(-32768, k), k, 1) == [-32768]
    for value in (32768, -32769):
        with pytest.raises(StreamError, match="weight out of range"):
            decode_values(egk_code(value, k), k, 1)


def test_longest_code_k0_is_out_of_range() -> None:
    # k = 0: z = 17 is allowed by the length rule, but every such value is >= 65536.
    code = "0" * 17 + "1" + "0" * 17
    with pytest.raises(StreamError, match="weight out of range"):
        decode_values(code, 0, 1)


@pytest.mark.parametrize("k", [0, 1, 8, 16])
def test_code_too_long(k: int) -> None:
    # The (18 - k)-th zero of the prefix rejects, even if a 1 would follow.
    code = "0" * (18 - k) + "1" + "0" * 20
    with pytest.raises(StreamError, match="weight code too long"):
        decode_values(code, k, 1)
    # One zero less is a legal length.
    code = "0" * (17 - k) + "1" + "0" * 17
    reader = BitReader(pack_bits(code))
    try:
        reader.read_egk(k)
    except StreamError as error:
        assert "out of range" in str(error)


def test_too_long_when_the_zeros_reach_the_end() -> None:
    # 18 zeros, then the section ends: the length rule fires before the end is reached.
    with pytest.raises(StreamError, match="weight code too long"):
        BitReader(bytes(3)).read_egk(0)  # 24 zero bits
    # 16 zeros then the end: truncated.
    with pytest.raises(StreamError, match="weights section truncated"):
        BitReader(bytes(2)).read_egk(0)


def test_truncated_suffix() -> None:
    code = egk_code(1000, 0)  # 0000000001111101001: the suffix runs past one byte
    section = pack_bits(code)[:1]
    with pytest.raises(StreamError, match="weights section truncated"):
        BitReader(section).read_egk(0)


# --- read_weights: order, shapes, section rules -----------------------------


def small_header(weights_bytes: int) -> HeaderFields:
    """ARM 24->3->2 (r = 3), 3 taps, synthesis 2 grids -> 1-3x3 -> 1-1x1."""
    return HeaderFields(
        n_ctx_rowcol=3,
        ups_half_taps=3,
        arm_layers=[(3, 0, 1), (2, 0, 0)],
        syn_layers=[(1, 3, 0, 1), (1, 1, 0, 0)],
        arm_w_egk=2,
        arm_b_egk=3,
        ups_egk=4,
        syn_w_egk=5,
        syn_b_egk=6,
        grids=[(0, 0, 0), (1, 1, 0)],
        weights_bytes=weights_bytes,
    )


def parameter_lists() -> list[tuple[int, list[int]]]:
    """(egk order, values) in coding order for small_header."""
    arm_w0 = list(range(-36, 36))  # 3 x 24
    arm_b0 = [7, -8, 9]
    arm_w1 = [100 * i - 300 for i in range(6)]  # 2 x 3
    arm_b1 = [-1, 1]
    taps = [200, -50, 6]
    syn_w0 = list(range(-9, 9))  # 1 x 2 x 3 x 3
    syn_b0 = [4095]
    syn_w1 = [-32768]
    syn_b1 = [32767]
    return [
        (2, arm_w0),
        (3, arm_b0),
        (2, arm_w1),
        (3, arm_b1),
        (4, taps),
        (5, syn_w0),
        (6, syn_b0),
        (5, syn_w1),
        (6, syn_b1),
    ]


def weights_bits() -> str:
    return "".join(egk_code(v, k) for k, values in parameter_lists() for v in values)


def test_read_weights_order_and_shapes() -> None:
    section = pack_bits(weights_bits())
    header = parse_header(small_header(len(section)).stream())
    weights = read_weights(header, section)
    lists = [values for _, values in parameter_lists()]
    (w0, b0), (w1, b1) = weights.arm
    assert w0.shape == (3, 24) and w0.dtype == np.int32
    assert w0.reshape(-1).tolist() == lists[0]
    assert w0[1, 0] == lists[0][24]  # W[o][i], o outer
    assert b0.tolist() == lists[1]
    assert w1.shape == (2, 3) and w1.reshape(-1).tolist() == lists[2]
    assert b1.tolist() == lists[3]
    assert weights.ups_taps.tolist() == lists[4] and weights.ups_taps.dtype == np.int32
    (s0, c0), (s1, c1) = weights.synthesis
    assert s0.shape == (1, 2, 3, 3) and s0.dtype == np.int32
    assert s0[0, 1, 0, 2] == lists[5][9 + 2]  # W[o][i][ky][kx], kx innermost
    assert c0.tolist() == lists[6]
    assert s1.shape == (1, 1, 1, 1) and s1.reshape(-1).tolist() == lists[7]
    assert c1.tolist() == lists[8]
    assert weights.n_parameters == sum(len(v) for v in lists)


def test_padding_must_be_zero_and_section_exact() -> None:
    bits = weights_bits()
    section = pack_bits(bits)
    header = parse_header(small_header(len(section)).stream())
    padding = -len(bits) % 8
    if padding:
        bad = pack_bits(bits + "0" * (padding - 1) + "1")
        with pytest.raises(StreamError, match="weights section size mismatch"):
            read_weights(header, bad)
    with pytest.raises(StreamError, match="weights section size mismatch"):
        read_weights(header, section + b"\x00")  # one byte too many


def test_every_truncation_rejects() -> None:
    section = pack_bits(weights_bits())
    header = parse_header(small_header(len(section)).stream())
    for size in range(len(section)):
        with pytest.raises(StreamError, match="weights section truncated"):
            read_weights(header, section[:size])


def test_full_byte_of_padding_is_a_mismatch() -> None:
    # Parameters that end exactly on a byte boundary followed by a zero byte.
    bits = weights_bits()
    bits += "0" * (-len(bits) % 8)
    section = pack_bits(bits) + b"\x00"
    header = parse_header(small_header(len(section)).stream())
    with pytest.raises(StreamError, match="weights section size mismatch"):
        read_weights(header, section)


def test_huge_section_is_not_expanded() -> None:
    # A 16 MiB section of zero bytes: the first code is already too long, and the
    # reader must not expand all 2^27 bits to find out.
    header = parse_header(small_header(1 << 24).stream())
    section = bytes(1 << 24)
    start = time.perf_counter()
    with pytest.raises(StreamError, match="weight code too long"):
        read_weights(header, section)
    assert time.perf_counter() - start < 0.5


def test_speed_5000_parameters() -> None:
    # ARM 24-24-2 (r = 3), 8 taps, synthesis 24-3x3 from 7 grids, residual 24-3x3,
    # 3-1x1: 8077 parameters.
    fields = HeaderFields(
        color_format=1,
        n_ctx_rowcol=3,
        ups_half_taps=8,
        arm_layers=[(24, 0, 1), (24, 1, 1), (2, 0, 0)],
        syn_layers=[(24, 3, 0, 1), (24, 3, 1, 1), (3, 1, 0, 0)],
        arm_w_egk=3,
        arm_b_egk=3,
        ups_egk=3,
        syn_w_egk=3,
        syn_b_egk=3,
        grids=[(0, 0, 0)] * 7,
    )
    counts = [24 * 24, 24, 24 * 24, 24, 2 * 24, 2, 8, 24 * 7 * 9, 24, 24 * 24 * 9, 24, 3 * 24, 3]
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(-60, 61, size=sum(counts))]
    section = pack_bits("".join(egk_code(v, 3) for v in values))
    fields.weights_bytes = len(section)
    header = parse_header(fields.stream())
    assert sum(counts) > 5000
    best = min(_timed(read_weights, header, section) for _ in range(5))
    assert best < 0.05, f"read_weights took {best * 1000:.1f} ms for {sum(counts)} parameters"
    weights = read_weights(header, section)
    flat = [a.reshape(-1) for w, b in weights.arm for a in (w, b)]
    flat += [weights.ups_taps]
    flat += [a.reshape(-1) for w, b in weights.synthesis for a in (w, b)]
    assert np.concatenate(flat).tolist() == values


def _timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start
