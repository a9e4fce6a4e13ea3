"""Encoder side of bitstream version 2 (spec/bitstream-v2.md): the cross-grid ARM context.

- the v1 writer is unchanged: generator-made conformance streams rebuild byte for byte,
  and a v1 random codec draws the same numbers as before v2;
- the v2 header is parsed here independently, from the tables of v2 3.2;
- the integer model's cross-grid rows and ARM outputs against a literal transcription
  of v2 5.2a (odd picture sizes, constant grids, int16 extremes), and every substream
  decodes back, coarsest grid first, with contexts built literally;
- the float model's contexts against the integer model's (same column order);
- presets, `EncoderConfig`, the CLI options and a tiny end-to-end v2 encode. Its
  closed-loop check with the reference decoder runs only once the decoder reads v2
  (`coolchic_ref.syntax.SYNTAX` has key 2); it is skipped before.
"""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
from test_bitstream_writer import BitReader, decode_egk
from test_integer_model import literal_arm_outputs, literal_spatial_context

from coolchic_ref.encoder import format as fmt
from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import (
    IntegerCodec,
    parse_layers,
    validate_codec,
    wavefront_order,
    write_stream,
)
from coolchic_ref.encoder.random_codec import random_codec

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "conformance"


def decoder_reads_v2() -> bool:
    import coolchic_ref.syntax as syntax

    return 2 in getattr(syntax, "SYNTAX", {})


# ---------------------------------------------------------------------------
# An independent reading of a v2 stream (v2 3.2, v1 3.2 / 4.1-4.3)


def parse_v2(data: bytes) -> dict:
    """Header, weights and substreams of a version-2 stream, read by the v2 tables."""
    h: dict = {"magic": data[0:4], "version": data[4], "color_format": data[5]}
    h["bit_depth"] = data[6]
    (h["width"],) = struct.unpack_from("<H", data, 7)
    (h["height"],) = struct.unpack_from("<H", data, 9)
    n, r, t, a, s = data[11], data[12], data[13], data[14], data[15]
    h.update(n_grids=n, n_ctx_rowcol=r, ups_half_taps=t, n_arm_layers=a, n_syn_layers=s)
    h["cross_grids"] = data[16]
    h["arm"] = [tuple(data[17 + 3 * l : 20 + 3 * l]) for l in range(a)]  # noqa: E741
    h["syn"] = [tuple(data[17 + 3 * a + 4 * l : 21 + 3 * a + 4 * l]) for l in range(s)]  # noqa: E741
    p = 17 + 3 * a + 4 * s
    names = (
        "arm_w_shift arm_b_shift arm_w_egk arm_b_egk ups_shift ups_egk "
        "syn_w_shift syn_b_shift syn_w_egk syn_b_egk"
    ).split()
    for i, name in enumerate(names):
        h[name] = data[p + i]
    (h["weights_bytes"],) = struct.unpack_from("<I", data, p + 10)
    h["grids"] = [
        (
            struct.unpack_from("<h", data, p + 14 + 8 * g)[0],
            struct.unpack_from("<h", data, p + 16 + 8 * g)[0],
            struct.unpack_from("<I", data, p + 18 + 8 * g)[0],
        )
        for g in range(n)
    ]
    h["header_bytes"] = p + 14 + 8 * n
    assert h["header_bytes"] == 31 + 3 * a + 4 * s + 8 * n

    section = data[h["header_bytes"] : h["header_bytes"] + h["weights_bytes"]]
    bits = BitReader(section)
    arm, c_in = [], 2 * r * (r + 1) + h["cross_grids"]  # v2 3.3: dim_arm + C
    for out, _, _ in h["arm"]:
        w = [[decode_egk(bits, h["arm_w_egk"]) for _ in range(c_in)] for _ in range(out)]
        b = [decode_egk(bits, h["arm_b_egk"]) for _ in range(out)]
        arm.append((w, b))
        c_in = out
    h["arm_weights"] = arm
    h["ups_taps"] = [decode_egk(bits, h["ups_egk"]) for _ in range(t)]
    c_in = n
    syn = []
    for out, kernel, _, _ in h["syn"]:
        count = out * c_in * kernel * kernel
        syn.append(([decode_egk(bits, h["syn_w_egk"]) for _ in range(count)],
                    [decode_egk(bits, h["syn_b_egk"]) for _ in range(out)]))  # fmt: skip
        c_in = out
    h["syn_weights"] = syn
    assert h["weights_bytes"] == (bits.pos + 7) // 8
    assert bits.read(8 * len(section) - bits.pos) == 0
    pos = h["header_bytes"] + h["weights_bytes"]
    h["substreams"] = []
    for _, _, size in h["grids"]:  # grid 0 first (v2 3.1)
        h["substreams"].append(data[pos : pos + size])
        pos += size
    assert pos == len(data)
    return h


