"""`coolchic-ref decode` / `info` on valid streams: outputs, file names, statistics."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from click.testing import CliRunner
from handmade import make_stream

import coolchic_ref
from coolchic_ref import cli
from coolchic_ref.info import mac_per_pixel, stream_info, upsampled_samples
from coolchic_ref.output import png_bytes, yuv_file_name
from coolchic_ref.syntax import ColorFormat, parse_header


@pytest.fixture(scope="module")
def streams() -> dict[str, bytes]:
    return {
        "grey8": make_stream(width=9, height=7, color_format=0, bit_depth=8, seed=3),
        "grey16": make_stream(width=9, height=7, color_format=0, bit_depth=16, seed=4),
        "rgb8": make_stream(width=9, height=7, color_format=1, bit_depth=8, seed=5),
        "rgb16": make_stream(width=9, height=7, color_format=1, bit_depth=16, seed=6),
        "rgb10": make_stream(width=9, height=7, color_format=1, bit_depth=10, seed=7),
        "yuv444": make_stream(width=9, height=7, color_format=2, bit_depth=12, seed=8),
        "yuv420": make_stream(width=9, height=7, color_format=3, bit_depth=10, seed=9),
        "yuv420_8": make_stream(width=8, height=6, color_format=3, bit_depth=8, seed=10),
    }


def run(args: list[str]):
    result = CliRunner().invoke(cli.main, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def write(tmp_path: Path, data: bytes, name: str = "s.cool") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def read_png_rgb16(data: bytes) -> np.ndarray:
    """Decode our own 16-bit RGB PNG (filter 0 rows), independently of Pillow."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, b""
    while position < len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack_from(">I", data, position + 8 + length)
        assert crc == zlib.crc32(kind + body)
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, colour, interlace) == (16, 2, 0)
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 6 * width)
    assert not rows[:, 0].any()  # filter type 0
    return rows[:, 1:].copy().view(">u2").reshape(height, width, 3).astype(np.uint16)


# --- decode ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grey8", "grey16", "rgb8"])
def test_png_via_imageio(streams: dict[str, bytes], tmp_path: Path, name: str) -> None:
    stream = write(tmp_path, streams[name])
    out = tmp_path / "out.png"
    result = run(["decode", stream, "-o", out])
    assert result.exit_code == 0, result.output
    image = coolchic_ref.decode(streams[name])
    pixels = iio.imread(out)
    expected = image.planes[0] if len(image.planes) == 1 else np.stack(image.planes, axis=-1)
    assert pixels.dtype == expected.dtype and np.array_equal(pixels, expected)


def test_png_rgb16(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["rgb16"])
    out = tmp_path / "out.png"
    assert run(["decode", stream, "-o", out]).exit_code == 0
    image = coolchic_ref.decode(streams["rgb16"])
    assert np.array_equal(read_png_rgb16(out.read_bytes()), np.stack(image.planes, axis=-1))
    assert png_bytes(image) == out.read_bytes()


@pytest.mark.parametrize("name", ["rgb10", "yuv420", "yuv444"])
def test_png_refused(streams: dict[str, bytes], tmp_path: Path, name: str) -> None:
    stream = write(tmp_path, streams[name])
    result = run(["decode", stream, "-o", tmp_path / "out.png"])
    assert result.exit_code == 1
    assert ".raw" in result.stderr and "\n" not in result.stderr.strip()
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("name", list(["grey8", "rgb16", "yuv420", "yuv444", "rgb10"]))
def test_raw_is_canonical(streams: dict[str, bytes], tmp_path: Path, name: str) -> None:
    stream = write(tmp_path, streams[name])
    out = tmp_path / "out.raw"
    assert run(["decode", stream, "-o", out, "--quiet"]).exit_code == 0
    image = coolchic_ref.decode(streams[name])
    assert out.read_bytes() == image.raw_bytes()
    header = parse_header(streams[name])
    samples = sum(p.size for p in image.planes)
    assert len(image.raw_bytes()) == samples * (1 if header.bit_depth == 8 else 2)


def test_yuv_gets_cool_chic_name(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["yuv420"])
    result = run(["decode", stream, "-o", tmp_path / "out.yuv"])
    assert result.exit_code == 0
    written = tmp_path / "out_9x7_1p_yuv420_10b.yuv"
    assert str(written) in result.output
    assert written.read_bytes() == coolchic_ref.decode(streams["yuv420"]).raw_bytes()
    assert not (tmp_path / "out.yuv").exists()
    # Y 9x7 + U, V 5x4, two bytes each
    assert written.stat().st_size == 2 * (63 + 2 * 20)


def test_yuv444_and_8bit_names(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["yuv444"])
    assert run(["decode", stream, "-o", tmp_path / "a.yuv"]).exit_code == 0
    assert (tmp_path / "a_9x7_1p_yuv444_12b.yuv").exists()
    stream = write(tmp_path, streams["yuv420_8"], "b.cool")
    assert run(["decode", stream, "-o", tmp_path / "b.yuv"]).exit_code == 0
    written = tmp_path / "b_8x6_1p_yuv420_8b.yuv"
    assert written.stat().st_size == 48 + 2 * 12
    assert yuv_file_name("x", 3, 2, ColorFormat.YUV420, 8) == "x_3x2_1p_yuv420_8b.yuv"


def test_yuv_name_with_size_is_kept(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["yuv420"])
    target = tmp_path / "clip_9x7_50p_yuv420_10b.yuv"
    result = run(["decode", stream, "-o", target])
    assert result.exit_code == 0 and target.exists()
    wrong = tmp_path / "clip_1920x1080_50p_yuv420_10b.yuv"
    result = run(["decode", stream, "-o", wrong])
    assert result.exit_code == 1 and "1920x1080" in result.stderr
    assert not wrong.exists()


