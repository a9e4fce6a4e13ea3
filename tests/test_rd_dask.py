"""tools/rd_eval.py --scheduler local: two real (tiny, short) encodes on a Dask
LocalCluster, verified by decoding, written as rows, and skipped when run again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tools" / "sample" / "kodim23-crop256.png"


def test_two_encodes_on_a_local_cluster(tmp_path: Path) -> None:
    import imageio.v3 as iio

    image = tmp_path / "tiny.png"
    iio.imwrite(image, np.asarray(iio.imread(SAMPLE))[100:116, 100:124, :3])
    results = tmp_path / "rd.tsv"
    codec = f"{sys.executable} -m coolchic_ref"
    cmd = [
        sys.executable, str(ROOT / "tools" / "rd_eval.py"), "--images", str(image),
        "--lmbdas", "0.001,0.02", "--preset", "instant", "--encoder-args=--n_itr 8 --op 500",
        "--results", str(results), "--scheduler", "local", "--jobs", "2", "--threads", "1",
        "--encoder-cmd", codec, "--decoder-cmd", codec,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Dask LocalCluster: 2 worker(s)" in run.stdout
    assert "warning" not in run.stdout  # the decoded PSNR is the encoder's claim
    lines = results.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    assert sorted(row["lmbda"] for row in rows) == ["0.001", "0.02"]
    for row in rows:
        assert (row["image"], row["width"], row["height"]) == ("tiny", "24", "16")
        assert float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / (24 * 16), abs=1e-7)
        assert abs(float(row["psnr_rgb"]) - float(row["psnr_encoder"])) < 0.01
        assert Path(row["stream"]).is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "2 already in" in again.stdout and "0 to run" in again.stdout
    assert results.read_text(encoding="utf-8").splitlines() == lines