# ---------------------------------------------------------------------------
# Literal transcriptions of v2 5.2a and v1 2.3 / 5.3


def literal_input(latents: list[np.ndarray], r: int, c: int, g: int, y: int, x: int) -> list[int]:
    """The ARM input vector of position (y, x) of grid g, Q8 (v1 5.2, 5.3; v2 5.2a)."""
    values = literal_spatial_context(latents[g], r, y, x)
    n = len(latents)
    for k in range(1, c + 1):
        if g + k <= n - 1:
            values.append(int(latents[g + k][y >> k][x >> k]) << 8)
        else:
            values.append(0)
    return values


def small_v2_codec(seed: int = 0, **options) -> IntegerCodec:
    """A 7x5 (W x H) v2 codec with 3 grids and C = 2 unless told otherwise."""
    settings = dict(width=7, height=5, n_grids=3, cross_grids=2, n_ctx_rowcol=1, latent_range=5)
    settings.update(options)
    return random_codec(np.random.default_rng(seed), version=2, **settings)


# ---------------------------------------------------------------------------
# Version 1 is unchanged


def test_format_constants() -> None:
    assert (fmt.VERSION_V1, fmt.VERSION_V2, fmt.DEFAULT_VERSION) == (1, 2, 2)
    assert fmt.MAX_CROSS_GRIDS == 6
    assert fmt.header_bytes(1, 2, 3, 4) == 30 + 6 + 12 + 32
    assert fmt.header_bytes(2, 2, 3, 4) == 31 + 6 + 12 + 32
    assert [fmt.max_cross_grids(2, n) for n in range(1, 8)] == [0, 1, 2, 3, 4, 5, 6]
    assert [fmt.max_cross_grids(1, n) for n in range(1, 8)] == [0] * 7


@pytest.mark.parametrize("seed", range(6))
def test_random_codec_v1_draws_as_before(seed: int) -> None:
    """Version 1 (the default) draws no cross-grid count: the same codec, the same
    generator state after, as with no version argument at all."""
    rng_a, rng_b = np.random.default_rng(seed), np.random.default_rng(seed)
    a = random_codec(rng_a, extreme=seed % 2 == 1, extreme_latents=False)
    b = random_codec(rng_b, extreme=seed % 2 == 1, extreme_latents=False, version=1)
    assert a.version == b.version == 1 and a.cross_grids == b.cross_grids == 0
    assert write_stream(a) == write_stream(b)
    assert rng_a.integers(1 << 62) == rng_b.integers(1 << 62)


def _committed_generator_streams(count: int) -> list[tuple[object, Path]]:
    import tools.make_conformance as tool

    cases, number = [], 1
    for case in tool.ALL_GENERATOR_CASES:
        number = getattr(case, "number", number)
        path = SUITE / "streams" / f"{number:03d}-{case.slug}.cool"
        if path.exists() and len(cases) < count:
            cases.append((case, path))
        number += 1
    return cases


@pytest.mark.parametrize("index", range(8))
def test_v1_generator_streams_rebuild_byte_for_byte(index: int) -> None:
    """The writer of v2 writes the committed v1 conformance streams, unchanged (the full
    check is `python -m tools.make_conformance --check`)."""
    import tools.make_conformance as tool

    streams = _committed_generator_streams(8)
    case, path = streams[index]
    data, codec = tool.case_stream(case)
    assert codec.version == 1 and data[4] == 1
    assert data == path.read_bytes()


def test_v2_with_no_cross_grids_is_v1_plus_one_byte() -> None:
    """A v2 codec with C = 0 writes the v1 stream with version 2 and a 0 byte inserted at
    offset 16 (v2 3.2): the weights and the substreams are the same."""
    for seed in range(4):
        v1 = random_codec(np.random.default_rng(seed))
        v2 = random_codec(np.random.default_rng(seed), version=2, cross_grids=0)
        a, b = write_stream(v1), write_stream(v2)
        assert b == a[:4] + bytes([2]) + a[5:16] + bytes([0]) + a[16:]
        assert write_stream(dataclasses.replace(v2, version=1)) == a


