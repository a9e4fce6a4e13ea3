"""The conformance suite (spec/conformance.md) under pytest.

Decoder-only parts (run in CI without torch or constriction):
- every stream passes through `run_suite` (valid: same SHA-256; invalid: rejected);
- the manifest is well formed and its hashes are those of the stored expected samples;
- the runner in subprocesses with NUMBA_NUM_THREADS=1, =2 and NUMBA_DISABLE_JIT=1;
- every stream decoded in a deliberately different but legal evaluation order
  (grids one by one in reverse order, upsampling and synthesis tile by tile in
  reverse order, planes in reverse order) gives the same samples;
- the runner reports the first differing sample of a tampered suite.

With the encoder extra: the encoder's own integer simulation gives every hash,
and tools/make_conformance.py rebuilds the generator-made streams byte for byte.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest
from click.testing import CliRunner

from coolchic_ref import chroma, cli, samples
from coolchic_ref.conformance import first_difference, load_manifest, run_suite, split_planes
from coolchic_ref.syntax import ColorFormat, grid_shape, parse_header
from coolchic_ref.weights import read_weights

SUITE = Path(__file__).resolve().parent
ROOT = SUITE.parent.parent
MANIFEST = json.loads((SUITE / "manifest.json").read_text())
ENTRIES = MANIFEST["streams"]
VALID = [entry for entry in ENTRIES if entry.get("reject") is None]
INVALID = [entry for entry in ENTRIES if entry.get("reject") is not None]


def stream_bytes(entry: dict) -> bytes:
    return (SUITE / "streams" / entry["stream"]).read_bytes()


def expected_raw(entry: dict) -> bytes:
    return gzip.decompress((SUITE / "expected" / entry["expected"]).read_bytes())


def entry_id(entry: dict) -> str:
    return entry["stream"].removesuffix(".cool")


# --- the manifest -------------------------------------------------------------------------


def test_manifest_is_well_formed() -> None:
    entries = load_manifest(SUITE)  # the runner's own validation
    assert len(entries) == len(ENTRIES)
    assert len(VALID) >= 20
    names = [entry["stream"] for entry in ENTRIES]
    assert names == sorted(names) and len(set(names)) == len(names)
    on_disk = sorted(path.name for path in (SUITE / "streams").glob("*.cool"))
    assert on_disk == sorted(names), "streams/ holds exactly the manifest's streams"
    expected_files = sorted(path.name for path in (SUITE / "expected").glob("*.raw.gz"))
    assert expected_files == sorted(entry["expected"] for entry in VALID)
    for entry in ENTRIES:
        assert entry["description"].strip(), entry["stream"]
        assert len(stream_bytes(entry)) == entry["bytes"]
    origins = {entry["origin"] for entry in ENTRIES}
    assert {"generator", "invalid"} <= origins


@pytest.mark.parametrize("entry", VALID, ids=entry_id)
def test_expected_samples_match_manifest(entry: dict) -> None:
    raw = expected_raw(entry)
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    header = parse_header(stream_bytes(entry))
    assert (header.width, header.height) == (entry["width"], entry["height"])
    assert (int(header.color_format), header.bit_depth) == (
        entry["color_format"],
        entry["bit_depth"],
    )
    chroma = grid_shape(header.height, header.width, 1)
    shapes = [(header.height, header.width)] * header.n_channels
    if header.color_format == ColorFormat.YUV420:
        shapes[1:] = [chroma, chroma]
    sample_bytes = 1 if header.bit_depth == 8 else 2
    assert len(raw) == sample_bytes * sum(rows * columns for rows, columns in shapes)


# --- the runner ---------------------------------------------------------------------------


def test_every_stream_passes() -> None:
    results = run_suite(SUITE)
    failures = [result.line() for result in results if not result.passed]
    assert not failures, "\n".join(failures)
    assert len(results) == len(ENTRIES)


def _run_cli(env_changes: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    settings = ("NUMBA_NUM_THREADS", "NUMBA_DISABLE_JIT")
    env = {k: v for k, v in os.environ.items() if k not in settings}
    env.update(env_changes)
    return subprocess.run(
        [sys.executable, "-m", "coolchic_ref", "conformance", str(SUITE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "env",
    [{"NUMBA_NUM_THREADS": "1"}, {"NUMBA_NUM_THREADS": "2"}, {"NUMBA_DISABLE_JIT": "1"}],
    ids=["1-thread", "2-threads", "no-jit"],
)
def test_runner_in_subprocess(env: dict[str, str]) -> None:
    """Same hashes with 1 and 2 Numba threads and with the pure-Python kernels."""
    # The pure-Python run is the long one: about 400 s for the version-1 streams and
    # 205 s for the version-2 ones on a loaded 2-core machine (2026-12-03).
    done = _run_cli(env, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"conformance: {len(ENTRIES)} passed, 0 failed"
    assert len(lines) == len(ENTRIES) + 1
    assert all(line.startswith("PASS ") for line in lines[:-1])


def _small_suite(tmp_path: Path, names: list[str]) -> Path:
    """A copy of part of the suite in tmp_path."""
    (tmp_path / "streams").mkdir(parents=True)
    (tmp_path / "expected").mkdir()
    entries = [entry for entry in ENTRIES if entry_id(entry) in names]
    assert len(entries) == len(names)
    for entry in entries:
        shutil.copy(SUITE / "streams" / entry["stream"], tmp_path / "streams")
        if entry.get("expected"):
            shutil.copy(SUITE / "expected" / entry["expected"], tmp_path / "expected")
    (tmp_path / "manifest.json").write_text(json.dumps({**MANIFEST, "streams": entries}))
    return tmp_path


def _pick(predicate) -> str:
    return next(entry_id(entry) for entry in VALID if predicate(entry))


def _tamper(suite: Path, name: str, plane: int, row: int, column: int) -> tuple[int, int]:
    """Change one expected sample (and the manifest hash with it); (old, new) value."""
    manifest = json.loads((suite / "manifest.json").read_text())
    entry = next(e for e in manifest["streams"] if entry_id(e) == name)
    path = suite / "expected" / entry["expected"]
    raw = gzip.decompress(path.read_bytes())
    header = parse_header((suite / "streams" / entry["stream"]).read_bytes())
    shapes = [(header.height, header.width)] * header.n_channels
    if header.color_format == ColorFormat.YUV420:
        shapes[1:] = [grid_shape(header.height, header.width, 1)] * 2
    planes = [p.copy() for p in split_planes(raw, shapes, header.bit_depth)]
    index = row * shapes[plane][1] + column
    old = int(planes[plane][index])
    new = (old + 1) % (1 << header.bit_depth)
    planes[plane][index] = new
    raw = b"".join(p.astype("<u2" if header.bit_depth > 8 else np.uint8).tobytes() for p in planes)
    path.write_bytes(gzip.compress(raw))
    entry["sha256"] = hashlib.sha256(raw).hexdigest()
    (suite / "manifest.json").write_text(json.dumps(manifest))
    return old, new


def test_runner_reports_first_differing_sample(tmp_path: Path) -> None:
    rgb8 = _pick(lambda e: e["color_format"] == 1 and e["bit_depth"] == 8 and e["height"] > 4)
    yuv420_10 = _pick(lambda e: e["color_format"] == 3 and e["bit_depth"] == 10 and e["width"] > 4)
    rejected = entry_id(INVALID[0])
    suite = _small_suite(tmp_path, [rgb8, yuv420_10, rejected])
    old_a, new_a = _tamper(suite, rgb8, plane=2, row=3, column=1)
    old_b, new_b = _tamper(suite, yuv420_10, plane=1, row=1, column=2)
    # A second change further on: only the first is reported.
    _tamper(suite, yuv420_10, plane=2, row=2, column=0)

    result = CliRunner().invoke(cli.main, ["conformance", str(suite)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"FAIL {rgb8}: plane 2, row 3, column 1: expected {new_a}, got {old_a}" in lines
    assert f"FAIL {yuv420_10}: plane 1, row 1, column 2: expected {new_b}, got {old_b}" in lines
    assert any(line.startswith(f"PASS {rejected}") for line in lines)
    assert lines[-1] == "conformance: 1 passed, 2 failed"

    by_name = {r.name: r for r in run_suite(suite)}
    assert by_name[rgb8].first_difference == (2, 3, 1, new_a, old_a)


def test_runner_judges_rejections(tmp_path: Path) -> None:
    """A valid stream marked `reject` fails, and so does an invalid stream marked valid."""
    valid, invalid = entry_id(VALID[0]), entry_id(INVALID[0])
    suite = _small_suite(tmp_path, [valid, invalid])
    manifest = json.loads((suite / "manifest.json").read_text())
    for entry in manifest["streams"]:
        if entry_id(entry) == valid:
            entry.update(reject={"rule": 4, "error": ""}, sha256=None, expected=None)
        else:
            entry.update(reject=None, sha256="0" * 64, expected=None)
    (suite / "manifest.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(cli.main, ["conformance", str(suite)])
    assert result.exit_code == 1
    assert f"FAIL {valid}: decoded a picture, but spec section 9 rule 4" in result.output
    assert f"FAIL {invalid}: " in result.output
    assert "conformance: 0 passed, 2 failed" in result.output


def test_runner_timings_and_default_directory(tmp_path: Path, monkeypatch) -> None:
    suite = _small_suite(tmp_path / "tests" / "conformance", [entry_id(VALID[0])])
    monkeypatch.chdir(tmp_path)  # the default DIR is tests/conformance
    result = CliRunner().invoke(cli.main, ["conformance", "--timings"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"PASS {entry_id(VALID[0])} (") and first.endswith(" ms)")
    assert suite.is_dir()


@pytest.mark.parametrize(
    "content", [None, "{not json", '{"streams": 3}', '{"streams": [{"stream": "../x.cool"}]}']
)
def test_runner_rejects_bad_manifest(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "manifest.json").write_text(content)
    result = CliRunner().invoke(cli.main, ["conformance", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("error: ")


def test_first_difference_of_a_short_decode() -> None:
    planes = [np.arange(6, dtype=np.uint16).reshape(2, 3)]
    raw = planes[0].astype("<u2").tobytes()
    assert first_difference(raw, planes, 10) is None
    changed = bytearray(raw)
    changed[8] = 9  # sample 4 = (row 1, column 1)
    assert first_difference(bytes(changed), planes, 10) == (0, 1, 1, 9, 4)


# --- bit-exactness under the microscope: another legal evaluation order ----------------------

TILE = 5  # grid samples per upsampling tile side (before the halo)
# Grid samples of halo: taps reach 4 samples (T <= 8), so a crop edge spoils at most
# 9 (2^g - 1) rows of the dense latent next to it, fewer than 10 * 2^g.
UPS_HALO = 10
SYN_TILE = 7  # pixels per synthesis tile side


def _latents_reverse_grid_order(header, weights, substreams) -> list[np.ndarray]:
    """Each grid decoded alone (the others declared constant), last grid first, 1 thread.

    A version-2 stream with a cross-grid context has one legal grid order (coarsest
    first, v2 5.1): its grids are decoded together, on 1 thread instead of 2.
    """
    from coolchic_ref.latents import decode_latent_grids

    grids: list[np.ndarray | None] = [None] * header.n_grids
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        if header.cross_grids:
            return decode_latent_grids(header, weights, substreams)
        for g in reversed(range(header.n_grids)):
            alone = tuple(
                info
                if i == g
                else dataclasses.replace(info, latent_max=info.latent_min, substream_bytes=0)
                for i, info in enumerate(header.grids)
            )
            parts = [data if i == g else b"" for i, data in enumerate(substreams)]
            grids[g] = decode_latent_grids(
                dataclasses.replace(header, grids=alone), weights, parts
            )[g]
    finally:
        numba.set_num_threads(threads)
    return grids  # type: ignore[return-value]


def _bands(size: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(size, start + step)) for start in range(0, size, step)]


def _upsample_by_tiles(header, taps, grids: list[np.ndarray]) -> np.ndarray:
    """The dense latent channel by channel (last first), each from tiles of its grid
    (bottom-right first) cropped with a halo; the picture edges stay where they are."""
    from coolchic_ref.upsampling import upsample_to_dense

    height, width = header.height, header.width
    dense = np.empty((header.n_grids, height, width), dtype=np.int32)
    for g in reversed(range(header.n_grids)):
        rows_g, cols_g = grids[g].shape
        scale = 1 << g
        for r0, r1 in reversed(_bands(rows_g, TILE)):
            for c0, c1 in reversed(_bands(cols_g, TILE)):
                a, b = max(0, r0 - UPS_HALO), min(rows_g, r1 + UPS_HALO)
                c, d = max(0, c0 - UPS_HALO), min(cols_g, c1 + UPS_HALO)
                # A crop aligned on grid g keeps every level's parity; it ends at the
                # picture's edge only where the picture does.
                sub_h = height - a * scale if b == rows_g else (b - a) * scale
                sub_w = width - c * scale if d == cols_g else (d - c) * scale
                sub = dataclasses.replace(
                    header, height=sub_h, width=sub_w, grids=header.grids[: g + 1]
                )
                crops = [
                    np.zeros(grid_shape(sub_h, sub_w, level), dtype=np.int32) for level in range(g)
                ]
                crops.append(grids[g][a:b, c:d])
                out = upsample_to_dense(sub, taps, crops)[g]
                y0, y1 = r0 * scale, min(height, r1 * scale)
                x0, x1 = c0 * scale, min(width, c1 * scale)
                dense[g, y0:y1, x0:x1] = out[
                    y0 - a * scale : y1 - a * scale, x0 - c * scale : x1 - c * scale
                ]
    return dense


def _synthesis_by_tiles(header, weights, dense: np.ndarray) -> np.ndarray:
    """The synthesis on tiles (bottom-right first) cropped with a halo of the stack's reach."""
    from coolchic_ref.synthesis import run_synthesis

    halo = sum(layer.kernel // 2 for layer in header.syn_layers)
    height, width = header.height, header.width
    out = np.empty((header.n_channels, height, width), dtype=np.int32)
    for y0, y1 in reversed(_bands(height, SYN_TILE)):
        for x0, x1 in reversed(_bands(width, SYN_TILE)):
            a, b = max(0, y0 - halo), min(height, y1 + halo)
            c, d = max(0, x0 - halo), min(width, x1 + halo)
            sub = dataclasses.replace(header, height=b - a, width=d - c)
            part = run_synthesis(sub, weights, np.ascontiguousarray(dense[:, a:b, c:d]))
            out[:, y0:y1, x0:x1] = part[:, y0 - a : y1 - a, x0 - c : x1 - c]
    return out


def decode_in_another_order(data: bytes) -> list[np.ndarray]:
    """Decode with the decoder's own stage functions in a different, legal order."""
    header = parse_header(data)
    view = memoryview(data)
    start = header.header_bytes
    weights = read_weights(header, view[start : start + header.weights_bytes])
    substreams = [
        view[offset : offset + grid.substream_bytes]
        for offset, grid in zip(header.substream_offsets, header.grids, strict=True)
    ]
    grids = _latents_reverse_grid_order(header, weights.arm, substreams)
    dense = _upsample_by_tiles(header, weights.ups_taps, grids)
    synthesis = _synthesis_by_tiles(header, weights.synthesis, dense)
    planes = []
    for channel in reversed(range(header.n_channels)):
        plane = synthesis[channel]
        if header.color_format == ColorFormat.YUV420 and channel > 0:
            plane = chroma.reduce_chroma_420(plane)
        planes.insert(0, samples.to_samples(plane, header.bit_depth))
    return planes


@pytest.mark.parametrize("entry", VALID, ids=entry_id)
def test_evaluation_order_does_not_matter(entry: dict) -> None:
    planes = decode_in_another_order(stream_bytes(entry))
    raw = samples.canonical_raw_bytes(planes, entry["bit_depth"])
    assert first_difference(expected_raw(entry), planes, entry["bit_depth"]) is None
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]


