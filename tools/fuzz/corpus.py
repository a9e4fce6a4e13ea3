"""Seed streams, corpus directories and saved findings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tools.fuzz.layout import MAX_INPUT

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SEEDS = ROOT / "tests" / "fuzz_seeds"


def load_corpus(directory: Path | None, limit: int = 5000) -> list[bytes]:
    """Streams (*.cool and extension-less files) of a directory, smallest first."""
    if directory is None or not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in (".cool", "")]
    files.sort(key=lambda p: (p.stat().st_size, p.name))
    return [p.read_bytes()[:MAX_INPUT] for p in files[:limit]]


A1 = "2-1-linear-none"
A2 = "4-1-linear-relu,2-1-linear-none"
SEED_SPECS: list[dict] = [
    # Small pictures and small networks (at most a few hundred parameters, whose
    # reading is Python): a decode takes about a millisecond.
    dict(width=1, height=1, n_grids=1, arm=A1, syn="1-1-linear-none", color_format=0),
    dict(width=1, height=7, n_grids=2, arm=A1, syn="3-3-linear-none", color_format=1),
    dict(width=7, height=1, n_grids=3, arm=A2, syn="3-5-linear-none", color_format=2),
    dict(width=2, height=2, n_grids=2, arm=A1, syn="3-1-linear-none", color_format=3, bit_depth=10),
    dict(
        width=3,
        height=5,
        n_grids=1,
        n_ctx_rowcol=3,
        arm=A1,
        syn="1-3-linear-none",
        color_format=0,
        bit_depth=16,
    ),
    dict(
        width=8, height=8, n_grids=3, n_ctx_rowcol=1, arm=A2, syn="3-3-linear-none", color_format=1
    ),
    dict(
        width=13,
        height=9,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A2,
        syn="4-3-linear-leakyrelu,3-1-linear-none",
        color_format=3,
    ),
    dict(
        width=24,
        height=16,
        n_grids=3,
        n_ctx_rowcol=2,
        arm=A1,
        syn="4-1-linear-relu,3-3-linear-none",
        color_format=1,
    ),
    dict(
        width=24,
        height=16,
        n_grids=3,
        n_ctx_rowcol=1,
        arm="3-1-linear-leakyrelu,2-1-linear-none",
        syn="3-3-linear-none",
        color_format=3,
        bit_depth=12,
    ),
    dict(
        width=17,
        height=3,
        n_grids=2,
        n_ctx_rowcol=2,
        arm=A1,
        syn="1-1-linear-none",
        color_format=0,
        ups_taps=8,
    ),
    dict(
        width=16, height=8, n_grids=7, n_ctx_rowcol=1, arm=A1, syn="3-1-linear-none", color_format=1
    ),
    dict(
        width=5,
        height=6,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A2,
        syn="3-3-linear-none",
        color_format=1,
        extreme=True,
    ),
    dict(
        width=9,
        height=4,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A1,
        syn="2-1-linear-relu,1-3-linear-none",
        color_format=0,
        extreme=True,
        extreme_latents=False,
    ),
    dict(
        width=4,
        height=4,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A1,
        syn="3-3-linear-none",
        color_format=2,
        extreme=True,
    ),
    dict(
        width=11,
        height=7,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A1,
        syn="3-1-linear-none",
        color_format=1,
        constant_grids=(1,),
    ),
    dict(
        width=6,
        height=5,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A1,
        syn="1-3-linear-none",
        color_format=0,
        latent_range=300,
    ),
    dict(
        width=12,
        height=12,
        n_grids=2,
        color_format=1,
        n_ctx_rowcol=1,
        arm="4-1-residual-relu,3-1-linear-leakyrelu,2-1-linear-none",
        syn="3-3-linear-relu,3-3-residual-leakyrelu,3-1-residual-relu,3-7-linear-none",
    ),
    dict(
        width=10,
        height=10,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A2,
        syn="3-3-linear-none",
        color_format=1,
        weight_range=32767,
    ),
    dict(
        width=3,
        height=3,
        n_grids=1,
        color_format=0,
        n_ctx_rowcol=3,
        arm="24-1-residual-leakyrelu,2-1-linear-none",
        syn="1-7-linear-none",
    ),
    dict(
        width=20,
        height=2,
        n_grids=3,
        color_format=3,
        bit_depth=9,
        n_ctx_rowcol=1,
        arm=A1,
        syn="2-5-linear-relu,3-1-linear-none",
    ),
]


def make_seeds(directory: Path, seed: int = 20240) -> list[Path]:
    """Write the seed streams of SEED_SPECS (needs the encoder's stream writer)."""
    from coolchic_ref.encoder.bitstream import write_stream
    from coolchic_ref.encoder.random_codec import random_codec

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, spec in enumerate(SEED_SPECS):
        data = write_stream(random_codec(rng, **spec))
        path = directory / f"seed{index:02d}-{spec['width']}x{spec['height']}.cool"
        path.write_bytes(data)
        paths.append(path)
    return paths


def save_finding(crashes: Path, data: bytes, kind: str, info: dict) -> Path | None:
    """Write `data` and a JSON description under `crashes` (once per input)."""
    crashes.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = crashes / f"{kind}-{digest}.cool"
    if path.exists():
        return None
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"kind": kind, **info}, indent=2) + "\n")
    return path
