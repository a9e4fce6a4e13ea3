"""tools/anchor_conventional.py on a tiny picture: every codec that the installed
imagecodecs / pillow-heif offer is measured; one they lack is skipped with a message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOL = "tools.anchor_conventional"  # run as a module from the repository root
KODAK = ROOT / "tools" / "sample" / "kodim23-crop256.png"
NAMES = {
    "jpeg": "JPEG444-measured",
    "webp": "WebP-measured",
    "avif": "AVIF444-measured",
    "jxl": "JXL-measured",
    "hevc": "HEVC444-measured",
}
# Two settings per codec, low quality first.
SETTINGS = ["jpeg=20,90", "webp=10,90", "avif=20,80", "jxl=6,0.5", "hevc=45,22"]
SETTINGS_OF = {item.split("=")[0]: item.split("=")[1].split(",") for item in SETTINGS}


def run_tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", TOOL, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("anchors")
    results = tmp / "anchors.tsv"
    proc = run_tool(
        "--images", str(KODAK), "--crop", "32", "--results", str(results),
        "--write-crops", str(tmp / "crops"), "--settings", *SETTINGS,
    )  # fmt: skip
    return tmp, results, proc


def test_each_codec_measured_or_skipped_with_a_reason(measured) -> None:
    _, results, proc = measured
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(results)
    for key, name in NAMES.items():
        mine = [r for r in rows if r["codec"] == name]
        if not mine:
            assert f"skipped {name}: " in proc.stderr, f"{name}: no rows and no message"
            print(f"{name} not available here: {proc.stderr}")
            continue
        assert sorted(r["setting"] for r in mine) == sorted(SETTINGS_OF[key])
        low, high = (next(r for r in mine if r["setting"] == s) for s in SETTINGS_OF[key])
        for row in mine:
            assert row["image"] == "kodim23-crop256-crop32"
            # bpp is the file size over the 32x32 pixels.
            assert float(row["bpp"]) == pytest.approx(int(row["bytes"]) * 8 / 1024, abs=1e-6)
            assert 10.0 < float(row["psnr_rgb"]) < 70.0
        # Higher quality costs more bits and gives a higher PSNR.
        assert int(high["bytes"]) > int(low["bytes"])
        assert float(high["psnr_rgb"]) > float(low["psnr_rgb"]) + 3.0


def test_written_crop_is_the_centre(measured) -> None:
    import imageio.v3 as iio

    tmp, _, _ = measured
    crop = np.asarray(iio.imread(tmp / "crops" / "kodim23-crop256-crop32.png"))
    whole = np.asarray(iio.imread(KODAK))[:, :, :3]
    top, left = (whole.shape[0] - 32) // 2, (whole.shape[1] - 32) // 2
    assert np.array_equal(crop, whole[top : top + 32, left : left + 32])


def test_rerun_resumes_and_bd_rate_reads_the_file(measured) -> None:
    tmp, results, _ = measured
    before = results.read_text(encoding="utf-8")
    proc = run_tool(
        "--images", str(KODAK), "--crop", "32", "--results", str(results), "--settings", *SETTINGS
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "0 encode(s) to run" in proc.stdout
    assert results.read_text(encoding="utf-8") == before
    empty = tmp / "no-anchors"
    empty.mkdir()
    listed = subprocess.run(
        [sys.executable, "-m", "tools.bd_rate", "--anchor-dir", str(empty),
         "--extra-anchors", str(results), "--list-anchors"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    present = {r["codec"] for r in read_rows(results)}
    assert present and present <= {line.split("\t")[0] for line in listed.stdout.splitlines()}


def test_missing_package_is_skipped_with_a_message(tmp_path: Path) -> None:
    """Without pillow-heif, HEVC is skipped (said on stderr) and JPEG still measured."""
    pytest.importorskip("imagecodecs")
    results = tmp_path / "r.tsv"
    code = (
        "import runpy, sys; sys.modules['pillow_heif'] = None; "
        "sys.argv = ['anchor_conventional'] + sys.argv[1:]; "
        f"runpy.run_module({TOOL!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "--images", str(KODAK), "--crop", "16",
         "--results", str(results), "--codecs", "jpeg,hevc", "--settings", "jpeg=50"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "skipped HEVC444-measured: pillow-heif is not installed" in proc.stderr
    assert [r["codec"] for r in read_rows(results)] == ["JPEG444-measured"]


def test_bad_options_are_one_line_errors(tmp_path: Path) -> None:
    for args in (["--codecs", "gif"], ["--settings", "jpeg=high"], ["--crop", "4096"]):
        proc = run_tool("--images", str(KODAK), "--results", str(tmp_path / "r.tsv"), *args)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
