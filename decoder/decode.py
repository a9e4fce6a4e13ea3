"""The decoding pipeline, in the order the data flows (spec section 1).

header -> weights -> latents -> upsampling -> synthesis -> samples
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from . import samples
from .syntax import ColorFormat, StreamHeader, parse_header
from .weights import read_weights

STAGES = ("header+weights", "latents", "upsampling", "synthesis", "samples")


@dataclass
class DecodedImage:
    """A decoded picture.

    planes: grey [Y]; RGB [R, G, B]; YUV [Y, U, V] (U, V at ceil(W/2) x ceil(H/2)
    for 4:2:0); 2-D arrays, uint8 if bit_depth == 8, else uint16.
    """

    planes: list[np.ndarray]
    bit_depth: int
    color_format: ColorFormat
    width: int
    height: int
    header: StreamHeader

    def raw_bytes(self) -> bytes:
        """Canonical raw samples (spec 8.3)."""
        return samples.canonical_raw_bytes(self.planes, self.bit_depth)

    def sha256(self) -> str:
        """SHA-256 (hex) of the canonical raw samples, as in the conformance manifest."""
        return samples.sha256_hex(self.planes, self.bit_depth)


def decode(data: bytes, timings: dict[str, float] | None = None) -> DecodedImage:
    """Decode one stream into its picture.

    Raises StreamError (one-line message) for any stream spec section 9 rejects;
    the header and all section lengths are checked before any picture-sized work.
    If `timings` is given, it receives the wall seconds of each stage of STAGES.
    """
    # The Numba kernels are imported on first use, not with the package, so that
    # `import coolchic_ref`, `coolchic-ref --help` and `coolchic-ref info` do not
    # pay for importing Numba (about 0.4 s).
    from .latents import decode_latent_grids
    from .synthesis import run_synthesis
    from .upsampling import upsample_to_dense

    data = bytes(data)
    clock = time.perf_counter
    start = clock()
    header = parse_header(data)
    view = memoryview(data)
    weights_start = header.header_bytes
    weights_end = weights_start + header.weights_bytes
    weights = read_weights(header, view[weights_start:weights_end])
    substreams = [
        view[offset : offset + grid.substream_bytes]
        for offset, grid in zip(header.substream_offsets, header.grids, strict=True)
    ]
    marks = [clock()]

    latent_grids = decode_latent_grids(header, weights.arm, substreams)
    marks.append(clock())
    dense = upsample_to_dense(header, weights.ups_taps, latent_grids)
    del latent_grids
    marks.append(clock())
    synthesis_out = run_synthesis(header, weights.synthesis, dense)
    del dense
    marks.append(clock())
    planes = samples.make_planes(header, synthesis_out)
    marks.append(clock())

    if timings is not None:
        previous = start
        for stage, mark in zip(STAGES, marks, strict=True):
            timings[stage] = mark - previous
            previous = mark
    return DecodedImage(
        planes=planes,
        bit_depth=header.bit_depth,
        color_format=header.color_format,
        width=header.width,
        height=header.height,
        header=header,
    )
