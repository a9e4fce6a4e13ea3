"""Peak memory (RSS) of short encodes at several picture sizes, and a fit fixed + per pixel.

    python tools/bench_memory.py [--sizes 256x256,768x512,1024x1024] [--ops 500,1000,2000,3000]
                                 [--preset instant] [--n-itr 3] [--image kodim01.png]

Each encode is `coolchic-ref encode` in its own process (the command a user runs,
closed-loop check included) on a picture tiled from --image to the size asked for;
its peak RSS is the kernel's figure for that child (os.wait4, ru_maxrss). For each
operating point the least-squares line peak = fixed + bytes_per_pixel x pixels is
printed: the figures behind `encoder/memory.py`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parent / "sample" / "kodim23-crop256.png"


def peak_rss_of(cmd: list[str]) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of a command run to completion; raises on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit code {proc.returncode}: {stderr.strip()}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def tiled_picture(image: Path, width: int, height: int, target: Path) -> None:
    import imageio.v3 as iio

    tile = np.asarray(iio.imread(image))[:, :, :3]
    reps = (-(-height // tile.shape[0]), -(-width // tile.shape[1]), 1)
    iio.imwrite(target, np.tile(tile, reps)[:height, :width])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="256x256,768x512,1024x1024", help="WxH,WxH,...")
    parser.add_argument("--ops", default="500,1000,2000,3000", help="operating points")
    parser.add_argument("--preset", default="instant")
    parser.add_argument("--n-itr", type=int, default=3, help="phase-1 iterations (default 3)")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="picture to tile")
    parser.add_argument("--encoder-cmd", default=f"{sys.executable} -m coolchic_ref")
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    ops = [op.strip() for op in args.ops.split(",") if op.strip()]
    print("op\twidth\theight\tpixels\tpeak_rss_mb\tseconds", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        results: dict[str, list[tuple[int, int]]] = {}
        for width, height in sizes:
            picture = Path(tmp) / f"picture_{width}x{height}.png"
            tiled_picture(args.image, width, height, picture)
            for op in ops:
                cmd = [*args.encoder_cmd.split(), "encode", str(picture), "-o",
                       str(Path(tmp) / "out.cool"), "--preset", args.preset, "--n_itr",
                       str(args.n_itr), "--op", op, "-q"]  # fmt: skip
                peak, seconds = peak_rss_of(cmd)
                results.setdefault(op, []).append((width * height, peak))
                print(f"{op}\t{width}\t{height}\t{width * height}\t{peak / 2**20:.0f}\t"
                      f"{seconds:.1f}", flush=True)  # fmt: skip
    for op, points in results.items():
        if len(points) < 2:
            continue
        pixels, peaks = np.array(points, dtype=np.float64).T
        per_pixel, fixed = np.polyfit(pixels, peaks, 1)
        print(f"op {op}: peak RSS = {fixed / 2**20:.0f} MB + {per_pixel:.0f} B x pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