# ---------------------------------------------------------------------------
# Version 2 header, weights and substreams


def test_v2_header_layout_by_independent_parsing() -> None:
    codec = small_v2_codec(seed=4, width=13, height=11, n_grids=4, cross_grids=3, n_ctx_rowcol=2)
    data = write_stream(codec)
    h = parse_v2(data)
    assert h["magic"] == b"CCRF" and h["version"] == 2 and h["cross_grids"] == 3
    assert (h["width"], h["height"], h["n_grids"], h["n_ctx_rowcol"]) == (13, 11, 4, 2)
    assert h["color_format"] == codec.color_format and h["bit_depth"] == codec.bit_depth
    assert h["arm"] == [
        (layer.out_channels, int(layer.kind), fmt.ACTIVATIONS.index(layer.activation))
        for layer in codec.arm_layers
    ]
    assert h["syn"] == [
        (layer.out_channels, layer.kernel, int(layer.kind), fmt.ACTIVATIONS.index(layer.activation))
        for layer in codec.syn_layers
    ]
    for name in ("arm_w_shift", "arm_b_shift", "ups_shift", "syn_w_shift", "syn_b_shift"):
        assert h[name] == getattr(codec, name)
    # The first ARM layer has dim_arm + C = 12 + 3 inputs, spatial ones first (v2 4).
    w0 = np.asarray(codec.arm_weights[0][0])
    assert w0.shape[1] == 15
    for (w, b), (w_read, b_read) in zip(codec.arm_weights, h["arm_weights"], strict=True):
        assert np.asarray(w).tolist() == w_read and np.asarray(b).tolist() == b_read
    assert np.asarray(codec.ups_taps).tolist() == h["ups_taps"]
    for (w, b), (w_read, b_read) in zip(codec.syn_weights, h["syn_weights"], strict=True):
        assert np.asarray(w).reshape(-1).tolist() == w_read and np.asarray(b).tolist() == b_read
    for latent, (lo, hi, size) in zip(codec.latents, h["grids"], strict=True):
        assert (lo, hi) == (int(latent.min()), int(latent.max()))
        assert size % 4 == 0 and (size == 0) == (lo == hi)


def rans_decode_v2(h: dict, codec: IntegerCodec) -> list[np.ndarray]:
    """Every grid of a v2 stream, coarsest first (v2 5.1), with the ARM inputs built
    literally from the latents decoded so far (v2 5.2a) and spec 5.5's rANS decoder."""
    n, r, c = h["n_grids"], h["n_ctx_rowcol"], h["cross_grids"]
    decoded: list[np.ndarray | None] = [None] * n
    for g in range(n - 1, -1, -1):
        lo, hi, _ = h["grids"][g]
        height, width = fmt.grid_shape(h["height"], h["width"], g)
        grid = np.full((height, width), lo, dtype=np.int64)
        decoded[g] = grid
        if lo == hi:
            continue
        alphabet = hi - lo + 1
        words = [int(v) for v in np.frombuffer(h["substreams"][g], dtype="<u4")]
        count, pos, state = len(words), 0, 0
        if count:
            assert words[0] != 0
            state, pos = words[0], 1
            while pos < count and state < 1 << 32:
                state, pos = (state << 32) | words[pos], pos + 1
        grid[:] = 0  # positions not decoded yet must not be read
        # Grids g + 1 .. g + C are complete (coarsest first); finer ones are None.
        view = [v if v is not None else np.zeros((1, 1), np.int64) for v in decoded]
        for index in wavefront_order(height, width, r):
            y, x = divmod(int(index), width)
            values = literal_input(view, r, c, g, y, x)
            mu, log_scale = literal_arm_outputs(codec, values)
            cdf = im.laplace_cdf(mu, log_scale, np.arange(alphabet + 1), lo, alphabet)
            q = state & ((1 << 24) - 1)
            s = int(np.searchsorted(cdf, q, side="right")) - 1
            state = (state >> 24) * int(cdf[s + 1] - cdf[s]) + q - int(cdf[s])
            if state < 1 << 32 and pos < count:
                state, pos = (state << 32) | words[pos], pos + 1
            grid[y, x] = lo + s
        assert pos == count and state == 0
    return decoded  # type: ignore[return-value]


