"""The encoder's stream writer: exp-Golomb codes, header bytes, rANS substreams, validation.

The substreams are checked three ways: an independent rANS encoder written
here from the spec's integer cdf must produce the same words as constriction
(so constriction's fast quantization of the probabilities f_i - 1 is the
identity), an independent decoder following spec 5.5 must recover the
latents, and constriction must decode its own data.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
import sys

import constriction
import numpy as np
import pytest

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import (
    IntegerCodec,
    LayerDesc,
    choose_egk,
    egk_bits,
    egk_code,
    encode_grid,
    format_layers,
    parse_layers,
    validate_codec,
    wavefront_order,
    write_stream,
)
from coolchic_ref.encoder.format import LayerKind
from coolchic_ref.encoder.random_codec import random_codec

# ---------------------------------------------------------------------------
# Independent readers, written from the spec


class BitReader:
    """Spec 4.1: most significant bit of each byte first."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int) -> int:
        value = 0
        for _ in range(n):
            if self.pos >= 8 * len(self.data):
                raise ValueError("weights section truncated")
            bit = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
            value = (value << 1) | bit
            self.pos += 1
        return value


def decode_egk(reader: BitReader, k: int) -> int:
    """Spec 4.2, literally."""
    z = 0
    while reader.read(1) == 0:
        z += 1
        if z + k > 17:
            raise ValueError("weight code too long")
    x = (1 << (z + k)) | reader.read(z + k)
    u = x - (1 << k)
    v = (u + 1) // 2 if u % 2 else -(u // 2)
    if not -32768 <= v <= 32767:
        raise ValueError("weight out of range")
    return v


def parse_stream(data: bytes) -> dict:
    """Header fields (spec 3.2), weights (spec 4.3) and raw substreams of a stream."""
    fields = dict(
        zip(
            "magic version color_format bit_depth width height n_grids n_ctx ups_taps n_arm "
            "n_syn".split(),
            struct.unpack_from("<4sBBBHHBBBBB", data, 0),
            strict=True,
        )
    )
    pos = 16
    arm = [tuple(data[pos + 3 * j : pos + 3 * j + 3]) for j in range(fields["n_arm"])]
    pos += 3 * fields["n_arm"]
    syn = [tuple(data[pos + 4 * j : pos + 4 * j + 4]) for j in range(fields["n_syn"])]
    pos += 4 * fields["n_syn"]
    names = "arm_w_shift arm_b_shift arm_w_egk arm_b_egk ups_shift ups_egk syn_w_shift "
    names += "syn_b_shift syn_w_egk syn_b_egk"
    fields.update(zip(names.split(), data[pos : pos + 10], strict=True))
    pos += 10
    (fields["weights_bytes"],) = struct.unpack_from("<I", data, pos)
    pos += 4
    grids = [struct.unpack_from("<hhI", data, pos + 8 * g) for g in range(fields["n_grids"])]
    pos += 8 * fields["n_grids"]
    fields.update(arm=arm, syn=syn, grids=grids, header_bytes=pos)

    section = data[pos : pos + fields["weights_bytes"]]
    reader = BitReader(section)
    weights = {"arm": [], "syn": []}
    in_channels = 2 * fields["n_ctx"] * (fields["n_ctx"] + 1)
    for out, _, _ in arm:
        w = [decode_egk(reader, fields["arm_w_egk"]) for _ in range(out * in_channels)]
        b = [decode_egk(reader, fields["arm_b_egk"]) for _ in range(out)]
        weights["arm"].append((w, b))
        in_channels = out
    weights["ups"] = [decode_egk(reader, fields["ups_egk"]) for _ in range(fields["ups_taps"])]
    in_channels = fields["n_grids"]
    for out, kernel, _, _ in syn:
        count = out * in_channels * kernel * kernel
        w = [decode_egk(reader, fields["syn_w_egk"]) for _ in range(count)]
        b = [decode_egk(reader, fields["syn_b_egk"]) for _ in range(out)]
        weights["syn"].append((w, b))
        in_channels = out
    assert fields["weights_bytes"] == (reader.pos + 7) // 8, "weights section size mismatch"
    assert reader.read(8 * len(section) - reader.pos) == 0, "nonzero padding bits"
    fields["weights"] = weights
    pos += fields["weights_bytes"]
    substreams = []
    for _, _, size in grids:
        substreams.append(data[pos : pos + size])
        pos += size
    assert pos == len(data), "stream length differs from the sections"
    fields["substreams"] = substreams
    return fields


