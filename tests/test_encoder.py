"""The Torch encoder: input formats, closed loop with the reference decoder, RD sanity,
float / integer agreement, the model's fidelity to the spec, bad inputs and the CLI.

Pictures are tiny (32x24 and a 64x64 Kodak crop) and trainings short, so that the
whole file runs in about two minutes on 2 CPU cores.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("constriction")

from click.testing import CliRunner  # noqa: E402

import coolchic_ref  # noqa: E402
from coolchic_ref.encoder import api  # noqa: E402
from coolchic_ref.encoder import integer_model as im  # noqa: E402
from coolchic_ref.encoder.api import encode  # noqa: E402
from coolchic_ref.encoder.bitstream import parse_layers  # noqa: E402
from coolchic_ref.encoder.cli import encode_command  # noqa: E402
from coolchic_ref.encoder.image_io import InputError, picture_from_array, read_picture  # noqa: E402
from coolchic_ref.encoder.model import (  # noqa: E402
    CoolChic,
    Upsampling,
    arm_contexts,
    laplace_bits,
)
from coolchic_ref.encoder.presets import (  # noqa: E402
    AUTO_DEFAULT_OP,
    AUTO_OP,
    AUTO_OPS,
    OPERATING_POINTS,
    EncoderConfig,
    auto_operating_point,
    mac_per_pixel,
)
from coolchic_ref.encoder.random_codec import random_codec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"
SAMPLE = ROOT / "tools" / "sample" / "kodim23-crop256.png"

# Small and quick: every encode of this file uses these unless it says otherwise.
QUICK = dict(preset="faster", n_itr=60, op="500")


def kodak_crop(size: int) -> np.ndarray:
    """A size x size crop of a real photograph (uint8 RGB)."""
    import imageio.v3 as iio

    path = SAMPLE if SAMPLE.exists() else KODAK
    image = iio.imread(path)
    y0 = (image.shape[0] - size) // 2
    x0 = (image.shape[1] - size) // 2
    return np.ascontiguousarray(image[y0 : y0 + size, x0 : x0 + size, :3])


def smooth_planes(n: int, height: int, width: int, maxval: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random planes (a few cosines plus a little noise) in 0..maxval."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    planes = []
    for _ in range(n):
        v = 0.5 + 0.2 * np.cos(x / rng.uniform(2, 6) + rng.uniform(0, 6))
        v += 0.2 * np.cos(y / rng.uniform(2, 6) + rng.uniform(0, 6))
        v += rng.normal(0, 0.02, size=v.shape)
        planes.append(np.clip(np.rint(v * maxval), 0, maxval).astype(np.int64))
    return planes


# ----------------------------------------------------------------------------- files


def png_bytes(array: np.ndarray, filters: tuple[int, ...] = (0,)) -> bytes:
    """A non-interlaced PNG of a (H, W) or (H, W, C) uint8 / uint16 array, written here
    (independently of Pillow) with the given row filters, cycled over the rows."""
    a = array if array.ndim == 3 else array[..., None]
    height, width, channels = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = a.astype(">u2" if depth == 16 else np.uint8).reshape(height, -1).view(np.uint8)
    bpp = channels * depth // 8
    raw = bytearray()
    prior = np.zeros(rows.shape[1], dtype=np.int64)
    for y in range(height):
        row = rows[y].astype(np.int64)
        f = filters[y % len(filters)]
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        if f == 0:
            out = row
        elif f == 1:
            out = row - left
        elif f == 2:
            out = row - prior
        elif f == 3:
            out = row - (left + prior) // 2
        else:
            p = left + prior - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prior), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
            out = row - pred
        raw += bytes([f]) + bytes((out & 0xFF).astype(np.uint8))
        prior = row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def yuv_bytes(planes: list[np.ndarray], bits: int) -> bytes:
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    return b"".join(np.asarray(p).astype(dtype).tobytes() for p in planes)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[np.ndarray]]]:
    """One file per input format, with the planes it must read back as."""
    d = tmp_path_factory.mktemp("inputs")
    h, w = 24, 32
    out: dict[str, tuple[Path, list[np.ndarray]]] = {}

    rgb8 = np.stack(smooth_planes(3, h, w, 255, seed=1), axis=-1).astype(np.uint8)
    (d / "rgb8.png").write_bytes(png_bytes(rgb8))
    out["png-rgb-8"] = (d / "rgb8.png", [rgb8[..., c] for c in range(3)])

    rgb16 = np.stack(smooth_planes(3, h, w, 65535, seed=2), axis=-1).astype(np.uint16)
    (d / "rgb16.png").write_bytes(png_bytes(rgb16, filters=(0, 1, 2, 3, 4)))
    out["png-rgb-16"] = (d / "rgb16.png", [rgb16[..., c] for c in range(3)])

    grey8 = smooth_planes(1, h, w, 255, seed=3)[0].astype(np.uint8)
    (d / "grey8.png").write_bytes(png_bytes(grey8, filters=(4, 3, 1)))
    out["png-grey-8"] = (d / "grey8.png", [grey8])

    grey16 = smooth_planes(1, h, w, 65535, seed=4)[0].astype(np.uint16)
    (d / "grey16.png").write_bytes(png_bytes(grey16, filters=(2, 4)))
    out["png-grey-16"] = (d / "grey16.png", [grey16])

    # 4:2:0 with odd sizes: chroma planes of ceil(W/2) x ceil(H/2).
    hy, wy = 23, 31
    for bits in (8, 10):
        maxval = (1 << bits) - 1
        y_plane = smooth_planes(1, hy, wy, maxval, seed=5)[0]
        u, v = smooth_planes(2, 12, 16, maxval, seed=6)
        path = d / f"clip_{wy}x{hy}_25p_yuv420_{bits}b.yuv"
        # Two frames: only the first is encoded.
        path.write_bytes(yuv_bytes([y_plane, u, v], bits) * 2)
        out[f"yuv420-{bits}"] = (path, [y_plane, u, v])

    planes = smooth_planes(3, h, w, 255, seed=7)
    path = d / f"clip_{w}x{h}_30p_yuv444_8b.yuv"
    path.write_bytes(yuv_bytes(planes, 8))
    out["yuv444-8"] = (path, planes)
    return out


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(
    "name", ["png-rgb-8", "png-rgb-16", "png-grey-8", "png-grey-16", "yuv420-8", "yuv420-10",
             "yuv444-8"],
)  # fmt: skip
def test_every_format_round_trips_bit_exactly(inputs, name: str) -> None:
    path, planes = inputs[name]
    picture = read_picture(path)
    assert [p.tolist() for p in picture.planes] == [p.tolist() for p in planes]

    result = encode(path, lmbda=1e-3, **QUICK)  # the closed-loop check runs inside
    decoded = coolchic_ref.decode(result.stream)
    assert len(decoded.planes) == len(planes)
    for got, want, original in zip(decoded.planes, result.planes, planes, strict=True):
        assert np.array_equal(np.asarray(got), want)  # decoder == encoder's prediction
        assert got.shape == original.shape
    assert decoded.bit_depth == picture.bit_depth
    assert int(decoded.color_format) == picture.color_format
    assert result.bpp == pytest.approx(8 * len(result.stream) / (picture.width * picture.height))
    assert result.psnr > 20  # it did learn the picture (smooth content)
    assert result.psnr == pytest.approx(
        10 * np.log10(1 / api.planes_mse(result.planes, planes, picture.bit_depth))
    )


@pytest.fixture(scope="module")
def crop_results() -> dict[str, api.EncodeResult]:
    """A 32x32 Kodak crop encoded at a low and a high lambda (same seed)."""
    crop = kodak_crop(32)
    return {
        "low": encode(crop, lmbda=2e-4, seed=3, **QUICK),
        "high": encode(crop, lmbda=2e-2, seed=3, **QUICK),
    }


def test_larger_lambda_gives_smaller_stream(crop_results) -> None:
    low, high = crop_results["low"], crop_results["high"]
    assert len(high.stream) < len(low.stream)
    assert high.psnr < low.psnr


def test_same_seed_same_stream(crop_results) -> None:
    again = encode(kodak_crop(32), lmbda=2e-2, seed=3, **QUICK)
    assert again.stream == crop_results["high"].stream


def test_closed_loop_detects_a_wrong_prediction(crop_results) -> None:
    result = crop_results["low"]
    api.verify_stream(result.stream, result.planes)
    wrong = [p.copy() for p in result.planes]
    wrong[1][3, 5] ^= 1
    with pytest.raises(api.ClosedLoopError, match="plane 1 differs at 1 samples"):
        api.verify_stream(result.stream, wrong)


def test_result_statistics(crop_results) -> None:
    result = crop_results["low"]
    summary = result.summary()
    for key in ("bpp", "psnr_db", "mac_per_pixel", "seconds", "bytes", "shifts"):
        assert key in summary
    json.dumps(summary, default=float)
    header = coolchic_ref.syntax.parse_header(result.stream)
    from coolchic_ref.info import mac_per_pixel as decoder_mac

    assert result.mac_per_pixel == pytest.approx(decoder_mac(header)["total"])


def test_integer_decoding_matches_float_model_on_real_crop() -> None:
    """The spec's fixed-point decoding loses < 0.05 dB against the float model that has
    the same (quantized) parameters. (What weight quantization costs is an RD choice of
    the shift search, reported as `psnr_float`, not a property of the spec.)"""
    result = encode(kodak_crop(64), lmbda=2e-3, preset="faster", n_itr=200, op="1000", seed=1)
    assert result.psnr > 26
    assert abs(result.psnr_float_quantized - result.psnr) < 0.05


# ----------------------------------------------------------------------------- the model


def test_model_stages_mirror_the_integer_spec() -> None:
    """Upsampling, ARM contexts and synthesis of the float model against the encoder's
    integer simulation, on the same integer parameters (differences: rounding only)."""
    rng = np.random.default_rng(0)
    codec = random_codec(rng, width=19, height=13, n_grids=4, color_format=1, n_ctx_rowcol=2)
    model = CoolChic(13, 19, 1, codec.arm_layers, codec.syn_layers, 2, len(codec.ups_taps), 4)
    twin = api.dequantized_model(model, codec)
    latents = [p.detach() for p in twin.latents]

    dense = twin.upsampling(latents, twin.sizes).detach().numpy()
    dense_int = im.upsample_dense(codec) / 4096.0
    scale = max(1.0, float(np.abs(dense_int).max()))
    assert np.abs(dense - dense_int).max() < 1e-3 * scale * 10

    ctx = arm_contexts(latents, 2).numpy()
    ctx_int = np.concatenate([im.arm_contexts(v, 2) for v in codec.latents], axis=1)
    assert np.array_equal(ctx, ctx_int)

    out = twin.synthesis(torch.as_tensor(dense_int, dtype=torch.float32)).detach().numpy()
    out_int = im.synthesis_output(codec, im.upsample_dense(codec)) / 4096.0
    assert np.abs(out - out_int).max() < 2e-2 * max(1.0, float(np.abs(out_int).max()))


def test_upsampling_taps_are_folded_as_the_spec_says() -> None:
    """A single non-zero tap k must read the input at the spec's offset m(k, parity)."""
    line = torch.arange(10, dtype=torch.float32) ** 2
    for k in range(6):
        ups = Upsampling(6)
        with torch.no_grad():
            ups.taps.zero_()
            ups.taps[k] = 1.0
        out = ups(
            [torch.zeros(1, 20), line.view(1, 10)], [(1, 20), (1, 10)]
        )[1, 0]  # fmt: skip
        want = im.upsample_pass(
            line.numpy().astype(np.int64).reshape(1, 10),
            np.eye(6, dtype=np.int64)[k], 0, 20, axis=1,
        )[0]  # fmt: skip
        assert out.tolist() == [float(v) for v in want]


