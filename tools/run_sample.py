"""Encode the bundled sample image, decode it with the reference decoder, report bpp and PSNR.

    python tools/run_sample.py [--preset fast] [--lmbda 0.004] [--out workdir/sample]

`fast` (about 2 minutes on 2 cores) is the default: on the bundled sample it beats
JPEG and WebP at equal rate; `--preset instant` takes about 15-20 s and beats JPEG only.

Both steps run the real command line (`coolchic-ref encode`, `coolchic-ref decode`);
the PSNR is measured here, on the decoded PNG against the original. When `imagecodecs`
is installed, JPEG's and WebP's PSNR at the same rate are printed beside it
(`tools/conventional_at_rate.py`).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tools" / "sample" / "kodim23-crop256.png"


def psnr_db(reference: np.ndarray, decoded: np.ndarray, max_value: float) -> float:
    """PSNR in dB over all samples and channels."""
    error = reference.astype(np.float64) - decoded.astype(np.float64)
    mse = float(np.mean(error * error))
    return math.inf if mse == 0 else 10 * math.log10(max_value * max_value / mse)


def run(command: list[str]) -> float:
    """Run a command, streaming its output; return its wall time in seconds."""
    print("$", " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=SAMPLE)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--lmbda", type=float, default=0.004)
    parser.add_argument("--out", type=Path, default=ROOT / "workdir" / "sample")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    stream = args.out / (args.image.stem + ".cool")
    decoded_png = args.out / (args.image.stem + "-decoded.png")
    cli = ["coolchic-ref"]
    encode_s = run(
        cli
        + ["encode", str(args.image), "-o", str(stream)]
        + ["--preset", args.preset, "--lmbda", str(args.lmbda)]
    )
    decode_s = run(cli + ["decode", str(stream), "-o", str(decoded_png)])

    original = iio.imread(args.image)
    decoded = iio.imread(decoded_png)
    height, width = original.shape[:2]
    bpp = stream.stat().st_size * 8 / (height * width)
    max_value = 255.0 if original.dtype == np.uint8 else 65535.0
    print()
    print(f"image    {args.image.name} ({width}x{height})")
    print(f"stream   {stream} ({stream.stat().st_size} bytes)")
    print(f"bpp      {bpp:.4f}")
    print(f"PSNR     {psnr_db(original, decoded, max_value):.2f} dB (RGB, 8-bit)")
    print(f"encode   {encode_s:.1f} s (preset {args.preset}, lambda {args.lmbda})")
    print(f"decode   {decode_s:.2f} s (fresh process)")
    print_conventional(original, bpp)
    return 0


def print_conventional(original: np.ndarray, bpp: float) -> None:
    """JPEG's and WebP's PSNR at `bpp` on the same picture, if imagecodecs is there."""
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        print("(install imagecodecs to compare with JPEG and WebP at the same rate)")
        return
    sys.path.insert(0, str(ROOT / "tools"))
    from conventional_at_rate import psnr_at_rate

    if original.ndim != 3 or original.shape[2] != 3 or original.dtype != np.uint8:
        return
    for codec in ("jpeg", "webp"):
        psnr = psnr_at_rate(original, bpp, codec)[0]
        shown = f"{psnr:.2f} dB" if math.isfinite(psnr) else "no setting reaches this rate"
        print(f"{codec:8s} {shown} at {bpp:.4f} bpp (imagecodecs, quality by bisection)")


if __name__ == "__main__":
    sys.exit(main())