@pytest.mark.parametrize(
    "seed, options",
    [
        (0, {}),
        (1, dict(n_grids=4, cross_grids=3, n_ctx_rowcol=2)),
        (2, dict(width=9, height=3, n_grids=5, cross_grids=4, constant_grids=[1, 3])),
        (3, dict(width=5, height=6, n_grids=3, cross_grids=1, n_ctx_rowcol=3)),
        (4, dict(width=4, height=7, n_grids=7, cross_grids=6, latent_range=3)),
        (5, dict(width=6, height=5, cross_grids=2, extreme=True, extreme_latents=False)),
    ],
)
def test_v2_substreams_decode_coarsest_first(seed: int, options: dict) -> None:
    """The substreams written with the integer model's contexts decode back with a
    decoder written here from v2 5.1 / 5.2a (coarse grids first, literal contexts)."""
    codec = small_v2_codec(seed, **options)
    h = parse_v2(write_stream(codec))
    assert h["cross_grids"] == codec.cross_grids
    for got, want in zip(rans_decode_v2(h, codec), codec.latents, strict=True):
        assert np.array_equal(got, want)


def test_cross_grid_values_change_the_finer_substreams_only() -> None:
    """A coarse grid's latents enter the finer grids' entropy model (C > 0), not its own or
    coarser ones; with C = 0 they enter nothing."""
    codec = small_v2_codec(seed=7, width=12, height=10, n_grids=3, cross_grids=2)
    w, b = codec.arm_weights[0]
    w = np.array(w)
    w[:, -2:] = np.where(w[:, -2:] == 0, 40, w[:, -2:])  # make sure the cross columns count
    codec = dataclasses.replace(codec, arm_weights=[(w, b), *codec.arm_weights[1:]])
    changed = [g.copy() for g in codec.latents]
    changed[2] = np.where(changed[2] == changed[2].max(), changed[2].min(), changed[2].max())
    before = parse_v2(write_stream(codec))["substreams"]
    after = parse_v2(write_stream(dataclasses.replace(codec, latents=changed)))["substreams"]
    assert before[0] != after[0] and before[1] != after[1]

    flat = dataclasses.replace(
        codec,
        cross_grids=0,
        arm_weights=[(w[:, :-2], b), *codec.arm_weights[1:]],
    )
    before = parse_v2(write_stream(flat))["substreams"]
    after = parse_v2(write_stream(dataclasses.replace(flat, latents=changed)))["substreams"]
    assert before[:2] == after[:2]


# ---------------------------------------------------------------------------
# Integer model against v2 5.2a, literally


@pytest.mark.parametrize(
    "seed, options",
    [
        (0, {}),  # the 7x5 picture, 3 grids, C = 2 of the brief
        (1, dict(n_ctx_rowcol=2, cross_grids=1)),
        (2, dict(width=5, height=7, n_grids=4, cross_grids=3, constant_grids=[2])),
        (3, dict(width=9, height=3, n_grids=6, cross_grids=5, n_ctx_rowcol=3)),
        (4, dict(extreme=True)),  # int16-extreme latents and weights: the ARM wraps
    ],
)
def test_cross_rows_and_arm_match_spec_literal(seed: int, options: dict) -> None:
    codec = small_v2_codec(seed, **options)
    r, c = codec.n_ctx_rowcol, codec.cross_grids
    for g, latent in enumerate(codec.latents):
        height, width = latent.shape
        inputs = im.arm_inputs(codec, g)
        assert inputs.shape == (codec.dim_arm + c, height * width)
        cross = im.cross_contexts(codec.latents, g, c)
        assert np.array_equal(cross, inputs[codec.dim_arm :])
        mu, log_scale = im.arm_mu_log_scale(codec, g)
        for y in range(height):
            for x in range(width):
                values = literal_input(codec.latents, r, c, g, y, x)
                assert (inputs[:, y * width + x] << 8).tolist() == values
                assert (int(mu[y, x]), int(log_scale[y, x])) == literal_arm_outputs(codec, values)