def test_laplace_bits_match_the_integer_table() -> None:
    # Scales up to e^3: above e^5.5 the spec's Q8 t = |b - mu| / scale no longer
    # separates neighbouring bin edges and the integer table departs from the Laplace.
    mu = torch.tensor([0.0, 0.3, -2.2, 5.0, 0.0, 1.7])
    log_scale = torch.tensor([0.0, -1.0, 1.5, 0.5, 3.0, -3.0])
    value = torch.tensor([0.0, 1.0, -4.0, 5.0, 30.0, 2.0])
    bits = laplace_bits(value, mu, log_scale).numpy()
    freq = im.symbol_frequencies(
        np.rint(mu.numpy() * 256).astype(np.int64),
        np.rint(log_scale.numpy() * 256).astype(np.int64),
        value.numpy().astype(np.int64) + 100,
        -100,
        201,
    )
    exact = 24 - np.log2(freq)
    # The float model ignores the renormalisation to the alphabet and the integer rounding.
    assert np.allclose(bits, exact, rtol=0.01, atol=0.02)


def test_operating_points_have_the_advertised_complexity() -> None:
    for name, target in (("500", 500), ("1000", 1000), ("2000", 2000), ("3000", 3000)):
        arch = EncoderConfig(op=name).resolve_architecture(3)
        total = mac_per_pixel(arch, 512, 768)["total"]
        assert 0.75 * target <= total <= 1.25 * target, (name, total)
    assert set(OPERATING_POINTS) == {"500", "1000", "2000", "3000"}