def rans_decode_grid(codec: IntegerCodec, level: int, substream: bytes, lo: int, hi: int):
    """Spec 5.5 with the spec's integer cdf, in wavefront order; returns the latents."""
    height, width = codec.latents[level].shape
    grid = np.zeros((height, width), dtype=np.int64)
    alphabet = hi - lo + 1
    words = [int(w) for w in np.frombuffer(substream, dtype="<u4")]
    n, pos, state = len(words), 0, 0
    if n:
        assert words[0] != 0, "invalid substream start"
        state, pos = words[0], 1
        while pos < n and state < 1 << 32:
            state, pos = (state << 32) | words[pos], pos + 1
    order = wavefront_order(height, width, codec.n_ctx_rowcol)
    for index in order:
        y, x = divmod(int(index), width)
        # Causal: the context only reads latents decoded before (y, x).
        contexts = im.arm_contexts(grid, codec.n_ctx_rowcol, slice(y, y + 1))[:, x : x + 1]
        mu, log_scale = im.run_arm(codec, contexts)[:, 0]
        cdf = im.laplace_cdf(int(mu), int(log_scale), np.arange(alphabet + 1), lo, alphabet)
        q = state & ((1 << 24) - 1)
        s = int(np.searchsorted(cdf, q, side="right")) - 1
        state = (state >> 24) * int(cdf[s + 1] - cdf[s]) + q - int(cdf[s])
        if state < 1 << 32 and pos < n:
            state, pos = (state << 32) | words[pos], pos + 1
        grid[y, x] = lo + s
    assert pos == n and state == 0, "substream size mismatch"
    return grid


