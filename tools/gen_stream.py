"""Write a coolchic-ref stream from random (or chosen) integer parameters.

    python tools/gen_stream.py --width 64 --height 48 --grids 7 --color-format 1 \\
        --bit-depth 8 --ctx 2 --arm 16-1-linear-relu,2-1-linear-none \\
        --syn 16-1-linear-relu,3-3-linear-none --ups-taps 4 --seed 1 -o out.cool

Every option left out is drawn at random from --seed. `--extreme` puts
weights at +-32767/-32768 and latents at the int16 extremes (wrap-around and
clipping); `--sha256` also prints the SHA-256 of the canonical raw samples
that a conforming decoder must output (from the encoder's own integer
simulation). A thin command line over
`coolchic_ref.encoder.random_codec.random_codec`; needs NumPy and
constriction, not torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from coolchic_ref.encoder.bitstream import format_layers, write_stream
from coolchic_ref.encoder.integer_model import canonical_sha256, simulate_decode
from coolchic_ref.encoder.random_codec import random_codec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int)
    parser.add_argument("--height", type=int)
    parser.add_argument("--grids", type=int, help="number of latent grids, 1..7")
    parser.add_argument("--color-format", type=int, choices=range(4), help="0 grey, 1 RGB, "
                        "2 YUV 4:4:4, 3 YUV 4:2:0")  # fmt: skip
    parser.add_argument("--bit-depth", type=int, help="8..16")
    parser.add_argument("--ctx", type=int, choices=(1, 2, 3), help="ARM context radius r")
    parser.add_argument("--arm", help="ARM layers, e.g. 16-1-linear-relu,2-1-linear-none")
    parser.add_argument("--syn", help="synthesis layers, e.g. 16-1-linear-relu,3-3-linear-none")
    parser.add_argument("--ups-taps", type=int, help="number of coded upsampling taps T, 1..8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latent-range", type=int, help="latents within [-R, R]")
    parser.add_argument(
        "--weight-range", type=int, help="all parameters uniform in [-R, R] (default: trained-like)"
    )
    parser.add_argument("--extreme", action="store_true", help="int16-extreme weights, latents")
    parser.add_argument(
        "--constant-grids", default="", help="comma-separated indices of constant grids"
    )
    parser.add_argument("--sha256", action="store_true", help="print the expected sample hash")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    try:
        codec = random_codec(
            rng,
            width=args.width,
            height=args.height,
            n_grids=args.grids,
            color_format=args.color_format,
            bit_depth=args.bit_depth,
            n_ctx_rowcol=args.ctx,
            arm=args.arm,
            syn=args.syn,
            ups_taps=args.ups_taps,
            latent_range=args.latent_range,
            weight_range=args.weight_range,
            extreme=args.extreme,
            constant_grids=[int(g) for g in args.constant_grids.split(",") if g.strip()],
        )
        data = write_stream(codec)
    except ValueError as error:
        print(f"gen_stream: {error}", file=sys.stderr)
        return 2
    args.output.write_bytes(data)
    print(
        f"{args.output}: {len(data)} bytes, {codec.width}x{codec.height}, "
        f"color_format {codec.color_format}, {codec.bit_depth}-bit, {codec.n_grids} grids, "
        f"r={codec.n_ctx_rowcol}, T={len(codec.ups_taps)}, "
        f"arm {format_layers(codec.arm_layers)}, syn {format_layers(codec.syn_layers)}"
    )
    if args.sha256:
        print(canonical_sha256(simulate_decode(codec), codec.bit_depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