def test_cross_rows_read_coarser_grids_at_halved_positions() -> None:
    """Hand-made grids: each value names its grid and position, so each cross-grid value
    shows which latent it was taken from."""
    latents = [
        np.array([[100 * g + 10 * y + x for x in range(w)] for y in range(h)])
        for g, (h, w) in enumerate(fmt.grid_shape(5, 7, g) for g in range(3))
    ]
    rows = im.cross_contexts(latents, 0, 3)  # k = 3 is past the last grid: zeros
    assert rows.shape == (3, 35)
    assert rows[0].reshape(5, 7)[4].tolist() == [120, 120, 121, 121, 122, 122, 123]
    assert rows[1].reshape(5, 7)[:, 6].tolist() == [201, 201, 201, 201, 211]
    assert not rows[2].any()
    band = im.cross_contexts(latents, 0, 2, slice(3, 5))
    assert np.array_equal(band, rows[:2, 21:])
    assert im.cross_contexts(latents, 2, 2).tolist() == [[0] * 4, [0] * 4]


def test_banded_arm_evaluation_equals_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = small_v2_codec(5, width=11, height=9, n_grids=4, cross_grids=3)
    whole = [im.arm_mu_log_scale(codec, g) for g in range(codec.n_grids)]
    monkeypatch.setattr(im, "_BLOCK_ELEMENTS", 1)  # one row at a time
    for g in range(codec.n_grids):
        mu, log_scale = im.arm_mu_log_scale(codec, g)
        assert np.array_equal(mu, whole[g][0]) and np.array_equal(log_scale, whole[g][1])


# ---------------------------------------------------------------------------
# Validation


def _arm_layers(text: str, c_in: int) -> tuple[list, list]:
    layers = parse_layers(text)
    weights = []
    for layer in layers:
        weights.append(
            (np.zeros((layer.out_channels, c_in), int), np.zeros(layer.out_channels, int))
        )
        c_in = layer.out_channels
    return layers, weights


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(version=3), "version"),
        (dict(version=1), "version 1 streams have no cross-grid"),
        (dict(cross_grids=3), "cross_grids"),  # > n_grids - 1 = 2
        (dict(cross_grids=-1), "cross_grids"),
        (dict(cross_grids=1), "ARM layer 0 weights"),  # the weights have 4 + 2 columns
    ],
)
def test_validation_of_v2_fields(changes: dict, message: str) -> None:
    codec = small_v2_codec()
    validate_codec(codec)
    with pytest.raises(ValueError, match=message):
        write_stream(dataclasses.replace(codec, **changes))


def test_validation_cross_grids_at_most_six() -> None:
    codec = small_v2_codec(width=64, height=64, n_grids=7, cross_grids=6, latent_range=2)
    validate_codec(codec)
    layers, weights = _arm_layers("2-1-linear-none", codec.dim_arm + 7)
    with pytest.raises(ValueError, match="cross_grids"):
        validate_codec(
            dataclasses.replace(codec, cross_grids=7, arm_layers=layers, arm_weights=weights)
        )


def test_validation_arm_mac_counts_the_cross_inputs() -> None:
    """24 * 64 + 64 * 64 + 64 * 38 + 38 * 2 = 8140 MAC fit with C = 0; C = 1 adds 64."""
    codec = small_v2_codec(n_ctx_rowcol=3, cross_grids=0)
    text = "64-1-linear-relu,64-1-linear-relu,38-1-linear-relu,2-1-linear-none"
    layers, weights = _arm_layers(text, 24)
    validate_codec(dataclasses.replace(codec, arm_layers=layers, arm_weights=weights))
    layers, weights = _arm_layers(text, 25)
    with pytest.raises(ValueError, match="ARM needs 8204 MAC"):
        validate_codec(
            dataclasses.replace(codec, cross_grids=1, arm_layers=layers, arm_weights=weights)
        )


def test_random_codec_v2_options() -> None:
    for seed in range(20):
        codec = random_codec(np.random.default_rng(seed), version=2)
        assert codec.version == 2
        assert 0 <= codec.cross_grids <= min(6, codec.n_grids - 1)
        assert np.asarray(codec.arm_weights[0][0]).shape[1] == codec.dim_arm + codec.cross_grids
        validate_codec(codec)
    with pytest.raises(ValueError, match="version 1"):
        random_codec(np.random.default_rng(0), cross_grids=1)


# ---------------------------------------------------------------------------
# Presets and options