def test_auto_operating_point_follows_lambda() -> None:
    """`--op auto` (the default) takes smaller networks as lambda grows."""
    assert EncoderConfig().op == AUTO_OP
    thresholds = [min_lmbda for min_lmbda, _ in AUTO_OPS]
    assert thresholds == sorted(thresholds, reverse=True), "largest lambda first"
    macs = [
        mac_per_pixel(EncoderConfig(op=op).resolve_architecture(3), 512, 768)["total"]
        for op in [op for _, op in AUTO_OPS] + [AUTO_DEFAULT_OP]
    ]
    assert macs == sorted(macs), "smaller networks at larger lambdas"
    # At each threshold its op, just below it the next smaller lambda's op.
    next_ops = [op for _, op in AUTO_OPS[1:]] + [AUTO_DEFAULT_OP]
    cases = [(1.0, AUTO_OPS[0][1]), (AUTO_OPS[-1][0] / 2, AUTO_DEFAULT_OP)]
    for (min_lmbda, op), next_op in zip(AUTO_OPS, next_ops, strict=True):
        cases += [(min_lmbda, op), (min_lmbda * 0.99, next_op)]
    for lmbda, name in cases:
        assert EncoderConfig(lmbda=lmbda).resolve_op() == name, lmbda
        auto = EncoderConfig(lmbda=lmbda).resolve_architecture(3)
        assert auto == EncoderConfig(lmbda=lmbda, op=name).resolve_architecture(3)
    # An explicit operating point is kept at every lambda.
    assert EncoderConfig(lmbda=0.02, op="2000").resolve_op() == "2000"


