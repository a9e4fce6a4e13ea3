"""Encoder's writer + simulation against the reference decoder, bit for bit.

Random integer codecs go through `write_stream`; the reference decoder
(`coolchic_ref.decode`) must output exactly the planes that the encoder's own
integer simulation (`simulate_decode`) predicts. The two are independent
implementations of spec bitstream-v1.md, so agreement on every case below is
the evidence that the spec is complete. Further tests decode in subprocesses
to check that the pure-Python path (NUMBA_DISABLE_JIT=1) and the thread count
do not change the samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import coolchic_ref
from coolchic_ref.encoder.bitstream import IntegerCodec, write_stream
from coolchic_ref.encoder.integer_model import canonical_raw_bytes, simulate_decode
from coolchic_ref.encoder.random_codec import random_codec

BENCH_ARM = "16-1-linear-relu,16-1-linear-relu,2-1-linear-none"
BENCH_SYN = "32-1-linear-relu,16-1-linear-relu,3-3-linear-relu,3-3-residual-none"

# (case id, seed, random_codec options). Every option left out is drawn at random.
CASES = [
    ("1x1-grey-8b-1grid", 1, dict(width=1, height=1, n_grids=1, color_format=0, bit_depth=8)),
    ("1x1-rgb-7grids", 2, dict(width=1, height=1, n_grids=7, color_format=1)),
    ("1x37-yuv420-10b-r3", 3, dict(width=1, height=37, n_grids=5, color_format=3, bit_depth=10,
                                   n_ctx_rowcol=3)),
    ("41x1-yuv444-16b-r2", 4, dict(width=41, height=1, n_grids=6, color_format=2, bit_depth=16,
                                   n_ctx_rowcol=2)),
    ("3x5-yuv420-8b-r3", 5, dict(width=3, height=5, n_grids=3, color_format=3, bit_depth=8,
                                 n_ctx_rowcol=3)),
    ("2x9-narrower-than-context", 6, dict(width=2, height=9, n_grids=2, n_ctx_rowcol=3)),
    ("5x2-r3", 7, dict(width=5, height=2, n_grids=2, n_ctx_rowcol=3, color_format=0)),
    ("37x29-rgb-12b-7grids", 8, dict(width=37, height=29, n_grids=7, color_format=1,
                                      bit_depth=12)),
    ("33x17-yuv420-odd", 9, dict(width=33, height=17, n_grids=4, color_format=3)),
    ("r1-grey-9b", 10, dict(width=20, height=13, n_ctx_rowcol=1, color_format=0, bit_depth=9)),
    ("r2-rgb-11b", 11, dict(width=19, height=14, n_ctx_rowcol=2, color_format=1, bit_depth=11)),
    ("r3-yuv444-15b", 12, dict(width=18, height=15, n_ctx_rowcol=3, color_format=2,
                               bit_depth=15)),
    ("all-kernels-residual", 13, dict(
        width=23, height=11, n_grids=3, color_format=1,
        syn="6-7-linear-relu,6-5-residual-leakyrelu,4-3-linear-none,4-1-residual-relu,"
            "3-3-linear-leakyrelu,3-7-residual-none")),
    ("arm-residual-activations", 14, dict(
        width=17, height=12, n_ctx_rowcol=2,
        arm="12-1-residual-leakyrelu,8-1-linear-relu,8-1-residual-none,2-1-linear-leakyrelu")),
    ("arm-relu-output", 15, dict(width=15, height=10, arm="5-1-linear-none,2-1-linear-relu")),
    ("syn-64-wide", 16, dict(width=12, height=8, n_grids=2, color_format=0,
                             syn="64-1-linear-relu,64-1-residual-leakyrelu,1-3-linear-none")),
    ("taps-1", 17, dict(width=14, height=9, n_grids=4, ups_taps=1)),
    ("taps-8", 18, dict(width=14, height=9, n_grids=4, ups_taps=8)),
    ("constant-grids", 19, dict(width=16, height=11, n_grids=5, constant_grids=[0, 2, 3])),
    ("all-grids-constant", 20, dict(width=9, height=6, n_grids=3, constant_grids=[0, 1, 2])),
    ("wide-alphabet", 21, dict(width=10, height=7, n_grids=2, latent_range=32767)),
    ("full-range-weights", 22, dict(width=13, height=9, weight_range=32767)),
    ("extreme-r1", 23, dict(width=7, height=6, n_ctx_rowcol=1, extreme=True)),
    ("extreme-r2-yuv420", 24, dict(width=6, height=5, n_ctx_rowcol=2, color_format=3,
                                   extreme=True)),
    ("extreme-r3-16b", 25, dict(width=5, height=7, n_ctx_rowcol=3, bit_depth=16, extreme=True)),
    ("extreme-constant", 26, dict(width=4, height=4, n_grids=3, extreme=True,
                                  constant_grids=[1])),
    ("extreme-max-shifts", 27, dict(width=5, height=3, n_grids=2, extreme=True,
                                    shifts=dict(arm_w_shift=16, arm_b_shift=24, ups_shift=16,
                                                syn_w_shift=16, syn_b_shift=28))),
    ("extreme-zero-shifts", 28, dict(width=5, height=3, n_grids=2, extreme=True,
                                     shifts=dict(arm_w_shift=0, arm_b_shift=0, ups_shift=0,
                                                 syn_w_shift=0, syn_b_shift=0))),
    ("bench-like-64x48", 29, dict(width=64, height=48, n_grids=7, color_format=1, bit_depth=8,
                                  n_ctx_rowcol=2, arm=BENCH_ARM, syn=BENCH_SYN, ups_taps=4)),
]  # fmt: skip


def assert_same_planes(decoded: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Equal planes; on a difference, name the first differing sample."""
    assert len(decoded) == len(expected), "number of planes"
    for index, (got, want) in enumerate(zip(decoded, expected, strict=True)):
        assert got.shape == want.shape, f"plane {index}: shape {got.shape} != {want.shape}"
        diff = np.argwhere(np.asarray(got, np.int64) != np.asarray(want, np.int64))
        if diff.size:
            y, x = diff[0]
            raise AssertionError(
                f"plane {index}: {len(diff)} samples differ, first at row {y} col {x}: "
                f"decoder {got[y, x]}, simulation {want[y, x]}"
            )


