"""Fast tests of the RD tools (tools/rd_eval.py, bd_rate.py, plot_rd.py); no real encoding.

rd_eval's orchestration runs against a stand-in encoder and decoder (tiny Python
scripts written here), so resume, failure handling and the measured bpp/PSNR are
tested without torch or Numba.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tools import bd_rate as bd
from tools import rd_eval

TOOLS = Path(__file__).resolve().parent.parent / "tools"

ANCHOR_DIR = bd.default_anchor_dir()
needs_anchors = pytest.mark.skipif(not ANCHOR_DIR.is_dir(), reason=f"no anchor folder {ANCHOR_DIR}")

# A Kodak-like dataset-average curve (bpp, PSNR).
CURVE = [(0.084, 27.44), (0.219, 30.86), (0.482, 34.52), (0.759, 37.25), (1.357, 41.17)]


@pytest.fixture(scope="module")
def bjontegaard():
    return pytest.importorskip("bjontegaard")


# ----------------------------------------------------------------------------- BD-rate


@pytest.mark.parametrize("method", bd.METHODS)
def test_bd_rate_of_a_curve_against_itself_is_zero(bjontegaard, method: str) -> None:
    result = bd.bd_rate(CURVE, CURVE, method)
    assert result.value == pytest.approx(0.0, abs=1e-9)
    assert (result.psnr_lo, result.psnr_hi) == (27.44, 41.17)
    assert result.overlap_fraction == pytest.approx(1.0)
    assert result.notes == []


@pytest.mark.parametrize("method", bd.METHODS)
@pytest.mark.parametrize("factor", [0.9, 1.1, 0.5])
def test_bd_rate_of_a_scaled_rate_is_the_scale(bjontegaard, method: str, factor: float) -> None:
    test = [(bpp * factor, psnr) for bpp, psnr in CURVE]
    assert bd.bd_rate(CURVE, test, method).value == pytest.approx(100 * (factor - 1), abs=1e-6)


def test_bd_rate_with_different_psnr_points(bjontegaard) -> None:
    """Test points at other PSNRs on the same (log-linear) curve, 10% cheaper: -10%."""

    def rate(psnr: float) -> float:
        return 0.01 * 10 ** (psnr / 15.0)

    anchor = [(rate(q), q) for q in (26.0, 29.0, 32.0, 35.0, 38.0, 41.0)]
    test = [(0.9 * rate(q), q) for q in (28.1, 31.7, 36.2, 39.9)]
    result = bd.bd_rate(anchor, test, "pchip")
    assert result.value == pytest.approx(-10.0, abs=1e-6)
    assert (result.psnr_lo, result.psnr_hi) == (28.1, 39.9)


def test_bd_rate_order_and_duplicates_do_not_matter(bjontegaard) -> None:
    shuffled = [CURVE[3], CURVE[0], CURVE[4], CURVE[1], CURVE[2], CURVE[2]]
    assert bd.bd_rate(CURVE, shuffled).value == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_without_overlap_is_nan_with_a_note(bjontegaard) -> None:
    high = [(bpp * 4, psnr + 20) for bpp, psnr in CURVE]
    result = bd.bd_rate(CURVE, high)
    assert math.isnan(result.value)
    assert any("no PSNR overlap" in note for note in result.notes)


def test_bd_rate_with_too_few_points_is_nan(bjontegaard) -> None:
    result = bd.bd_rate(CURVE, CURVE[:1])
    assert math.isnan(result.value)
    assert any("1 point" in note for note in result.notes)
    assert math.isnan(bd.bd_rate(CURVE, CURVE[:3], "cubic").value)  # cubic needs 4


def test_bd_rate_flags_partial_coverage(bjontegaard) -> None:
    wide = [(bpp * 0.8, psnr + 5) for bpp, psnr in CURVE]
    result = bd.bd_rate(CURVE, wide)
    assert math.isfinite(result.value)
    assert any("covers" in note for note in result.notes)


def test_average_curve_uses_only_complete_settings() -> None:
    per_image = {
        "a": {"0.001": (1.0, 30.0), "0.004": (0.5, 27.0), "0.01": (0.2, 24.0)},
        "b": {"0.001": (3.0, 34.0), "0.004": (1.5, 31.0)},
    }
    points, settings, incomplete = bd.average_curve(per_image, ["a", "b"])
    assert settings == ["0.004", "0.001"]  # sorted by PSNR
    assert points == [(1.0, 29.0), (2.0, 32.0)]
    assert incomplete == {"0.01": 1}


# ----------------------------------------------------------------------------- anchors


@needs_anchors
def test_every_anchor_file_parses() -> None:
    files = sorted(ANCHOR_DIR.rglob("*.tsv"))
    assert files, "no anchor TSV found"
    for path in files:
        if path.parent.name == "coolchic-results":
            anchor = bd.load_coolchic_release(path)
            assert anchor.per_image, path
            for points in anchor.per_image.values():
                assert len(points) == 5, path  # 5 lambdas per image in every release
                assert all(bpp > 0 and 15 < psnr < 60 for bpp, psnr in points.values()), path
        elif path.name.endswith("-published-rd.tsv"):
            anchors = bd.load_published(path)
            assert "C3" in anchors and "COOL-CHICv2" in anchors, path
            for anchor in anchors.values():
                assert anchor.average and all(b > 0 and 10 < q < 60 for b, q in anchor.average)
        elif path.name == "kodak-conventional.tsv":
            anchors = bd.load_conventional(path)
            assert set(anchors) == {"jpeg", "webp", "avif", "jxl", "x265", "x265_default_tune"}
            for anchor in anchors.values():
                assert anchor.per_image is not None
                assert sorted(anchor.per_image) == list(bd.KODAK_IMAGES)
                assert all(len(points) == 8 for points in anchor.per_image.values())
        else:
            pytest.fail(f"anchor file not covered by this test: {path}")


@needs_anchors
@pytest.mark.parametrize("dataset", sorted(bd.DATASETS))
def test_load_anchors_per_dataset(dataset: str) -> None:
    anchors = bd.load_anchors(ANCHOR_DIR, dataset)
    names = [a.name for a in anchors]
    assert {"Cool-chic 3.0", "Cool-chic 4.2", "Cool-chic 5.0"} <= set(names)
    if dataset == "kodak":
        assert {"VTM", "BPG444", "C3", "COOL-CHICv2", "x265", "avif"} <= set(names)
        kodak = next(a for a in anchors if a.name == "Cool-chic 5.0")
        assert kodak.per_image is not None and sorted(kodak.per_image) == list(bd.KODAK_IMAGES)


@needs_anchors
def test_select_anchors_prefers_exact_names() -> None:
    anchors = bd.load_anchors(ANCHOR_DIR, "kodak")
    assert [a.source.split()[0] for a in bd.select_anchors(anchors, "JPEG")] == [
        "kodak-published-rd.tsv"
    ]
    assert [a.name for a in bd.select_anchors(anchors, "vtm,x265")] == ["VTM", "x265"]
    with pytest.raises(ValueError, match="unknown anchor"):
        bd.select_anchors(anchors, "no-such-codec")


def _write_coolchic_as_ours(path: Path, release: str = "v5.0") -> None:
    """A results TSV holding a Cool-chic release's Kodak numbers as if they were ours."""
    writer = rd_eval.ResultsWriter(path)
    anchor = bd.load_coolchic_release(
        ANCHOR_DIR / "coolchic-results" / f"{release}-image-kodak.tsv"
    )
    assert anchor.per_image is not None
    for image, points in anchor.per_image.items():
        for lmbda, (bpp, psnr) in points.items():
            row = {"image": image, "lmbda": lmbda, "preset": "x", "bpp": bpp, "psnr_rgb": psnr}
            writer.append(row)