def test_auto_operating_point_reads_small_pictures_at_a_larger_lambda() -> None:
    """The weights cost per pixel grows as the picture shrinks: a 256x256 picture (6 times
    fewer pixels than 768x512) reads the thresholds at 6 x lambda."""
    from coolchic_ref.encoder.presets import AUTO_REFERENCE_PIXELS, auto_lambda

    crop = 256 * 256
    assert auto_lambda(1e-3, crop) == pytest.approx(6e-3)
    assert EncoderConfig(lmbda=1e-3).resolve_op(crop) == "1000"
    assert EncoderConfig(lmbda=4e-3).resolve_op(crop) == "500"
    assert EncoderConfig(lmbda=2e-4).resolve_op(crop) == "2000"
    # Pictures of the reference size or larger keep the rule as measured on them.
    for pixels in (None, AUTO_REFERENCE_PIXELS, 3840 * 2160):
        for lmbda in (2e-4, 1e-3, 4e-3, 2e-2):
            assert EncoderConfig(lmbda=lmbda).resolve_op(pixels) == auto_operating_point(lmbda)
    arch = EncoderConfig(lmbda=1e-3).resolve_architecture(3, crop)
    assert arch == EncoderConfig(lmbda=1e-3, op="1000").resolve_architecture(3)
    # An explicit operating point is not moved.
    assert EncoderConfig(lmbda=4e-3, op="2000").resolve_op(crop) == "2000"