def test_operating_points_default_cross_grids() -> None:
    from coolchic_ref.encoder.presets import OPERATING_POINTS, EncoderConfig

    assert all(op.cross_grids == 3 for op in OPERATING_POINTS.values())
    arch = EncoderConfig(op="1000").resolve_architecture(3)
    assert (arch.version, arch.cross_grids, arch.dim_arm, arch.arm_inputs) == (2, 3, 12, 15)
    assert "cross_grids=3 v2" in arch.describe()
    assert EncoderConfig(op="1000", n_grids=3).resolve_architecture(3).cross_grids == 2
    assert EncoderConfig(op="1000", n_grids=1).resolve_architecture(3).cross_grids == 0
    assert EncoderConfig(op="1000", cross_grids=5).resolve_architecture(3).cross_grids == 5
    v1 = EncoderConfig(op="1000", version=1).resolve_architecture(3)
    assert (v1.version, v1.cross_grids) == (1, 0) and "v1" not in v1.describe()
    with pytest.raises(ValueError, match="version 1 has no cross-grid"):
        EncoderConfig(op="1000", version=1, cross_grids=2).resolve_architecture(3)
    with pytest.raises(ValueError, match="0..2 with 3 grids"):
        EncoderConfig(op="1000", n_grids=3, cross_grids=3).resolve_architecture(3)
    with pytest.raises(ValueError, match="version"):
        EncoderConfig(op="1000", version=3).resolve_architecture(3)


def test_mac_per_pixel_counts_the_cross_inputs() -> None:
    from coolchic_ref.encoder.presets import EncoderConfig, mac_per_pixel

    v1 = EncoderConfig(op="500", version=1).resolve_architecture(3)
    v2 = EncoderConfig(op="500").resolve_architecture(3)
    positions = sum(h * w for h, w in (fmt.grid_shape(64, 64, g) for g in range(7)))
    extra = 3 * 12 * positions / (64 * 64)  # C inputs to a first layer of 12 outputs
    diff = mac_per_pixel(v2, 64, 64)["arm"] - mac_per_pixel(v1, 64, 64)["arm"]
    assert diff == pytest.approx(extra)


# ---------------------------------------------------------------------------
# The float model


def test_float_and_integer_contexts_agree() -> None:
    """Same column order: spatial rows, then k = 1..C; and the float ARM, given the codec's
    integer parameters, predicts what the integer ARM does (up to its rounding)."""
    pytest.importorskip("torch")
    from coolchic_ref.encoder.model import CoolChic, arm_contexts
    from coolchic_ref.encoder.quantize import dequantized_model

    for seed, options in (
        (0, {}),
        (1, dict(width=13, height=9, n_grids=5, cross_grids=4, n_ctx_rowcol=2)),
        (2, dict(width=6, height=11, n_grids=4, cross_grids=3, constant_grids=[3])),
    ):
        codec = small_v2_codec(seed, **options)
        model = CoolChic(
            codec.height, codec.width, codec.color_format, codec.arm_layers, codec.syn_layers,
            codec.n_ctx_rowcol, len(codec.ups_taps), codec.n_grids, cross_grids=codec.cross_grids,
        )  # fmt: skip
        twin = dequantized_model(model, codec)
        latents = [p.detach() for p in twin.latents]
        ctx = arm_contexts(latents, codec.n_ctx_rowcol, codec.cross_grids)
        ints = np.concatenate([im.arm_inputs(codec, g) for g in range(codec.n_grids)], axis=1)
        assert np.array_equal(ctx.numpy(), ints)
        mu, log_scale = twin.arm(ctx)
        mu_int = np.concatenate([im.arm_mu_log_scale(codec, g)[0].reshape(-1)
                                 for g in range(codec.n_grids)]) / 256.0  # fmt: skip
        tolerance = 0.05 * max(1.0, float(np.abs(mu_int).max()))
        assert np.abs(mu.detach().numpy() - mu_int).max() < tolerance


