"""The whole pipeline against independent implementations.

- hand-made streams (tests/handmade.py): the decoded latents are the coded ones;
- random streams from the encoder's writer: the decoded samples are bit-exact
  with the encoder's own integer simulation of the spec (skipped without the
  encoder's dependencies).
"""

from __future__ import annotations

import numpy as np
import pytest
from handmade import make_stream_with_latents

from coolchic_ref import decode
from coolchic_ref.latents import decode_latent_grids
from coolchic_ref.syntax import parse_header
from coolchic_ref.weights import read_weights


def sections(data: bytes):
    header = parse_header(data)
    start = header.header_bytes
    weights = read_weights(header, data[start : start + header.weights_bytes])
    substreams = [
        data[offset : offset + grid.substream_bytes]
        for offset, grid in zip(header.substream_offsets, header.grids, strict=True)
    ]
    return header, weights, substreams


@pytest.mark.parametrize("seed", range(6))
def test_handmade_latents_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data, latents = make_stream_with_latents(
        width=int(rng.integers(1, 24)),
        height=int(rng.integers(1, 24)),
        color_format=seed % 4,
        n_grids=int(rng.integers(1, 5)),
        seed=seed,
        mu_bias=int(rng.integers(-2, 3)),
        log_scale_bias=int(rng.integers(-1, 3)),
    )
    header, weights, substreams = sections(data)
    decoded = decode_latent_grids(header, weights.arm, substreams)
    assert len(decoded) == len(latents)
    for got, want in zip(decoded, latents, strict=True):
        assert got.dtype == np.int32 and np.array_equal(got, want)
    image = decode(data)
    assert (image.width, image.height) == (header.width, header.height)


def encoder_cases() -> list[tuple[int, bool]]:
    return [(seed, seed % 3 == 0) for seed in range(24)]


@pytest.mark.parametrize(("seed", "extreme"), encoder_cases())
def test_matches_encoder_simulation(seed: int, extreme: bool) -> None:
    pytest.importorskip("constriction")
    from coolchic_ref.encoder import integer_model as im
    from coolchic_ref.encoder.bitstream import write_stream
    from coolchic_ref.encoder.random_codec import random_codec

    rng = np.random.default_rng(1000 + seed)
    codec = random_codec(
        rng, width=int(rng.integers(1, 26)), height=int(rng.integers(1, 26)), extreme=extreme
    )
    data = write_stream(codec)
    image = decode(data)
    planes = im.simulate_decode(codec)
    assert len(image.planes) == len(planes)
    for got, want in zip(image.planes, planes, strict=True):
        assert got.shape == want.shape
        assert np.array_equal(got.astype(np.int64), np.asarray(want, dtype=np.int64))
    assert image.sha256() == im.canonical_sha256(planes, codec.bit_depth)