def test_architecture_options() -> None:
    arch = EncoderConfig(
        layers_arm="8,2", layers_synthesis="12-1-linear-relu,X-1-linear-none,X-3-residual-none",
        n_ctx_rowcol=1, upsampling_kernel_size=4, n_grids=3,
    ).resolve_architecture(1)  # fmt: skip
    assert [layer.describe() for layer in arch.arm_layers] == [
        "8-1-linear-relu", "8-1-linear-relu", "2-1-linear-none",
    ]  # fmt: skip
    assert arch.syn_layers == parse_layers("12-1-linear-relu,1-1-linear-none,1-3-residual-none")
    assert (arch.n_ctx_rowcol, arch.ups_half_taps, arch.n_grids) == (1, 2, 3)
    for bad in (
        dict(upsampling_kernel_size=5),
        dict(layers_synthesis="12-1-linear-relu,4-1-linear-none"),  # last layer width
        dict(layers_arm="8-1-linear-relu,3-1-linear-none"),
        dict(layers_arm="8-3-linear-relu,2-1-linear-none"),  # ARM kernel
        dict(layers_synthesis="64-7-linear-relu,X-1-linear-none"),  # MAC limit
        dict(op="1500"),
    ):
        with pytest.raises(ValueError):
            EncoderConfig(**bad).resolve_architecture(3)


# ----------------------------------------------------------------------------- bad inputs


def test_bad_inputs_raise_input_error(tmp_path: Path, inputs) -> None:
    cases: list[tuple[Path, str]] = []
    cases.append((tmp_path / "missing.png", "no such file"))
    (tmp_path / "empty.png").write_bytes(b"")
    cases.append((tmp_path / "empty.png", "empty file"))
    (tmp_path / "text.png").write_bytes(b"hello, not an image")
    cases.append((tmp_path / "text.png", "not a PNG"))
    truncated = inputs["png-rgb-16"][0].read_bytes()[:60]
    (tmp_path / "truncated.png").write_bytes(truncated)
    cases.append((tmp_path / "truncated.png", "truncated"))
    (tmp_path / "noname.yuv").write_bytes(b"\0" * 100)
    cases.append((tmp_path / "noname.yuv", "must be named"))
    (tmp_path / "a_8x8_1p_yuv420_8b.yuv").write_bytes(b"\0" * 95)
    cases.append((tmp_path / "a_8x8_1p_yuv420_8b.yuv", "size mismatch"))
    (tmp_path / "a_0x8_1p_yuv444_8b.yuv").write_bytes(b"\0" * 10)
    cases.append((tmp_path / "a_0x8_1p_yuv444_8b.yuv", "empty image"))
    (tmp_path / "a_4x4_1p_yuv444_10b.yuv").write_bytes(b"\xff\xff" * 48)
    cases.append((tmp_path / "a_4x4_1p_yuv444_10b.yuv", "exceeds 10 bits"))
    cases.append((tmp_path, "directory"))
    # Larger than the spec allows (16384 per side): refused before any training.
    (tmp_path / "wide.png").write_bytes(png_bytes(np.zeros((1, 16385), np.uint8)))
    cases.append((tmp_path / "wide.png", "too large"))
    (tmp_path / "big_16385x1_1p_yuv444_8b.yuv").write_bytes(b"\0" * 3 * 16385)
    cases.append((tmp_path / "big_16385x1_1p_yuv444_8b.yuv", "too large"))
    for path, message in cases:
        with pytest.raises(InputError, match=message) as info:
            read_picture(path)
        assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="empty image"):
        picture_from_array(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(InputError, match="uint8 or uint16"):
        picture_from_array(np.zeros((4, 5), dtype=np.float32))


def test_rgba_drops_alpha_with_a_warning(tmp_path: Path) -> None:
    rgba = np.dstack([kodak_crop(16), np.full((16, 16), 200, np.uint8)])
    path = tmp_path / "rgba.png"
    path.write_bytes(png_bytes(rgba))
    picture = read_picture(path)
    assert picture.color_format == 1 and len(picture.planes) == 3
    assert any("alpha" in w for w in picture.warnings)


# ----------------------------------------------------------------------------- CLI


def run_cli(args: list[object]):
    return CliRunner().invoke(encode_command, [str(a) for a in args])


def test_cli_encodes_and_writes_json(tmp_path: Path, inputs) -> None:
    path, planes = inputs["png-rgb-8"]
    out, js = tmp_path / "x.cool", tmp_path / "x.json"
    result = run_cli([path, "-o", out, "--preset", "instant", "--n_itr", 30, "--op", 500,
                      "--json", js, "--seed", 2])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "bpp" in result.output and "PSNR" in result.output
    data = out.read_bytes()
    summary = json.loads(js.read_text())
    assert summary["bytes"] == len(data)
    for key in ("bpp", "psnr_db", "mac_per_pixel", "seconds"):
        assert key in summary
    # The evaluation log ends at the last iteration, and the kept model is the best one
    # evaluated in the last stage.
    evaluations = summary["train_evaluations"]
    assert [e["itr"] for e in evaluations] == sorted(e["itr"] for e in evaluations)
    assert evaluations[-1]["itr"] == summary["iterations"]
    last_stage = [e["loss"] for e in evaluations if e["stage"] == evaluations[-1]["stage"]]
    assert summary["train_loss"] == pytest.approx(min(last_stage), rel=1e-6)
    decoded = coolchic_ref.decode(data)
    assert decoded.planes[0].shape == planes[0].shape
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{missing}", "-o", "{out}"], "no such file"),
        (["{bad_yuv}", "-o", "{out}"], "must be named"),
        (["{png}", "-o", "{out}", "--n_ft_per_res", "2"], "one feature map per grid"),
        (["{png}", "-o", "{out}", "--layers_synthesis", "8-1-linear-relu,5-1-linear-none"],
         "last synthesis layer"),
        (["{png}", "-o", "{out}", "--layers_arm", "8-1-banana-relu"], "type must be"),
        (["{png}", "-o", "{out}", "--upsampling_kernel_size", "3"], "must be even"),
        (["{png}", "-o", "{out}", "--resume"], "--resume needs --workdir"),
        (["{png}", "-o", "{tmp}/no/such/dir/x.cool"], "does not exist"),
        (["{png}", "-o", "{tmp}"], "is a directory"),
        (["{png}", "-o", "{png}/x.cool"], "does not exist"),
        (["{png}", "-o", "{out}", "--lmbda", "-1"], "must be positive"),
        (["{png}", "-o", "{out}", "--device", "cuda"], None),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(tmp_path: Path, inputs, args: list[str], message) -> None:
    if "--device" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "bad.yuv").write_bytes(b"\0" * 10)
    names = dict(
        missing=tmp_path / "missing.png", out=tmp_path / "o.cool", png=inputs["png-grey-8"][0],
        bad_yuv=tmp_path / "bad.yuv", tmp=tmp_path,
    )  # fmt: skip
    result = run_cli([a.format(**names) for a in args])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len([line for line in lines if "rror" in line]) == 1, result.output
    assert "Traceback" not in result.output
    if message:
        assert message in result.output
    assert not (tmp_path / "o.cool").exists()