def rans_encode_reference(cdfs: np.ndarray, symbols: np.ndarray) -> list[int]:
    """An independent rANS encoder (constriction's AnsCoder algorithm, 32-bit words,
    64-bit state, 24-bit precision) with exact integer cdfs; words in stream order."""
    state, pushed = 0, []
    for cdf, s in zip(cdfs[::-1], symbols[::-1], strict=True):
        low, freq = int(cdf[s]), int(cdf[s + 1] - cdf[s])
        if (state >> 40) >= freq:
            pushed.append(state & 0xFFFFFFFF)
            state >>= 32
        state = ((state // freq) << 24) | (low + state % freq)
    while state:
        pushed.append(state & 0xFFFFFFFF)
        state >>= 32
    return pushed[::-1]


# ---------------------------------------------------------------------------
# Exp-Golomb


def test_egk_codes_examples() -> None:
    assert [egk_code(v, 0) for v in (0, 1, -1, 2, -2)] == ["1", "010", "011", "00100", "00101"]
    assert egk_code(0, 2) == "100" and egk_code(-1, 2) == "110"
    assert egk_code(-32768, 16) == "0" + "1" + "0" * 17  # x = 2^17, z = 1
    assert egk_code(-32768, 0) == "0" * 16 + "1" + "0" * 15 + "1"  # x = 65537


@pytest.mark.parametrize("k", range(17))
def test_egk_roundtrip_and_length(k: int) -> None:
    rng = np.random.default_rng(k)
    values = [0, 1, -1, 32767, -32768, -32767, 255, -256] + list(
        rng.integers(-32768, 32768, size=40)
    )
    bits = "".join(egk_code(int(v), k) for v in values)
    assert egk_bits(np.array(values), k) == len(bits)
    data = int(bits + "0" * (-len(bits) % 8), 2).to_bytes((len(bits) + 7) // 8, "big")
    reader = BitReader(data)
    assert [decode_egk(reader, k) for _ in values] == values


def test_choose_egk_minimizes_bits() -> None:
    rng = np.random.default_rng(3)
    for scale in (0.3, 1, 5, 40, 300, 3000, 30000):
        values = np.clip(np.rint(rng.laplace(0, scale, 200)), -32768, 32767).astype(int)
        costs = [sum(len(egk_code(int(v), k)) for v in values) for k in range(17)]
        assert choose_egk(values) == int(np.argmin(costs))
    assert choose_egk(np.zeros(5, dtype=int)) == 0
    assert choose_egk(np.full(9, -32768)) == 15  # 18 bits each; k = 16 needs 19


def test_parse_layers() -> None:
    layers = parse_layers("16-1-linear-relu,3-3-residual-none, 8-5-linear-leakyrelu")
    assert layers == [
        LayerDesc(16, 1, LayerKind.LINEAR, "relu"),
        LayerDesc(3, 3, LayerKind.RESIDUAL, "none"),
        LayerDesc(8, 5, LayerKind.LINEAR, "leakyrelu"),
    ]
    assert format_layers(layers) == "16-1-linear-relu,3-3-residual-none,8-5-linear-leakyrelu"
    for bad in ("16-1-linear", "a-1-linear-relu", "16-1-conv-relu", "16-1-linear-gelu"):
        with pytest.raises(ValueError):
            parse_layers(bad)


# ---------------------------------------------------------------------------
# Header


def hand_made_codec() -> IntegerCodec:
    """4:2:0 10-bit 5x3 picture, 2 grids (grid 1 constant), r = 1, T = 2."""
    arm_layers = parse_layers("3-1-linear-relu,2-1-linear-none")
    syn_layers = parse_layers("2-3-linear-leakyrelu,2-1-residual-relu,3-1-linear-none")
    return IntegerCodec(
        color_format=3,
        bit_depth=10,
        width=5,
        height=3,
        n_ctx_rowcol=1,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_weights=[
            (np.array([[1, 0, -1, 2]] * 3), np.array([0, 1, -1])),
            (np.array([[1, -1, 0], [0, 2, 1]]), np.array([3, 300])),
        ],
        ups_taps=np.array([192, 64]),
        syn_weights=[
            (np.ones((2, 2, 3, 3), dtype=int), np.array([5, -5])),
            (np.array([[[[3]], [[-3]]], [[[1]], [[2]]]]), np.array([0, 0])),
            (np.array([[[[10]], [[20]]]] * 3), np.array([2048, 1024, 0])),
        ],
        arm_w_shift=8,
        arm_b_shift=6,
        ups_shift=8,
        syn_w_shift=7,
        syn_b_shift=12,
        latents=[
            np.array([[0, 1, -2, 3, 0], [1, 1, 0, 0, -1], [5, 0, 0, 0, 0]]),
            np.full((2, 3), -7),
        ],
    )


def test_header_bytes_match_spec_table() -> None:
    codec = hand_made_codec()
    data = write_stream(codec)
    fields = parse_stream(data)
    weights_bytes = fields["weights_bytes"]
    size0 = fields["grids"][0][2]
    expected = (
        b"CCRF"
        + bytes([1, 3, 10])  # version, color_format, bit_depth
        + bytes([5, 0, 3, 0])  # width, height (u16 LE)
        + bytes([2, 1, 2, 2, 3])  # n_grids, n_ctx_rowcol, ups_half_taps, n_arm, n_syn
        + bytes([3, 0, 1, 2, 0, 0])  # ARM layers: out, type, act
        + bytes([2, 3, 0, 2, 2, 1, 1, 1, 3, 1, 0, 0])  # synthesis: out, kernel, type, act
        + bytes([8, 6, fields["arm_w_egk"], fields["arm_b_egk"]])
        + bytes([8, fields["ups_egk"]])
        + bytes([7, 12, fields["syn_w_egk"], fields["syn_b_egk"]])
        + struct.pack("<I", weights_bytes)
        + struct.pack("<hhI", -2, 5, size0)  # grid 0: min, max, substream bytes
        + struct.pack("<hhI", -7, -7, 0)  # grid 1: constant, no substream
    )
    header_bytes = 30 + 3 * 2 + 4 * 3 + 8 * 2
    assert len(expected) == header_bytes == fields["header_bytes"]
    assert data[:header_bytes] == expected
    assert len(data) == header_bytes + weights_bytes + size0
    assert size0 > 0 and size0 % 4 == 0

    # exp-Golomb orders: the cheapest for each parameter group
    arm_w = np.concatenate([w.reshape(-1) for w, _ in codec.arm_weights])
    syn_b = np.concatenate([b for _, b in codec.syn_weights])
    assert fields["arm_w_egk"] == choose_egk(arm_w)
    assert fields["ups_egk"] == choose_egk(codec.ups_taps)
    assert fields["syn_b_egk"] == choose_egk(syn_b)
    # the weights section decodes to the codec's parameters, in spec order
    for (w, b), (w_read, b_read) in zip(codec.arm_weights, fields["weights"]["arm"], strict=True):
        assert w.reshape(-1).tolist() == w_read and b.tolist() == b_read
    assert fields["weights"]["ups"] == [192, 64]
    for (w, b), (w_read, b_read) in zip(codec.syn_weights, fields["weights"]["syn"], strict=True):
        assert w.reshape(-1).tolist() == w_read and b.tolist() == b_read


def test_weights_section_bits_exact() -> None:
    """All-zero and small parameters: the section is the concatenated codes, zero padded."""
    codec = hand_made_codec()
    codec.arm_weights = [(np.zeros_like(w), np.zeros_like(b)) for w, b in codec.arm_weights]
    codec.syn_weights = [(np.zeros_like(w), np.zeros_like(b)) for w, b in codec.syn_weights]
    codec.ups_taps = np.array([1, -1])
    data = write_stream(codec)
    fields = parse_stream(data)
    n_zero = 3 * 4 + 3 + 2 * 3 + 2
    n_syn = 2 * 2 * 9 + 2 + 2 * 2 + 2 + 3 * 2 + 3
    bits = "1" * n_zero + "010" + "011" + "1" * n_syn  # all orders 0
    bits += "0" * (-len(bits) % 8)
    section = data[fields["header_bytes"] : fields["header_bytes"] + fields["weights_bytes"]]
    assert section == int(bits, 2).to_bytes(len(bits) // 8, "big")


# ---------------------------------------------------------------------------
# rANS substreams


def test_wavefront_order() -> None:
    order = wavefront_order(3, 4, 1)  # d = x + 2 y
    positions = [divmod(int(i), 4) for i in order]
    assert positions == [
        (0, 0), (0, 1), (0, 2), (1, 0), (0, 3), (1, 1), (1, 2), (2, 0),
        (1, 3), (2, 1), (2, 2), (2, 3),
    ]  # fmt: skip
    for r in (1, 2, 3):
        index = {int(p): n for n, p in enumerate(wavefront_order(6, 9, r))}
        for y in range(6):
            for x in range(9):
                for dy, dx in im.context_offsets(r):
                    if 0 <= y + dy < 6 and 0 <= x + dx < 9:
                        assert index[(y + dy) * 9 + x + dx] < index[y * 9 + x]


@pytest.mark.parametrize(
    "seed, options",
    [
        (0, dict(width=11, height=9, latent_range=3)),
        (1, dict(width=23, height=17, latent_range=40)),
        (2, dict(width=4, height=13, latent_range=1)),
        (3, dict(width=6, height=5, extreme=True)),  # K = 65536
        (4, dict(width=30, height=20, latent_range=300)),
    ],
)
def test_constriction_matches_exact_integer_cdf(seed: int, options: dict) -> None:
    rng = np.random.default_rng(seed)
    codec = random_codec(rng, n_grids=2, **options)
    for level in range(2):
        latent = codec.latents[level]
        lo, hi = int(latent.min()), int(latent.max())
        if lo == hi:
            continue
        substream = encode_grid(codec, level)
        # 1. an independent encoder with the exact integer cdf writes the same words
        order = wavefront_order(*latent.shape, codec.n_ctx_rowcol)
        mu, log_scale = im.arm_mu_log_scale(codec, level)
        cdfs = im.laplace_cdf_table(
            mu.reshape(-1)[order], log_scale.reshape(-1)[order], lo, hi - lo + 1
        )
        symbols = latent.reshape(-1)[order] - lo
        words = rans_encode_reference(cdfs, symbols)
        assert np.frombuffer(substream, dtype="<u4").tolist() == words
        # 2. the spec's decoding process (5.5) recovers the latents
        decoded = rans_decode_grid(codec, level, substream, lo, hi)
        assert np.array_equal(decoded, latent)
        # 3. constriction decodes its own data (words reversed back into its stack order)
        coder = constriction.stream.stack.AnsCoder(
            np.frombuffer(substream, dtype="<u4")[::-1].astype(np.uint32).copy()
        )
        probabilities = (np.diff(cdfs, axis=1) - 1).astype(np.float64)
        family = constriction.stream.model.Categorical(perfect=False)
        assert np.array_equal(coder.decode(family, probabilities), symbols)
        assert coder.is_empty()


def test_constriction_quantization_is_identity_single_model() -> None:
    """Probe constriction's cdf directly: encoding symbol s from a known state gives
    state' = (state // f) * 2^24 + cdf(s) + state % f, and f, cdf(s) follow."""
    rng = np.random.default_rng(11)
    for alphabet in (2, 3, 17, 1000):
        mu = int(rng.integers(-2000, 2000))
        log_scale = int(rng.integers(-600, 900))
        cdf = im.laplace_cdf_table(np.array([mu]), np.array([log_scale]), -alphabet // 2, alphabet)[
            0
        ]
        probabilities = (np.diff(cdf) - 1).astype(np.float64)
        model = constriction.stream.model.Categorical(probabilities, perfect=False)
        for s in range(min(alphabet, 40)):
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(np.array([s], dtype=np.int32), model)
            (state,) = coder.get_compressed().tolist() or [0]
            # from state 0: state' = cdf(s); a second symbol reveals f(s)
            assert state == cdf[s]
            coder = constriction.stream.stack.AnsCoder()
            coder.encode_reverse(np.array([s, alphabet - 1], dtype=np.int32), model)
            first = int(cdf[alphabet - 1])  # state after encoding the last symbol
            compressed = coder.get_compressed().tolist()
            state = sum(int(w) << (32 * j) for j, w in enumerate(compressed))
            f = int(cdf[s + 1] - cdf[s])
            assert state == ((first // f) << 24) + int(cdf[s]) + first % f


def test_substream_starts_with_nonzero_word() -> None:
    codec = random_codec(np.random.default_rng(7), width=9, height=8, n_grids=1, latent_range=5)
    data = write_stream(codec)
    fields = parse_stream(data)
    words = np.frombuffer(fields["substreams"][0], dtype="<u4")
    assert words[0] != 0


def test_constant_grids_have_no_substream() -> None:
    codec = random_codec(
        np.random.default_rng(8), width=10, height=7, n_grids=4, constant_grids=[0, 2]
    )
    fields = parse_stream(write_stream(codec))
    for g, (lo, hi, size) in enumerate(fields["grids"]):
        assert (lo == hi) == (g in (0, 2))
        assert (size == 0) == (lo == hi)
        assert lo == codec.latents[g].min() and hi == codec.latents[g].max()


@pytest.mark.parametrize("seed", range(8))
def test_random_streams_parse_and_decode_latents(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    codec = random_codec(
        rng, width=int(rng.integers(1, 12)), height=int(rng.integers(1, 12)), extreme=seed >= 6
    )
    fields = parse_stream(write_stream(codec))
    for level, ((lo, hi, _), substream) in enumerate(
        zip(fields["grids"], fields["substreams"], strict=True)
    ):
        if lo == hi:
            assert substream == b""
            continue
        assert np.array_equal(
            rans_decode_grid(codec, level, substream, lo, hi), codec.latents[level]
        )


# ---------------------------------------------------------------------------
# Validation


def _replace(codec: IntegerCodec, **changes) -> IntegerCodec:
    return dataclasses.replace(codec, **changes)


def _arm(text: str):
    return lambda c: _replace(c, arm_layers=parse_layers(text))


def _syn(text: str):
    return lambda c: _replace(c, syn_layers=parse_layers(text))


def _oversized_syn_weight(c: IntegerCodec) -> IntegerCodec:
    w, b = c.syn_weights[0]
    return _replace(c, syn_weights=[(w * 0 + 32768, b)] + c.syn_weights[1:])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: _replace(c, color_format=4), "color_format"),
        (lambda c: _replace(c, bit_depth=7), "bit_depth"),
        (lambda c: _replace(c, bit_depth=17), "bit_depth"),
        (lambda c: _replace(c, width=0), "width"),
        (lambda c: _replace(c, n_ctx_rowcol=4), "n_ctx_rowcol"),
        (lambda c: _replace(c, ups_taps=np.arange(9)), "upsampling taps"),
        (lambda c: _replace(c, ups_taps=np.array([1.5, 2.0])), "not an integer"),
        (lambda c: _replace(c, arm_w_shift=17), "arm_w_shift"),
        (lambda c: _replace(c, arm_b_shift=17), "arm_b_shift"),  # > 8 + arm_w_shift
        (lambda c: _replace(c, syn_b_shift=20), "syn_b_shift"),  # > 12 + syn_w_shift
        (lambda c: _replace(c, ups_shift=-1), "ups_shift"),
        (lambda c: _replace(c, latents=c.latents[:1]), "synthesis layer 0 weights"),
        (lambda c: _replace(c, latents=[c.latents[0][:, :4], c.latents[1]]), "grid 0 latents"),
        (lambda c: _replace(c, latents=[c.latents[0] + 40000, c.latents[1]]), "exceed"),
        (_arm("3-1-linear-relu,3-1-linear-none"), "2 outputs"),
        (_arm("3-3-linear-relu,2-1-linear-none"), "kernel"),
        (_arm("3-1-residual-relu,2-1-linear-none"), "residual"),
        (_arm("65-1-linear-relu,2-1-linear-none"), "out_channels"),
        (_arm(",".join(["2-1-linear-none"] * 6)), "layers"),
        (_syn("3-2-linear-none"), "kernel"),
        (_syn("1-1-linear-none"), "3 outputs"),
        (_syn("64-7-linear-none,64-3-linear-none,3-1-linear-none"), "MAC"),
        (lambda c: _replace(c, arm_weights=c.arm_weights[:1]), "pairs"),
        (_oversized_syn_weight, "exceed"),
    ],
)
def test_validation_errors(mutate, message: str) -> None:
    codec = mutate(hand_made_codec())
    with pytest.raises(ValueError, match=message):
        write_stream(codec)


def test_validation_limits_mac_arm_and_size() -> None:
    codec = hand_made_codec()
    validate_codec(codec)
    big_arm = parse_layers("64-1-linear-relu,64-1-linear-relu,64-1-linear-relu,2-1-linear-none")
    weights = [(np.zeros((64, 4), int), np.zeros(64, int))]
    weights += [(np.zeros((64, 64), int), np.zeros(64, int))] * 2
    weights += [(np.zeros((2, 64), int), np.zeros(2, int))]
    with pytest.raises(ValueError, match="ARM needs"):
        write_stream(_replace(codec, arm_layers=big_arm, arm_weights=weights))
    with pytest.raises(ValueError, match="exceeds"):
        validate_codec(_replace(codec, width=8192, height=4096))


def test_writer_does_not_import_torch() -> None:
    """Streams can be written where torch is not installed."""
    code = (
        "import sys; import coolchic_ref.encoder.bitstream, coolchic_ref.encoder.integer_model, "
        "coolchic_ref.encoder.random_codec; sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
