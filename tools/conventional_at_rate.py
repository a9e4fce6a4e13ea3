"""PSNR of JPEG, WebP and AVIF at a given rate, by bisection on their quality setting.

    python tools/conventional_at_rate.py IMAGE BPP [BPP ...] [--codecs jpeg,webp,avif]
        [--avif-speed 6]

For each codec (through `imagecodecs`: libjpeg 4:2:0 at its default settings, libwebp
lossy at method 6, libavif 4:4:4 at speed 6, or `--avif-speed`: 1 is slower and
better), the integer quality whose stream is the largest at or below the target rate
and the next one above are found by bisection (a codec's rate grows with its quality);
the RGB PSNR at the target rate is interpolated linearly in bpp between those two.
Prints one line per (image, rate, codec). A minimal companion of the encoder's
experiments; `tools/anchor_conventional.py` writes whole RD curves.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB of two uint8 arrays."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def codec_functions(name: str, avif_speed: int = 6) -> tuple[Callable, Callable, int, int]:
    """(encode(image, quality) -> bytes, decode(bytes) -> image, lowest, highest quality)."""
    import imagecodecs as ic

    if name == "jpeg":
        return (lambda im, q: ic.jpeg8_encode(im, level=q)), ic.jpeg8_decode, 1, 100
    if name == "webp":
        encode = lambda im, q: ic.webp_encode(im, level=q, lossless=False, method=6)  # noqa: E731
        return encode, ic.webp_decode, 0, 100
    if name == "avif":
        encode = lambda im, q: ic.avif_encode(  # noqa: E731
            im, level=q, speed=avif_speed, pixelformat="444"
        )
        return encode, ic.avif_decode, 0, 100
    raise ValueError(f"unknown codec {name!r}")


def psnr_at_rate(
    image: np.ndarray, bpp: float, codec: str, avif_speed: int = 6
) -> tuple[float, float, float]:
    """(PSNR at `bpp`, quality below, quality above); nan if the rate is out of range."""
    encode, decode, lo, hi = codec_functions(codec, avif_speed)
    pixels = image.shape[0] * image.shape[1]
    cache: dict[int, tuple[float, float]] = {}

    def point(q: int) -> tuple[float, float]:
        if q not in cache:
            stream = encode(image, q)
            cache[q] = (8.0 * len(stream) / pixels, psnr_db(image, decode(stream)))
        return cache[q]

    if not point(lo)[0] <= bpp <= point(hi)[0]:
        return math.nan, math.nan, math.nan
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if point(mid)[0] <= bpp:
            lo = mid
        else:
            hi = mid
    (r0, p0), (r1, p1) = point(lo), point(hi)
    t = 0.0 if r1 == r0 else (bpp - r0) / (r1 - r0)
    return p0 + t * (p1 - p0), lo, hi


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path)
    parser.add_argument("bpp", type=float, nargs="+")
    parser.add_argument("--codecs", default="jpeg,webp,avif")
    parser.add_argument("--avif-speed", type=int, default=6, help="libavif speed, 0-10")
    args = parser.parse_args(argv)
    import imageio.v3 as iio

    image = iio.imread(args.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        parser.error(f"{args.image}: expected an 8-bit RGB picture")
    print("image\tbpp\tcodec\tpsnr_db\tquality_below\tquality_above")
    for bpp in args.bpp:
        for codec in args.codecs.split(","):
            psnr, q0, q1 = psnr_at_rate(image, bpp, codec, args.avif_speed)
            print(f"{args.image.name}\t{bpp:.4f}\t{codec}\t{psnr:.2f}\t{q0:g}\t{q1:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