def test_quantization_carries_cross_grids() -> None:
    """The shift searches (exact and fast) and the weight RDOQ quantize a v2 model: the
    first ARM layer keeps dim_arm + C columns, and the exact latent bits are those of the
    written stream."""
    pytest.importorskip("torch")
    import torch

    from coolchic_ref.encoder.presets import EncoderConfig
    from coolchic_ref.encoder.quantize import quantize_model
    from coolchic_ref.encoder.train import build_model

    arch = EncoderConfig(op="500", n_grids=4).resolve_architecture(1)
    assert arch.cross_grids == 3
    model = build_model(arch, 12, 10, 0)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.latents:
            p.copy_(torch.randn_like(p) * 3)
        for w in model.arm.weights:
            w.copy_(torch.randn_like(w) * 0.2)
    target = [np.random.default_rng(0).integers(0, 256, size=(12, 10))]
    for search, rdoq in (("fast", False), ("exact", True)):
        codec, report = quantize_model(model, arch, target, 8, 1e-3, search=search, rdoq=rdoq)
        assert (codec.version, codec.cross_grids) == (2, 3)
        assert np.asarray(codec.arm_weights[0][0]).shape == (12, 12 + 3)
        assert report.latent_bits == pytest.approx(im.latent_bits(codec))
        data = write_stream(codec)
        assert data[4] == 2 and data[16] == 3
        payload = sum(size for _, _, size in parse_v2(data)["grids"])
        assert 8 * payload >= report.latent_bits


# ---------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def tiny_v2_encode():
    pytest.importorskip("torch")
    from coolchic_ref.encoder.api import encode

    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:16, 0:16]
    picture = np.clip(128 + 60 * np.cos(x / 3) + 40 * np.sin(y / 4) + rng.normal(0, 3, (16, 16)),
                      0, 255).astype(np.uint8)  # fmt: skip
    return encode(picture, lmbda=2e-3, preset="faster", n_itr=40, op="500", verify=False)


def test_tiny_v2_encode_writes_v2(tiny_v2_encode) -> None:
    result = tiny_v2_encode
    h = parse_v2(result.stream)
    assert h["version"] == 2 and h["n_grids"] == 7 and h["cross_grids"] == 3
    summary = result.summary()
    assert summary["bitstream_version"] == 2 and summary["cross_grids"] == 3
    assert "cross_grids=3 v2" in summary["architecture"]


def test_tiny_v2_encode_closed_loop(tiny_v2_encode) -> None:
    """The reference decoder's samples equal the encoder's prediction."""
    if not decoder_reads_v2():
        pytest.skip("the reference decoder does not read version 2 yet (SYNTAX has no key 2)")
    from coolchic_ref.encoder.api import verify_stream

    verify_stream(tiny_v2_encode.stream, tiny_v2_encode.planes)


def test_cli_options(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import imageio.v3 as iio
    from click.testing import CliRunner

    from coolchic_ref.encoder.cli import encode_command

    def run(*args: object):
        return CliRunner().invoke(encode_command, [str(a) for a in args])

    text = run("--help").output
    assert "--bitstream-version" in text and "--cross-grids" in text
    picture = tmp_path / "p.png"
    iio.imwrite(picture, np.full((8, 8), 100, dtype=np.uint8))
    out = tmp_path / "p.cool"
    result = run(picture, "-o", out, "--bitstream-version", 1, "--cross-grids", 2)
    assert result.exit_code == 2 and "version 1 has no cross-grid" in result.output
    result = run(picture, "-o", out, "--n-grids", 3, "--cross-grids", 3)
    assert result.exit_code == 1 and "cross_grids 3: must be 0..2" in result.output
    result = run(picture, "-o", out, "--cross-grids", 7)
    assert result.exit_code == 2
    assert not out.exists()


def test_cli_encodes_version_1(tmp_path: Path) -> None:
    """`--bitstream-version 1` writes a v1 stream, decoded by the reference decoder (the
    closed-loop check runs inside)."""
    pytest.importorskip("torch")
    import json

    import imageio.v3 as iio
    from click.testing import CliRunner

    from coolchic_ref.encoder.cli import encode_command

    y, x = np.mgrid[0:12, 0:16]
    iio.imwrite(tmp_path / "p.png", (120 + 50 * np.cos(x / 3 + y / 5)).astype(np.uint8))
    out, js = tmp_path / "p.cool", tmp_path / "p.json"
    result = CliRunner().invoke(
        encode_command,
        [str(tmp_path / "p.png"), "-o", str(out), "--preset", "instant", "--n-itr", "20",
         "--op", "500", "--bitstream-version", "1", "--json", str(js)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "bitstream v1" in result.output
    data = out.read_bytes()
    assert data[4] == 1
    summary = json.loads(js.read_text())
    assert summary["bitstream_version"] == 1 and summary["cross_grids"] == 0
