"""Raw YUV inputs named as Cool-chic documents them:
`<name>_<W>x<H>_<framerate>_<yuv420|yuv444>_<bits>b.yuv`, frame rate `50`, `50p` or `1fps`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coolchic_ref.encoder.cli import encode_command
from coolchic_ref.encoder.format import ColorFormat
from coolchic_ref.encoder.image_io import InputError, parse_yuv_name, read_picture

COLOR_YUV420, COLOR_YUV444 = ColorFormat.YUV420, ColorFormat.YUV444


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("frame_96x64_50_yuv420_8b.yuv", (96, 64, COLOR_YUV420, 8)),
        ("frame_96x64_50p_yuv420_8b.yuv", (96, 64, COLOR_YUV420, 8)),
        ("frame_96x64_1fps_yuv420_10b.yuv", (96, 64, COLOR_YUV420, 10)),
        ("image_7x5_29.97p_yuv444_12b.yuv", (7, 5, COLOR_YUV444, 12)),
        ("a_b_3x2_25fps_yuv444_16b.yuv", (3, 2, COLOR_YUV444, 16)),
    ],
)
def test_framerate_forms(name: str, expected: tuple[int, int, int, int]) -> None:
    assert parse_yuv_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "frame_96x64_yuv420_8b.yuv",  # no frame rate
        "frame_96x64_50f_yuv420_8b.yuv",  # unknown unit
        "frame_96x64_fps_yuv420_8b.yuv",  # unit without a number
        "frame_96x64_50p_yuv422_8b.yuv",  # 4:2:2 is not coded
        "frame_96x64_50p_yuv420.yuv",  # no bit depth
    ],
)
def test_other_names_are_refused(name: str) -> None:
    with pytest.raises(InputError, match="must be named"):
        parse_yuv_name(name)


def yuv420_frame(width: int, height: int, bits: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    n = width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)
    return rng.integers(0, 1 << bits, n).astype(dtype).tobytes()


@pytest.mark.parametrize("rate", ["50", "50p", "1fps"])
def test_first_frame_of_a_multi_frame_file_is_read(tmp_path: Path, rate: str) -> None:
    first, second = yuv420_frame(6, 4, 10, 1), yuv420_frame(6, 4, 10, 2)
    path = tmp_path / f"clip_6x4_{rate}_yuv420_10b.yuv"
    path.write_bytes(first + second)
    picture = read_picture(path)
    assert (picture.width, picture.height, picture.bit_depth) == (6, 4, 10)
    samples = np.concatenate([p.ravel() for p in picture.planes])
    assert samples.astype("<u2").tobytes() == first


@pytest.mark.parametrize("rate", ["50", "1fps"])
def test_a_size_that_does_not_match_the_file_is_refused(tmp_path: Path, rate: str) -> None:
    path = tmp_path / f"clip_8x8_{rate}_yuv420_8b.yuv"
    path.write_bytes(yuv420_frame(6, 4, 8, 1))  # 36 bytes, an 8x8 frame has 96
    with pytest.raises(InputError, match="size mismatch"):
        read_picture(path)


def test_help_names_the_forms_and_the_first_frame() -> None:
    text = " ".join(CliRunner().invoke(encode_command, ["--help"]).output.split())
    assert "<name>_<W>x<H>_<framerate>_<yuv420|yuv444>_<bits>b.yuv" in text
    assert "50, 50p or 1fps" in text
    assert "a file of several frames codes its first frame" in text