def roundtrip(codec: IntegerCodec) -> bytes:
    data = write_stream(codec)
    image = coolchic_ref.decode(data)
    expected = simulate_decode(codec)
    assert_same_planes(image.planes, expected)
    assert image.raw_bytes() == canonical_raw_bytes(expected, codec.bit_depth)
    return data


@pytest.mark.parametrize("seed, options", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_roundtrip_case(seed: int, options: dict) -> None:
    roundtrip(random_codec(np.random.default_rng(seed), **options))


@pytest.mark.parametrize("seed", range(24))
def test_roundtrip_random(seed: int) -> None:
    """Fully random codecs: sizes up to 48x48, every architecture choice drawn."""
    rng = np.random.default_rng(1000 + seed)
    extreme = seed % 6 == 5
    options = (
        dict(width=int(rng.integers(1, 12)), height=int(rng.integers(1, 12))) if extreme else {}
    )
    roundtrip(random_codec(rng, extreme=extreme, **options))


# ---------------------------------------------------------------------------
# Same samples without JIT and for any thread count (fresh processes)

_DECODE_SCRIPT = """
import hashlib, json, sys
import numba
import coolchic_ref
hashes = []
for path in sys.argv[1:]:
    image = coolchic_ref.decode(open(path, "rb").read())
    hashes.append(hashlib.sha256(image.raw_bytes()).hexdigest())
print(json.dumps(dict(hashes=hashes, no_jit=bool(numba.config.DISABLE_JIT),
                      threads=numba.get_num_threads())))
"""


def _decode_in_subprocess(paths: list[Path], **env: str) -> dict:
    """Decode in a fresh process with `env` added: {hashes, no_jit, threads}."""
    result = subprocess.run(
        [sys.executable, "-c", _DECODE_SCRIPT, *map(str, paths)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _streams(tmp_path: Path, cases: list[tuple[int, dict]]) -> tuple[list[Path], list[str]]:
    """Write the streams of `cases`; return their paths and the simulation's hashes."""
    paths, hashes = [], []
    for index, (seed, options) in enumerate(cases):
        codec = random_codec(np.random.default_rng(seed), **options)
        path = tmp_path / f"case{index}.cool"
        path.write_bytes(write_stream(codec))
        paths.append(path)
        raw = canonical_raw_bytes(simulate_decode(codec), codec.bit_depth)
        hashes.append(hashlib.sha256(raw).hexdigest())
    return paths, hashes


def test_no_jit_decoder_gives_same_samples(tmp_path: Path) -> None:
    """The pure-Python path of the Numba kernels (NUMBA_DISABLE_JIT=1), small pictures."""
    paths, expected = _streams(
        tmp_path,
        [
            (40, dict(width=9, height=7, n_grids=3, color_format=3, bit_depth=10, n_ctx_rowcol=2,
                      arm="6-1-linear-relu,2-1-linear-none",
                      syn="4-3-linear-leakyrelu,3-1-linear-none")),
            (41, dict(width=6, height=5, n_grids=2, color_format=1, extreme=True,
                      extreme_latents=False, latent_range=300,
                      arm="2-1-linear-none", syn="3-3-linear-relu,3-1-residual-none")),
            (43, dict(width=2, height=2, n_grids=1, color_format=0, extreme=True,
                      arm="2-1-linear-none", syn="1-1-linear-none")),
            (44, dict(width=12, height=10, n_grids=5, color_format=2, bit_depth=16,
                      n_ctx_rowcol=3, arm="4-1-linear-leakyrelu,2-1-linear-none",
                      syn="3-5-linear-relu,3-3-residual-leakyrelu", ups_taps=8)),
            (42, dict(width=3, height=1, n_grids=2, color_format=0, constant_grids=[1],
                      syn="1-5-linear-none")),
        ],
    )  # fmt: skip
    jitted = [hashlib.sha256(coolchic_ref.decode(p.read_bytes()).raw_bytes()).hexdigest()
              for p in paths]  # fmt: skip
    assert jitted == expected
    result = _decode_in_subprocess(paths, NUMBA_DISABLE_JIT="1")
    assert result["no_jit"]
    assert result["hashes"] == expected


def test_thread_count_does_not_change_samples(tmp_path: Path) -> None:
    paths, expected = _streams(
        tmp_path,
        [
            (50, dict(width=96, height=64, n_grids=7, color_format=1, n_ctx_rowcol=2,
                      arm=BENCH_ARM, syn=BENCH_SYN, ups_taps=4)),
            (51, dict(width=61, height=37, n_grids=5, color_format=3, bit_depth=10)),
            (52, dict(width=23, height=19, n_grids=4, extreme=True)),
        ],
    )  # fmt: skip
    one = _decode_in_subprocess(paths, NUMBA_NUM_THREADS="1")
    two = _decode_in_subprocess(paths, NUMBA_NUM_THREADS="2")
    assert (one["threads"], two["threads"]) == (1, 2)
    assert one["hashes"] == two["hashes"] == expected


def test_gen_stream_tool(tmp_path: Path) -> None:
    """tools/gen_stream.py writes a stream whose printed hash the decoder reproduces."""
    tool = Path(__file__).resolve().parent.parent / "tools" / "gen_stream.py"
    out = tmp_path / "gen.cool"
    args = ["--width", "13", "--height", "7", "--grids", "3", "--color-format", "3"]
    args += ["--bit-depth", "10", "--ctx", "2", "--seed", "5", "--sha256", "-o", str(out)]
    result = subprocess.run(
        [sys.executable, str(tool), *args], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    expected = result.stdout.strip().splitlines()[-1]
    image = coolchic_ref.decode(out.read_bytes())
    assert (image.width, image.height, image.bit_depth) == (13, 7, 10)
    assert hashlib.sha256(image.raw_bytes()).hexdigest() == expected
    bad = subprocess.run(
        [sys.executable, str(tool), "--syn", "3-2-linear-none", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "kernel" in bad.stderr
