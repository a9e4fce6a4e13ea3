"""tools/compare_coolchic.py with a stand-in Cool-chic checkout and a tiny encode of ours."""

from __future__ import annotations

import csv
import math
import sys
import textwrap
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from tools import compare_coolchic

# A stand-in for Cool-chic's cc_encode.py / cc_decode.py: the "stream" is the raw samples,
# and the "decoder" adds 3 to every red sample, so the measured MSE is known exactly.
STAND_IN_ENCODE = textwrap.dedent(
    """
    import argparse, os
    import imageio.v3 as iio
    import numpy as np
    p = argparse.ArgumentParser()
    for name in ("-i", "-o", "--workdir", "--lmbda", "--n_itr", "--dec_cfg_residue"):
        p.add_argument(name)
    a = p.parse_args()
    assert os.path.isdir(a.workdir) and int(a.n_itr) == 2000 and os.path.isfile(a.dec_cfg_residue)
    np.save(a.o + ".npy", iio.imread(a.i)); os.replace(a.o + ".npy", a.o)
    """
)
STAND_IN_DECODE = textwrap.dedent(
    """
    import argparse
    import imageio.v3 as iio
    import numpy as np
    p = argparse.ArgumentParser()
    p.add_argument("-i"); p.add_argument("-o")
    a = p.parse_args()
    pixels = np.load(a.i).astype(np.int64)
    pixels[..., 0] = np.clip(pixels[..., 0] + 3, 0, 255)
    iio.imwrite(a.o, pixels.astype(np.uint8))
    """
)


def test_stand_in_coolchic_rows_are_measured_and_resumable(tmp_path: Path) -> None:
    checkout = tmp_path / "cc"
    (checkout / "cfg").mkdir(parents=True)
    (checkout / "cfg" / "hop.cfg").write_text("; stand-in\n")
    (checkout / "cc_encode.py").write_text(STAND_IN_ENCODE)
    (checkout / "cc_decode.py").write_text(STAND_IN_DECODE)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 250, size=(40, 48, 3), dtype=np.uint8)
    image = tmp_path / "pic.png"
    iio.imwrite(image, picture)
    results = tmp_path / "results.tsv"
    argv = [
        "--images", str(image), "--crop", "32", "--lmbdas", "0.001,0.004",
        "--encoders", compare_coolchic.THEIRS, "--coolchic", str(checkout),
        "--coolchic-python", sys.executable, "--coolchic-cfg", "cfg/hop.cfg",
        "--workdir", str(tmp_path / "work"), "--results", str(results), "--threads", "1",
    ]  # fmt: skip
    assert compare_coolchic.main(argv) == 0
    rows = list(csv.DictReader(open(results), delimiter="\t"))
    assert [r["lmbda"] for r in rows] == ["0.001", "0.004"]
    crop = picture[4:36, 8:40]  # centred 32x32 crop of 40x48
    for row in rows:
        n_bytes = int(row["bytes"])
        assert n_bytes > crop.size  # the stand-in's stream is a .npy file of the samples
        assert float(row["bpp"]) == pytest.approx(8 * n_bytes / (32 * 32), rel=1e-6)
        red = crop[..., 0].astype(np.float64)
        expected_mse = np.sum((np.minimum(red + 3, 255) - red) ** 2) / (255.0**2 * crop.size)
        assert float(row["mse"]) == pytest.approx(expected_mse, rel=1e-6)
        assert float(row["psnr_rgb"]) == pytest.approx(-10 * math.log10(expected_mse), abs=1e-4)
        cost = expected_mse + float(row["lmbda"]) * float(row["bpp"])
        assert float(row["rd_cost"]) == pytest.approx(cost, rel=1e-5)
    # A second run finds both rows and encodes nothing more.
    assert compare_coolchic.main(argv) == 0
    assert len(list(csv.DictReader(open(results), delimiter="\t"))) == 2


def test_coolchic_needs_its_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare_coolchic.main(["--encoders", compare_coolchic.THEIRS]) == 1
    assert "needs --coolchic" in capsys.readouterr().err


def test_table_reports_cost_relative_to_coolchic(capsys: pytest.CaptureFixture[str]) -> None:
    def row(encoder: str, config: str, cost: float) -> dict[str, str]:
        return {"encoder": encoder, "config": config, "image": "a", "lmbda": "0.001",
                "seed": "0", "iterations": "2000", "bpp": "1", "psnr_rgb": "30",
                "rd_cost": str(cost), "encode_wall_seconds": "10", "revision": "r1"}  # fmt: skip

    compare_coolchic.print_table(
        [row(compare_coolchic.THEIRS, "hop@2000", 2e-3), row(compare_coolchic.OURS, "fast", 1.8e-3)]
    )
    out = capsys.readouterr().out
    assert "coolchic-ref fast @r1: -10.0 %" in out
    assert "coolchic-5.0.1 hop@2000: +0.0 %" in out