# --- independent agreement: the encoder's integer simulation ---------------------------------


@pytest.fixture(scope="module")
def tool():
    """tools/make_conformance.py (needs the encoder's NumPy side and constriction)."""
    pytest.importorskip("constriction")
    pytest.importorskip("coolchic_ref.encoder.integer_model")
    from tools import make_conformance

    return make_conformance


def _by_slug(slug: str) -> dict:
    return next(entry for entry in ENTRIES if entry_id(entry).split("-", 1)[1] == slug)


@pytest.mark.parametrize("entry", VALID, ids=entry_id)
def test_encoder_simulation_gives_every_hash(tool, entry: dict) -> None:
    """The stream read back without the reference decoder's weights reader and entropy
    decoder (the syntax table for the header, constriction + the encoder's integer ARM for
    the substreams), then simulated by the encoder: same samples, and the encoder's writer
    gives back the same bytes."""
    from coolchic_ref.encoder.bitstream import write_stream
    from coolchic_ref.encoder.integer_model import canonical_sha256, simulate_decode
    from tools.conformance.reading import read_codec, stream_layout

    data = stream_bytes(entry)
    codec = read_codec(data)
    assert canonical_sha256(simulate_decode(codec), codec.bit_depth) == entry["sha256"]
    if not stream_layout(data).empty_coded_grids:
        assert write_stream(codec) == data