def test_output_replaces_existing_file(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["grey8"])
    out = tmp_path / "out.raw"
    out.write_bytes(b"old")
    assert run(["decode", stream, "-o", out, "-q"]).exit_code == 0
    assert out.read_bytes() == coolchic_ref.decode(streams["grey8"]).raw_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.raw", "s.cool"]


def test_decode_report_and_quiet(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["rgb8"])
    result = run(["decode", stream, "-o", tmp_path / "o.png"])
    assert result.exit_code == 0
    line = result.output.strip()
    assert line.startswith(f"wrote {tmp_path / 'o.png'}") and "9x7" in line
    assert f"{len(streams['rgb8'])} bytes" in line and "bpp" in line and "decoded in" in line
    assert result.stderr == ""
    result = run(["decode", stream, "-o", tmp_path / "o.png", "--quiet"])
    assert result.exit_code == 0 and result.output == ""
    result = run(["decode", stream, "-o", tmp_path / "o.png", "--timings"])
    for stage in ("header+weights", "latents", "upsampling", "synthesis", "samples"):
        assert stage in result.output


def test_python_api(streams: dict[str, bytes]) -> None:
    timings: dict[str, float] = {}
    image = coolchic_ref.decode(streams["yuv420"], timings=timings)
    assert (image.width, image.height, image.bit_depth) == (9, 7, 10)
    assert image.color_format == ColorFormat.YUV420
    assert [p.shape for p in image.planes] == [(7, 9), (4, 5), (4, 5)]
    assert list(timings) == ["header+weights", "latents", "upsampling", "synthesis", "samples"]
    assert all(t >= 0 for t in timings.values())
    assert len(image.sha256()) == 64
    assert coolchic_ref.decode(memoryview(streams["yuv420"])).sha256() == image.sha256()


# --- info ----------------------------------------------------------------------------------


def test_info_text_and_json(streams: dict[str, bytes], tmp_path: Path) -> None:
    stream = write(tmp_path, streams["yuv420"])
    text = run(["info", stream])
    assert text.exit_code == 0
    assert "4-3-linear-relu,4-1-residual-leakyrelu,3-1-linear-none" in text.output
    assert "2-1-linear-none" in text.output and "9x7 yuv420 10-bit" in text.output
    result = run(["info", stream, "--json"])
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info == json.loads(json.dumps(stream_info(streams["yuv420"])))
    sections = info["sections"]
    assert sections["header"] + sections["weights"] + sum(sections["substreams"]) == len(
        streams["yuv420"]
    )
    assert info["parameters"] == {"arm": 10, "upsampling": 2, "synthesis": 147, "total": 159}
    assert (
        info["architecture"]["synthesis"]
        == "4-3-linear-relu,4-1-residual-leakyrelu,3-1-linear-none"
    )


def test_mac_counts_by_hand(streams: dict[str, bytes]) -> None:
    header = parse_header(streams["rgb8"])  # 9x7, 3 grids 9x7, 5x4, 3x2, T = 2
    # grid 1: vertical 7x5 + horizontal 7x9 = 98; grid 2: 4x3 + 4x5 = 32, then 98.
    assert upsampled_samples(header) == 98 + 32 + 98
    mac = mac_per_pixel(header)
    assert mac["upsampling"] == pytest.approx(2 * 228 / 63)
    assert mac["arm"] == pytest.approx((4 * 2) * (63 + 20 + 6) / 63)  # every grid coded
    assert mac["synthesis"] == 4 * 3 * 9 + 4 * 4 + 4 * 3
    assert mac["total"] == pytest.approx(mac["arm"] + mac["upsampling"] + mac["synthesis"])


def test_mac_skips_constant_grids() -> None:
    header = parse_header(make_stream(width=9, height=7, constant=True))
    assert mac_per_pixel(header)["arm"] == 0


# --- the command group ----------------------------------------------------------------------


def test_help_and_version() -> None:
    result = run(["--help"])
    assert result.exit_code == 0
    for command in ("decode", "info", "encode", "conformance"):
        assert command in result.output
    result = run(["--version"])
    assert result.exit_code == 0 and coolchic_ref.__version__ in result.output
    assert run(["decode", "--help"]).exit_code == 0


def test_unavailable_lazy_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        cli.LAZY_COMMANDS,
        "encode",
        cli.LazyCommand(
            "coolchic_ref.no_such_module:command",
            "Encode.",
            "`coolchic-ref encode` needs the encoder: pip install 'coolchic-ref[encoder]'",
        ),
    )
    result = run(["encode", "image.png", "-o", "x.cool", "--preset", "fast"])
    assert result.exit_code == 1
    assert "pip install 'coolchic-ref[encoder]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_requirement_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        cli.LAZY_COMMANDS,
        "encode",
        cli.LazyCommand("os:path", "Encode.", "needs the encoder", requires=("no_such_pkg_xyz",)),
    )
    result = run(["encode"])
    assert result.exit_code == 1 and "no_such_pkg_xyz missing" in result.stderr


def test_internal_error_is_one_line(
    streams: dict[str, bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    def broken(*args, **kwargs):
        raise IndexError("index 7 is out of bounds")

    monkeypatch.setattr(sys.modules["coolchic_ref.decode"], "decode", broken)
    monkeypatch.delenv("COOLCHIC_REF_DEBUG", raising=False)
    stream = write(tmp_path, streams["grey8"])
    result = run(["decode", stream, "-o", tmp_path / "o.png"])
    assert result.exit_code == 3
    assert result.stderr.startswith("error: internal error: IndexError")
    assert len(result.stderr.strip().splitlines()) == 1
