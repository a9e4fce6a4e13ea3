"""Decoder benchmark: time per stage and total, warm and cold, as a table.

    python tools/bench_decode.py [--runs 15] [--width 768 --height 512] [--stream x.cool]
                                 [--cross-grids C] [--process-runs 3] [--no-cold]

Without --stream it generates a 768x512 RGB stream with 7 grids at about 2000
MAC per pixel (random integer weights, Laplace-distributed latents) with the
encoder's stream writer. Reported figures:

- in-process warm decode, per stage (median of --runs runs);
- `coolchic-ref decode` as a fresh process, cold (empty Numba cache) and warm
  (cache filled), wall time, median of --process-runs runs (--no-cold: warm only,
  the cache then filled by one untimed run; 0: in-process only). The process is `python -m
  coolchic_ref` with this interpreter, so it runs the same package as the
  in-process figures, whatever `coolchic-ref` is first on PATH.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("header+weights", "latents", "upsampling", "synthesis", "samples")

# About 2000 MAC per pixel: ARM 640 (480 per latent x 1.33 latents per pixel),
# upsampling about 60, synthesis 1249.
ARM_LAYERS = "16-1-linear-relu,16-1-linear-relu,2-1-linear-none"
SYN_LAYERS = "32-1-linear-relu,16-1-linear-relu,3-3-linear-relu,3-3-residual-none"


def make_stream(width: int, height: int, seed: int, cross_grids: int = 0) -> bytes:
    """A synthetic but realistic stream: Laplace(0, 1) latents, small random weights."""
    from coolchic_ref.encoder.bitstream import IntegerCodec, parse_layers, write_stream

    rng = np.random.default_rng(seed)
    arm_layers = parse_layers(ARM_LAYERS)
    syn_layers = parse_layers(SYN_LAYERS)
    n_grids, n_ctx_rowcol = 7, 2

    def layer_weights(layers, first_in, kernel_dims):
        weights, in_channels = [], first_in
        for layer in layers:
            shape = (layer.out_channels, in_channels) + (layer.kernel,) * kernel_dims
            w = rng.integers(-24, 25, size=shape)
            b = rng.integers(-64, 65, size=layer.out_channels)
            weights.append((w, b))
            in_channels = layer.out_channels
        return weights

    # Version 2 when cross_grids > 0: the ARM also reads C coarser grids (v2 5.2a).
    arm_inputs = 2 * n_ctx_rowcol * (n_ctx_rowcol + 1) + cross_grids
    arm_weights = layer_weights(arm_layers, arm_inputs, 0)
    arm_weights[-1][1][:] = 0  # mu near 0, log-scale near 0: scale near 1
    latents = []
    for level in range(n_grids):
        shape = (-(-height // 2**level), -(-width // 2**level))
        latents.append(np.clip(np.rint(rng.laplace(0.0, 1.0, size=shape)), -20, 20).astype(int))
    codec = IntegerCodec(
        color_format=1,
        bit_depth=8,
        width=width,
        height=height,
        n_ctx_rowcol=n_ctx_rowcol,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_weights=arm_weights,
        ups_taps=np.array([150, 60, -20, -8]),
        syn_weights=layer_weights(syn_layers, n_grids, 2),
        arm_w_shift=8,
        arm_b_shift=8,
        ups_shift=8,
        syn_w_shift=8,
        syn_b_shift=12,
        latents=latents,
        version=2 if cross_grids else 1,
        cross_grids=cross_grids,
    )
    return write_stream(codec)


def time_in_process(data: bytes, runs: int) -> dict[str, float]:
    """Median seconds per stage and in total over `runs` warm decodes."""
    from coolchic_ref import decode

    decode(data)  # compile or load the cached kernels
    samples: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for _ in range(runs):
        timings: dict[str, float] = {}
        start = time.perf_counter()
        decode(data, timings=timings)
        samples["total"].append(time.perf_counter() - start)
        for stage in STAGES:
            samples[stage].append(timings.get(stage, float("nan")))
    return {stage: statistics.median(values) for stage, values in samples.items()}


def time_process(stream: Path, runs: int, cache_dir: Path, cold: bool) -> float:
    """Median wall seconds of `coolchic-ref decode` in a fresh process."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    walls = []
    with tempfile.TemporaryDirectory() as out_dir:
        for _ in range(runs):
            if cold:
                for cached in cache_dir.rglob("*"):
                    if cached.is_file():
                        cached.unlink()
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "coolchic_ref", "decode", str(stream)]
                + ["-o", f"{out_dir}/out.png", "--quiet"],
                check=True,
                env=env,
            )
            walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", type=Path, help="benchmark this stream instead")
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cross-grids", type=int, default=0, help="version-2 stream with this C (0: version 1)"
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--process-runs", type=int, default=3, help="0: in-process only")
    parser.add_argument(
        "--no-cold", action="store_true", help="skip the cold (empty Numba cache) process runs"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if args.stream:
            data = args.stream.read_bytes()
            stream = args.stream
        else:
            data = make_stream(args.width, args.height, args.seed, args.cross_grids)
            stream = work_dir / "bench.cool"
            stream.write_bytes(data)

        from coolchic_ref import decode
        from coolchic_ref.info import stream_info

        info = stream_info(data)
        image = decode(data)
        print(
            f"stream: {image.width}x{image.height}, {len(data)} bytes, "
            f"{len(data) * 8 / (image.width * image.height):.3f} bpp"
        )
        mac = info["mac_per_pixel"]
        print("MAC/pixel: " + ", ".join(f"{k} {v:.0f}" for k, v in mac.items()))

        cache_dir = work_dir / "numba-cache"
        cold = warm_process = float("nan")
        if args.process_runs >= 1:
            if args.no_cold:
                time_process(stream, 1, cache_dir, cold=False)  # fills the cache
            else:
                cold = time_process(stream, args.process_runs, cache_dir, cold=True)
            warm_process = time_process(stream, args.process_runs, cache_dir, cold=False)
        stages = time_in_process(data, args.runs)

    print()
    print(f"in-process warm decode, median of {args.runs} runs")
    print("| stage | ms |")
    print("|---|---:|")
    for stage in (*STAGES, "total"):
        print(f"| {stage} | {stages[stage] * 1000:.1f} |")
    if args.process_runs < 1:
        return 0
    print()
    print(f"`coolchic-ref decode` as a fresh process, median of {args.process_runs} runs")
    print("| start | s |")
    print("|---|---:|")
    print(f"| cold (empty Numba cache) | {cold:.2f} |")
    print(f"| warm (cached kernels) | {warm_process:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