@pytest.mark.parametrize("entry", [e for e in VALID if e["origin"] == "generator"], ids=entry_id)
def test_generator_cases_rebuild(tool, entry: dict) -> None:
    """tools/make_conformance.py rebuilds each generator-made stream byte for byte from its
    recipe, and the encoder's simulation of the recipe's codec gives the manifest hash."""
    from coolchic_ref.encoder.integer_model import canonical_sha256, simulate_decode

    slug = entry_id(entry).split("-", 1)[1]
    case = next(case for case in tool.ALL_GENERATOR_CASES if case.slug == slug)
    data, codec = tool.case_stream(case)
    assert data == stream_bytes(entry)
    assert canonical_sha256(simulate_decode(codec), codec.bit_depth) == entry["sha256"]
    assert entry["recipe"] == tool.case_recipe(case)


def test_invalid_cases_rebuild(tool) -> None:
    for case in tool.ALL_INVALID_CASES:
        entry = _by_slug(case.slug)
        base = stream_bytes(_by_slug(case.base))
        assert tool.case_invalid_stream(case, base) == stream_bytes(entry)
        assert entry["reject"] == {"rule": case.rule, "error": case.error}
        assert entry["recipe"] == tool.case_recipe(case)


def test_suite_covers_every_required_feature(tool) -> None:
    covered = set()
    for entry in VALID:
        covered |= set(entry["features"])
    assert not tool.REQUIRED_FEATURES - covered
    assert {entry["origin"] for entry in VALID} == {"generator", "encoder"}
    assert {entry["reject"]["rule"] for entry in INVALID} == set(range(1, 8))