@needs_anchors
def test_bd_rate_reproduces_the_conventional_anchor_report(bjontegaard, tmp_path: Path) -> None:
    """kodak-conventional.md: Cool-chic 5.0 vs x265 -25.7% (average curve), -24.7% (mean
    of per-image), vs AVIF -21.6% / -21.3% (pchip)."""
    results = tmp_path / "rd.tsv"
    _write_coolchic_as_ours(results)
    ours = bd.load_ours([results])["x"]
    images = sorted(ours)
    anchors = bd.load_anchors(ANCHOR_DIR, "kodak")
    rows = {a.name: bd.evaluate_anchor(a, ours, images, "pchip", 24) for a in anchors}
    assert rows["x265"].bd_avg.value == pytest.approx(-25.7, abs=0.05)
    assert rows["x265"].bd_per_image_mean == pytest.approx(-24.7, abs=0.05)
    assert rows["avif"].bd_avg.value == pytest.approx(-21.6, abs=0.05)
    assert rows["avif"].bd_per_image_mean == pytest.approx(-21.3, abs=0.05)
    assert rows["Cool-chic 5.0"].bd_avg.value == pytest.approx(0.0, abs=1e-9)
    assert rows["VTM"].n_images == "24 vs 24"


@needs_anchors
def test_between_anchors_reproduces_the_conventional_anchor_report(bjontegaard, capsys) -> None:
    """kodak-conventional.md: Cool-chic 5.0 vs x265 on the dataset averages, -25.7 %."""
    assert bd.main(["--between-anchors", "Cool-chic 5.0,x265"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("BD-rate ")[1].split()[0]) == pytest.approx(-25.7, abs=0.05)
    assert bd.main(["--between-anchors", "BPG444,BPG444"]) == 0
    assert "BD-rate +0.00 %" in capsys.readouterr().out
    for wrong in ("x265", "x265,banana"):
        assert bd.main(["--between-anchors", wrong]) == 2


@needs_anchors
def test_between_anchors_uses_the_images_both_per_image_anchors_have(capsys) -> None:
    """jvet: the Cool-chic releases do not cover the same pictures."""
    anchors = {a.name: a for a in bd.load_anchors(ANCHOR_DIR, "jvet")}
    new, old = anchors["Cool-chic 5.0"], anchors["Cool-chic 4.2"]
    common = sorted(set(new.per_image) & set(old.per_image))
    assert 0 < len(common) < len(set(new.per_image) | set(old.per_image))
    curves = [bd.average_curve(a.per_image, common)[0] for a in (old, new)]
    expected = bd.bd_rate(*curves).value
    args = ["--dataset", "jvet", "--between-anchors", "Cool-chic 5.0,Cool-chic 4.2"]
    assert bd.main(args) == 0
    out = capsys.readouterr().out
    assert float(out.split("BD-rate ")[1].split()[0]) == pytest.approx(expected, abs=0.005)
    assert f"their {len(common)} common image(s)" in out


@needs_anchors
def test_bd_rate_cli_prints_a_table(bjontegaard, tmp_path: Path, capsys) -> None:
    results = tmp_path / "rd.tsv"
    writer = rd_eval.ResultsWriter(results)
    for image, offset in (("kodim01", 0.0), ("kodim02", 2.0)):
        for lmbda, bpp, psnr in ((0.0004, 1.0, 38.0), (0.001, 0.6, 35.0), (0.004, 0.25, 31.0)):
            row = {"image": image, "lmbda": lmbda, "preset": "fast", "bpp": bpp}
            writer.append({**row, "psnr_rgb": psnr + offset})
        writer.append({"image": image, "lmbda": 0.01, "preset": "fast", "bpp": 0.1})  # bad row
    code = bd.main(["--results", str(results), "--anchors", "VTM,COIN,x265,Cool-chic 5.0"])
    out = capsys.readouterr().out
    assert code == 0
    assert "complete lambdas (3)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "NaN" in lines["COIN"] and "no PSNR overlap" in lines["COIN"]
    assert "2 vs 24*" in lines["VTM"]
    assert "[2/2]" in lines["x265"]
    for fmt in ("markdown", "tsv"):
        assert bd.main(["--results", str(results), "--anchors", "VTM", "--format", fmt]) == 0


# ----------------------------------------------------------------------------- resume


def test_results_writer_and_resume(tmp_path: Path) -> None:
    results = tmp_path / "sub" / "rd.tsv"
    writer = rd_eval.ResultsWriter(results)
    writer.append({"image": "kodim01", "lmbda": "0.001", "preset": "medium", "bpp": 0.5})
    writer.append({"image": "kodim02", "lmbda": "1e-3", "preset": "medium", "bpp": 0.4})
    writer.append({"image": "kodim01", "lmbda": "0.004", "preset": "fast", "bpp": 0.2})
    text = results.read_text()
    assert text.splitlines()[0].split("\t") == list(rd_eval.COLUMNS)
    assert len(text.splitlines()) == 4

    done = rd_eval.done_keys(results)
    assert done == {
        ("kodim01", 0.001, "medium"),
        ("kodim02", 0.001, "medium"),
        ("kodim01", 0.004, "fast"),
    }
    images = [Path("/x/kodim01.png"), Path("/x/kodim02.png")]
    jobs = rd_eval.make_jobs(images, [0.001, 0.004], "medium")
    assert [(j.image, j.lmbda) for j in jobs] == [
        ("kodim01", 0.001),
        ("kodim02", 0.001),
        ("kodim01", 0.004),
        ("kodim02", 0.004),
    ]
    todo = rd_eval.pending_jobs(jobs + jobs, done)
    assert [(j.image, j.lmbda, j.preset) for j in todo] == [
        ("kodim01", 0.004, "medium"),
        ("kodim02", 0.004, "medium"),
    ]


def test_resume_survives_a_torn_last_line(tmp_path: Path) -> None:
    results = tmp_path / "rd.tsv"
    writer = rd_eval.ResultsWriter(results)
    writer.append({"image": "kodim01", "lmbda": "0.001", "preset": "medium", "bpp": 0.5})
    with open(results, "a") as handle:
        handle.write("kodim02\t0.001\tmed")  # a crash in the middle of a row
    assert rd_eval.done_keys(results) == {("kodim01", 0.001, "medium")}
    rd_eval.ResultsWriter(results).append(
        {"image": "kodim03", "lmbda": "0.001", "preset": "medium"}
    )
    assert rd_eval.done_keys(results) == {
        ("kodim01", 0.001, "medium"),
        ("kodim03", 0.001, "medium"),
    }


def test_writer_keeps_an_existing_column_order(tmp_path: Path) -> None:
    results = tmp_path / "rd.tsv"
    results.write_text("preset\timage\tlmbda\tbpp\tpsnr_rgb\n")
    rd_eval.ResultsWriter(results).append(
        {"image": "k", "lmbda": "0.01", "preset": "p", "bpp": 1, "psnr_rgb": 30, "extra": 5}
    )
    assert results.read_text().splitlines()[1] == "p\tk\t0.01\t1\t30"
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(ValueError, match="header lacks"):
        rd_eval.ResultsWriter(bad)


def test_parse_lmbdas() -> None:
    assert rd_eval.parse_lmbdas("0.0004, 0.001,0.004") == [0.0004, 0.001, 0.004]
    for bad in ("", "0.001,-1", "nan", "x"):
        with pytest.raises(ValueError):
            rd_eval.parse_lmbdas(bad)


def test_psnr() -> None:
    a = np.zeros((4, 5, 3), dtype=np.uint8)
    assert rd_eval.psnr(a, a) == math.inf
    assert rd_eval.psnr(a, a + 1) == pytest.approx(10 * math.log10(255**2))
    with pytest.raises(ValueError, match="shape"):
        rd_eval.psnr(a, a[:, :4])


FAKE_ENCODER = """
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "encode"
src, out = Path(args[1]), Path(args[args.index("-o") + 1])
lmbda = float(args[args.index("--lmbda") + 1])
with open(Path(__file__).with_name("calls.log"), "a") as log:
    log.write(f"{src.stem} {lmbda}\\n")
with open(Path(__file__).with_name("threads.log"), "a") as log:
    log.write(os.environ.get("OMP_NUM_THREADS", "-") + "\\n")
assert "--resume" in args
work = Path(args[args.index("--workdir") + 1])
with open(Path(__file__).with_name("workdirs.log"), "a") as log:
    log.write(f"{work.name} {work.exists()}\\n")
work.mkdir(parents=True, exist_ok=True)
if lmbda == 0.5:
    print("simulated encoder failure", file=sys.stderr)
    sys.exit(3)
data = src.read_bytes()  # the 'stream' is the PNG itself
out.write_bytes(data)
meta = {"bpp": 8 * len(data) / (16 * 24), "psnr": 48.1308, "mac_per_pixel": 1234.5,
        "seconds": 0.25}
Path(args[args.index("--json") + 1]).write_text(json.dumps(meta))
"""

FAKE_DECODER = """
import sys
import imageio.v3 as iio
import numpy as np
args = sys.argv[1:]
assert args[0] == "decode"
image = iio.imread(args[1])
out = np.where(image == 255, 254, image + 1).astype(np.uint8)  # every sample off by one
iio.imwrite(args[args.index("-o") + 1], out)
print("wrote x: stream 1 bytes, decoded in 0.0125 s")
"""


def _stand_in_run(tmp_path: Path) -> tuple[list[Path], Path, list[str]]:
    """(images, results path, rd_eval arguments) of a run with the stand-in codec."""
    import imageio.v3 as iio

    encoder = tmp_path / "fake_encoder.py"
    decoder = tmp_path / "fake_decoder.py"
    encoder.write_text(FAKE_ENCODER)
    decoder.write_text(FAKE_DECODER)
    rng = np.random.default_rng(0)
    images = []
    for name in ("img_a", "img_b"):
        path = tmp_path / f"{name}.png"
        iio.imwrite(path, rng.integers(0, 256, size=(24, 16, 3), dtype=np.uint8))
        images.append(path)
    results = tmp_path / "out" / "rd.tsv"
    argv = [
        "--images",
        *map(str, images),
        "--lmbdas",
        "0.001,0.5",
        "--preset",
        "fast",
        "--results",
        str(results),
        "--encoder-cmd",
        f"{sys.executable} {encoder}",
        "--decoder-cmd",
        f"{sys.executable} {decoder}",
    ]
    return images, results, argv


def test_evaluate_with_a_stand_in_codec(tmp_path: Path) -> None:
    images, results, argv = _stand_in_run(tmp_path)
    assert rd_eval.main(argv) == 1  # the lambda 0.5 encodes fail, the others go on

    rows = rd_eval.read_results(results)
    assert [(r["image"], r["lmbda"]) for r in rows] == [("img_a", "0.001"), ("img_b", "0.001")]
    for row, image in zip(rows, images, strict=True):
        size = image.stat().st_size
        assert int(row["bytes"]) == size
        assert float(row["bpp"]) == pytest.approx(8 * size / (16 * 24), abs=1e-8)
        assert float(row["psnr_rgb"]) == pytest.approx(10 * math.log10(255**2), abs=1e-5)
        assert float(row["psnr_encoder"]) == 48.1308
        assert float(row["mac_per_pixel"]) == 1234.5
        assert float(row["encode_seconds"]) == 0.25
        assert float(row["decode_seconds"]) == 0.0125
        assert (row["width"], row["height"]) == ("16", "24")
        assert Path(row["stream"]).is_file()
    errors = results.with_name("rd.tsv.errors.log").read_text()
    assert errors.count("FAILED") == 2 and "exit code 3" in errors
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 4
    # Each encode gets its own checkpoint directory, removed once it has succeeded and
    # kept for a failed one (where a rerun goes on).
    workdirs = (tmp_path / "workdirs.log").read_text().splitlines()
    names = sorted(line.split()[0] for line in workdirs)
    assert len(set(names)) == 4 and all(name.endswith(".work") for name in names)
    left = sorted(p.name for p in results.parent.rglob("*.work"))
    assert len(left) == 2 and all("0.5" in name for name in left)

    # Rerun: the finished pairs are skipped, only the failed ones are tried again.
    assert rd_eval.main([*argv, "--jobs", "2"]) == 1
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert sorted(calls[4:]) == ["img_a 0.5", "img_b 0.5"]
    rerun = (tmp_path / "workdirs.log").read_text().splitlines()[4:]
    assert sorted(rerun) == sorted(f"{name} True" for name in left)  # the same directories
    assert len(rd_eval.read_results(results)) == 2


def test_evaluate_on_a_local_dask_cluster(tmp_path: Path) -> None:
    """--scheduler local: the same rows, failures and resume as without Dask; each encode
    runs with the worker's thread count."""
    pytest.importorskip("distributed")
    images, results, argv = _stand_in_run(tmp_path)
    local = [*argv, "--scheduler", "local", "--jobs", "2", "--threads", "1"]
    assert rd_eval.main(local) == 1  # the lambda 0.5 encodes fail, the others go on
    rows = rd_eval.read_results(results)
    assert sorted((r["image"], r["lmbda"]) for r in rows) == [
        ("img_a", "0.001"),
        ("img_b", "0.001"),
    ]
    for row in rows:
        image = tmp_path / f"{row['image']}.png"
        assert float(row["bpp"]) == pytest.approx(8 * image.stat().st_size / (16 * 24), abs=1e-8)
        assert float(row["psnr_rgb"]) == pytest.approx(10 * math.log10(255**2), abs=1e-5)
    errors = results.with_name("rd.tsv.errors.log").read_text()
    assert errors.count("FAILED") == 2 and "exit code 3" in errors
    assert (tmp_path / "threads.log").read_text().split() == ["1"] * 4
    # Rerun: only the failed pairs are tried again.
    assert rd_eval.main(local) == 1
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert len(calls) == 6 and sorted(calls[4:]) == ["img_a 0.5", "img_b 0.5"]
    assert len(rd_eval.read_results(results)) == 2


def test_local_cluster_does_not_oversubscribe_the_cores() -> None:
    plan = rd_eval.plan_local_cluster
    assert plan(16, None, None) == (16, 1, None)
    assert plan(16, 4, None) == (4, 4, None)
    assert plan(16, None, 3) == (5, 3, None)
    assert plan(2, 3, None) == (3, 1, plan(2, 3, None)[2])
    assert "oversubscribe the 2 core(s)" in plan(2, 3, None)[2]
    assert plan(2, 1, 4)[2] is not None
    for n_cpus in (1, 2, 7, 64):
        for jobs in (None, 1, 2, 3):
            workers, threads, warning = plan(n_cpus, jobs, None)
            assert (workers * threads <= n_cpus) == (warning is None)
    with pytest.raises(ValueError):
        plan(4, 0, None)


def test_scheduler_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("distributed")
    _, results, argv = _stand_in_run(tmp_path)
    monkeypatch.setattr(rd_eval, "CONNECT_TIMEOUT", "2s")
    # Nothing listens on port 1: the connection is refused until the timeout.
    assert rd_eval.main([*argv, "--scheduler", "tcp://127.0.0.1:1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --scheduler tcp://127.0.0.1:1: ") and error.count("\n") == 1
    assert rd_eval.main([*argv, "--threads", "2"]) == 2  # --threads without --scheduler
    assert not results.exists()


def test_rd_eval_help() -> None:
    out = subprocess.run(
        [sys.executable, str(TOOLS / "rd_eval.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--images", "--lmbdas", "--preset", "--results", "--jobs", "--device"):
        assert option in out


# ----------------------------------------------------------------------------- plot


@needs_anchors
def test_plot_writes_a_png(bjontegaard, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tools import plot_rd

    results = tmp_path / "rd.tsv"
    _write_coolchic_as_ours(results, "v4.2")
    out = tmp_path / "rd.png"
    assert plot_rd.main(["--results", str(results), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = tmp_path / "one.png"
    argv = ["--results", str(results), "--out", str(single), "--image", "kodim05", "--logx"]
    assert plot_rd.main(argv) == 0
    assert single.stat().st_size > 10_000


def test_decoded_psnr_reads_8_and_16_bit_pngs(tmp_path: Path) -> None:
    import imageio.v3 as iio

    original = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    iio.imwrite(tmp_path / "o.png", original)
    iio.imwrite(tmp_path / "d8.png", original + 2)
    expected = 10 * math.log10(255**2 / 4)
    assert rd_eval.decoded_psnr(tmp_path / "o.png", tmp_path / "d8.png") == pytest.approx(expected)
    grey = original[:, :, 0]
    iio.imwrite(tmp_path / "g.png", grey)
    iio.imwrite(tmp_path / "g16.png", grey.astype(np.uint16) * 257)
    assert rd_eval.decoded_psnr(tmp_path / "g.png", tmp_path / "g16.png") == math.inf
    # A 16-bit RGB PNG (as the reference decoder writes it) is refused, not misread.
    rgb16 = tmp_path / "d16.png"
    rgb16.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(8) + bytes(8) + bytes([16, 2]) + bytes(20))
    with pytest.raises(ValueError, match="16-bit RGB"):
        rd_eval.decoded_psnr(tmp_path / "o.png", rgb16)


def test_rd_eval_rejects_a_missing_encoder(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    argv = ["--images", str(image), "--lmbdas", "0.01", "--results", str(tmp_path / "r.tsv")]
    assert rd_eval.main([*argv, "--encoder-cmd", "no-such-encoder-xyz"]) == 2
    assert rd_eval.main([*argv, "--lmbdas", "-1"]) == 2
    assert not (tmp_path / "r.tsv").exists()


def test_parallel_encodes_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rd_eval.thread_env(1, n_cpus=16) is None
    env = rd_eval.thread_env(3, n_cpus=16)
    assert env is not None and env["OMP_NUM_THREADS"] == "5" and env["MKL_NUM_THREADS"] == "5"
    assert rd_eval.thread_env(4, n_cpus=2)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's choice wins
    assert rd_eval.thread_env(4, n_cpus=16) is None


# ----------------------------------------------------------------------------- BPG anchor

FAKE_BPGENC = """\
import sys, pathlib
args = sys.argv[1:]
with open(pathlib.Path(__file__).with_name("bpg_calls.log"), "a") as log:
    log.write(" ".join(args) + "\\n")
pathlib.Path(args[args.index("-o") + 1]).write_bytes(pathlib.Path(args[-1]).read_bytes())
"""

FAKE_BPGDEC = """\
import sys
import imageio.v3 as iio
import numpy as np
args = sys.argv[1:]
image = iio.imread(args[-1])
out = np.where(image == 255, 254, image + 1).astype(np.uint8)  # every sample off by one
iio.imwrite(args[args.index("-o") + 1], out)
"""


def _stand_in_program(path: Path, source: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{source}")
    path.chmod(0o755)
    return path


def test_anchor_bpg_measures_resumes_and_feeds_bd_rate(tmp_path: Path, capsys) -> None:
    import imageio.v3 as iio

    from tools import anchor_bpg

    bpgenc = _stand_in_program(tmp_path / "bpgenc", FAKE_BPGENC)
    bpgdec = _stand_in_program(tmp_path / "bpgdec", FAKE_BPGDEC)
    image = tmp_path / "kodim01.png"
    rng = np.random.default_rng(1)
    iio.imwrite(image, rng.integers(0, 255, size=(8, 12, 3), dtype=np.uint8))
    results = tmp_path / "bpg.tsv"
    argv = ["--bpgenc", str(bpgenc), "--bpgdec", str(bpgdec), "--images", str(image)]
    argv += ["--results", str(results)]
    assert anchor_bpg.main([*argv, "--qps", "30,40"]) == 0
    rows = bd._read_tsv(results)
    assert [(r["codec"], r["setting"], r["image"]) for r in rows] == [
        ("BPG444-measured", "30", "kodim01"),
        ("BPG444-measured", "40", "kodim01"),
    ]
    size = image.stat().st_size
    assert int(rows[0]["bytes"]) == size
    assert float(rows[0]["bpp"]) == pytest.approx(8 * size / (8 * 12), abs=1e-6)
    assert float(rows[0]["psnr_rgb"]) == pytest.approx(10 * math.log10(255**2), abs=1e-4)
    calls = (tmp_path / "bpg_calls.log").read_text().splitlines()
    assert calls[0].split()[2:] == "-q 30 -f 444 -e x265 -c ycbcr -b 8 -m 8".split() + [str(image)]

    # Resume: only the new QP is encoded.
    assert anchor_bpg.main([*argv, "--qps", "30-41"]) == 0
    calls = (tmp_path / "bpg_calls.log").read_text().splitlines()
    assert len(calls) == 2 + 10 and len(bd._read_tsv(results)) == 12
    # A row torn by a crash before its measurements does not count as done.
    with open(results, "a") as handle:
        handle.write("BPG444-measured\t3\tkodim01")
    assert anchor_bpg.main([*argv, "--qps", "3"]) == 0
    assert (tmp_path / "bpg_calls.log").read_text().splitlines()[-1].split()[3] == "3"
    results.write_text("\n".join(results.read_text().splitlines()[:13]) + "\n")
    assert anchor_bpg.main([*argv, "--qps", "52"]) == 2
    assert anchor_bpg.main([*argv, "--bpgenc", str(tmp_path / "none"), "--qps", "3"]) == 2

    # bd_rate --extra-anchors reads the file; it is a per-image anchor.
    anchors = bd.load_extra_anchors([results])
    assert [a.name for a in anchors] == ["BPG444-measured"]
    assert set(anchors[0].per_image["kodim01"]) == {str(q) for q in range(30, 42)}
    with pytest.raises(ValueError, match="no anchor file"):
        bd.load_extra_anchors([tmp_path / "missing.tsv"])
    capsys.readouterr()


def test_parse_qps() -> None:
    from tools import anchor_bpg

    assert anchor_bpg.parse_qps("20-22,30") == [20, 21, 22, 30]
    for bad in ("", "40-30", "0-52", "x"):
        with pytest.raises(ValueError):
            anchor_bpg.parse_qps(bad)


def test_plot_presets(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from tools import plot_presets

    table = tmp_path / "presets.tsv"
    table.write_text(
        "encoder\tpoints\trd_vs_coolchic5_pct\tseconds\n"
        "coolchic-ref instant\t8\t40.3\t15.1\n"
        "coolchic-ref fast\t8\t-1.4\t119.4\n"
        "Cool-chic 5.0.1\t8\t0\t707\n"
    )
    out = tmp_path / "presets.png"
    assert plot_presets.main(["--table", str(table), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table.write_text("encoder\tpoints\trd_vs_coolchic5_pct\tseconds\ncoolchic-ref fast\t8\t\t1\n")
    assert plot_presets.main(["--table", str(table), "--out", str(out)]) == 2