def test_cli_interrupt_leaves_no_output_and_resume_finishes(
    tmp_path: Path, inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C during training: exit 130, one line, no output; --resume then continues
    from the checkpoint and gives the same stream as an uninterrupted encode."""
    from coolchic_ref.encoder import train

    path = inputs["png-grey-8"][0]
    out, work = tmp_path / "x.cool", tmp_path / "work"
    common = [path, "--preset", "faster", "--n_itr", 40, "--op", 500, "--seed", 4]

    original_step = train.Trainer._step

    def interrupted_step(self, *args, **kwargs):
        if self.itr_done == 30:  # after the checkpoint of iteration 20's evaluation
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(train.Trainer, "_step", interrupted_step)
    monkeypatch.setattr("coolchic_ref.encoder.presets.PRESETS", _with_eval_every(10))
    result = run_cli([*common, "-o", out, "--workdir", work])
    assert result.exit_code == 130
    assert "interrupted" in result.output and "--resume" in result.output
    assert not out.exists()
    assert (work / "loop0.ckpt.pt").exists()

    monkeypatch.setattr(train.Trainer, "_step", original_step)
    resumed = run_cli([*common, "-o", out, "--workdir", work, "--resume", "-q"])
    assert resumed.exit_code == 0, resumed.output
    assert out.exists()
    reference_again = run_cli([*common, "-o", tmp_path / "ref2.cool", "-q"])
    assert reference_again.exit_code == 0
    assert out.read_bytes() == (tmp_path / "ref2.cool").read_bytes()


def test_sigint_subprocess_leaves_no_output_then_resume(tmp_path: Path, inputs) -> None:
    """A real Ctrl-C (SIGINT) to `coolchic-ref encode` once a checkpoint exists: exit
    130, one line, no output file, no temporary file; --resume then writes the stream."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = inputs["png-grey-8"][0]
    out, work = tmp_path / "x.cool", tmp_path / "work"
    args = [sys.executable, "-m", "coolchic_ref", "encode", str(path), "-o", str(out),
            "--preset", "faster", "--n_itr", "1500", "--op", "500", "--workdir", str(work),
            "-q"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def default_sigint() -> None:
        # A shell starts background jobs with SIGINT ignored, and Python then keeps
        # ignoring it: the encoder must see a Ctrl-C however the tests were started.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        args, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    try:
        deadline = time.monotonic() + 240
        while not (work / "loop0.ckpt.pt").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "no checkpoint written in 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume" in lines[0], stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming at iteration" in resumed.stderr
    assert coolchic_ref.decode(out.read_bytes()).planes[0].shape == (24, 32)


def test_preset_rejects_a_bad_schedule_when_built() -> None:
    from dataclasses import replace

    from coolchic_ref.encoder.presets import PRESETS

    fast = PRESETS["fast"]
    assert replace(fast, noise="uniform").noise == "uniform"
    for bad, message in (
        (dict(noise="gauss"), "unknown noise"),
        (dict(quant_search="slow"), "unknown quant_search"),
        (dict(noise_param=(0.25,)), "two numbers"),
        (dict(temperature=("hot", 0.1)), "two numbers"),
        (dict(phase2_itr=-1), "negative"),
        (dict(eval_every=0), "at least 1"),
    ):
        with pytest.raises(ValueError, match=message):
            replace(fast, **bad)


def _with_eval_every(every: int) -> dict:
    from dataclasses import replace

    from coolchic_ref.encoder.presets import PRESETS

    return {name: replace(p, eval_every=every) for name, p in PRESETS.items()}


def test_train_experiment_tool_reports_its_kept_model(tmp_path: Path, inputs) -> None:
    path, _ = inputs["png-rgb-8"]
    tool = Path(__file__).resolve().parent.parent / "tools" / "train_experiment.py"
    schedule = '{"phase1_itr": 6, "phase2_itr": 2, "warmup_candidates": 1, "eval_every": 3}'
    out = tmp_path / "runs.jsonl"
    args = [sys.executable, str(tool), "tiny", "--image", str(path), "--crop", "0,0,8,12"]
    done = subprocess.run(
        [*args, "--set", schedule, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["size"] == [8, 12]
    assert [itr for _, itr, _ in record["log"]] == [3, 6, 8]
    # The kept model is the best evaluated in the last stage: phase 2 ends at itr 8.
    assert record["loss_e3"] == pytest.approx(record["log"][-1][2])
    bad = subprocess.run([*args, "--set", '{"banana": 1}'], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown preset field" in bad.stderr
    for wrong, message in (
        ("--preset=banana", "unknown preset"),
        ("--set=[1", "not JSON"),
        ('--set={"noise": "gauss"}', "unknown noise 'gauss'"),
    ):
        bad = subprocess.run([*args, wrong], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    height, width = read_picture(path).planes[0].shape
    for crop, message in ((f"0,0,{height + 1},4", "not inside"), ("0,0,8", "four integers")):
        bad = subprocess.run([*args[:-1], crop], capture_output=True, text=True)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_encode_command_keeps_scipy_out_of_its_closed_loop_check(tmp_path: Path) -> None:
    """Numba's first kernel would import scipy.linalg (0.3-0.4 s) for the decoder of the
    closed-loop check; the command blocks it, the stream is still checked and written."""
    root = Path(__file__).resolve().parent.parent
    stream = tmp_path / "s.cool"
    code = (
        "import sys\n"
        "from coolchic_ref.cli import main\n"
        f"args = ['encode', {str(root / 'tools/sample/kodim23-crop256.png')!r}, '-o', "
        f"{str(stream)!r}, '--preset', 'instant', '--n-itr', '2', '-q']\n"
        "main(args, standalone_mode=False)\n"
        "print('numba' in sys.modules, 'scipy' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[-2:] == ["True", "False"]
    assert coolchic_ref.decode(stream.read_bytes()).width == 256
