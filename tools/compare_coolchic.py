"""Side by side: coolchic-ref and Cool-chic 5.0.1 on the same pictures, lambdas and iterations.

    python -m tools.compare_coolchic --images /work/shared/data/kodak/kodim0{1,2,3,4}.png \\
        --crop 256 --lmbdas 0.001,0.004 --presets fast --coolchic-itr 2000 \\
        --coolchic CHECKOUT --coolchic-python VENV/bin/python \\
        --results tools/results/compare-coolchic.tsv

Cool-chic 5.0.1 is not vendored. Make its checkout and a CPU venv once:

    git clone https://github.com/Orange-OpenSource/Cool-Chic CHECKOUT
    git -C CHECKOUT checkout a6fe38a            # 5.0.1
    bash ../shared/tools/coolchic5-venv.sh CHECKOUT VENV

(the venv script installs the CPU build of torch and a torchvision stub that is enough for
MSE image coding.)

Every encode runs in a subprocess, one at a time (two encodes timed at once would share the
cores and both timings would be wrong), with the same number of threads for both encoders.
The figures are measured, not claimed: bpp is the stream's size x 8 / pixels, PSNR (RGB,
8-bit, peak 255) and MSE (on samples in [0, 1], as both encoders' losses) are computed here
from the PNG each encoder's own decoder wrote, and RD cost = MSE + lambda * bpp.

Resumable: one row per finished encode is appended and fsynced; rows already in the
results file are skipped. `--table` prints the comparison of what the results file holds.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shlex
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from tools.rd_eval import center_crop, mse, read_image

COLUMNS: tuple[str, ...] = (
    "encoder",
    "config",
    "image",
    "lmbda",
    "seed",
    "iterations",
    "bytes",
    "bpp",
    "psnr_rgb",
    "mse",
    "rd_cost",
    "encode_wall_seconds",
    "decode_wall_seconds",
    "threads",
    "revision",
    "finished_utc",
)
OURS = "coolchic-ref"
THEIRS = "coolchic-5.0.1"


@dataclass(frozen=True)
class Job:
    """One encode: an encoder with its configuration, a picture, a lambda and a seed."""

    encoder: str  # OURS or THEIRS
    config: str  # our preset name (plus extra args) or Cool-chic's decoder cfg + n_itr
    image: Path
    lmbda: float
    seed: int
    iterations: int
    revision: str  # our git revision (ours), Cool-chic's checkout revision (theirs)

    @property
    def key(self) -> tuple[str, ...]:
        return (self.encoder, self.config, self.image.stem, f"{self.lmbda:g}", str(self.seed),
                self.revision)  # fmt: skip

    @property
    def slug(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.config)
        return f"{self.image.stem}_l{self.lmbda:g}_s{self.seed}_{self.encoder}_{safe}"


def crop_picture(path: Path, size: int, out_dir: Path) -> Path:
    """Write the centred `size` x `size` crop (rd_eval's convention) as PNG; return its path."""
    out = out_dir / f"{path.stem}-crop{size}.png"
    if not out.exists():
        tmp = out.with_suffix(".tmp.png")
        iio.imwrite(tmp, center_crop(read_image(path), size)[..., :3])
        os.replace(tmp, out)
    return out


def rgb_mse(original: Path, decoded: Path) -> float:
    """MSE over all RGB samples, samples scaled to [0, 1] (8-bit pictures)."""
    reference, result = read_image(original)[..., :3], read_image(decoded)[..., :3]
    return mse(reference, result) / 255.0**2


def git_revision(path: Path) -> str:
    """Short commit of the checkout at `path`, with `+` when its tracked files are modified."""

    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", str(path), *cmd], capture_output=True, text=True).stdout

    revision = git("rev-parse", "--short=8", "HEAD").strip() or "unknown"
    return revision + ("+" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


def ours_iterations(preset: str) -> int:
    from coolchic_ref.encoder.presets import PRESETS

    return PRESETS[preset].total_itr


def run_timed(cmd: list[str], cwd: Path | None, env: dict[str, str], log: Path) -> float:
    """Run `cmd`, its output into `log`; return wall seconds; raise on a non-zero exit."""
    start = time.perf_counter()
    with open(log, "w") as log_file:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{shlex.join(cmd[:3])} ... exit {done.returncode}: {' | '.join(tail)}")
    return seconds


def run_job(job: Job, args: argparse.Namespace, work: Path) -> dict[str, str]:
    """Encode and decode one job; return its results row."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(args.threads)
    job_dir = work / job.slug
    (job_dir / "work").mkdir(parents=True, exist_ok=True)
    stream = job_dir / "stream.bin"
    decoded = job_dir / "decoded.png"
    image = job.image.resolve()
    if job.encoder == OURS:
        preset, _, extra = job.config.partition(" ")
        encode_cmd = [
            sys.executable, "-m", "coolchic_ref", "encode", str(image), "-o", str(stream),
            "--preset", preset, "--lmbda", f"{job.lmbda:g}", "--seed", str(job.seed),
            "--device", "cpu", "--workdir", str(job_dir / "work"), "-q",
            *shlex.split(extra),
        ]  # fmt: skip
        decode_cmd = [sys.executable, "-m", "coolchic_ref", "decode", str(stream), "-o",
                      str(decoded)]  # fmt: skip
        cwd = None
    else:
        cfg, n_itr = job.config.rsplit("@", 1)
        encode_cmd = [
            args.coolchic_python, "cc_encode.py", "-i", str(image), "-o", str(stream),
            "--workdir", str(job_dir / "work"), "--lmbda", f"{job.lmbda:g}",
            "--n_itr", n_itr, "--dec_cfg_residue", cfg,
        ]  # fmt: skip
        decode_cmd = [args.coolchic_python, "cc_decode.py", "-i", str(stream), "-o", str(decoded)]
        cwd = Path(args.coolchic)
    encode_seconds = run_timed(encode_cmd, cwd, env, job_dir / "encode.log")
    decode_seconds = run_timed(decode_cmd, cwd, env, job_dir / "decode.log")
    height, width = iio.imread(image).shape[:2]
    n_bytes = stream.stat().st_size
    bpp = 8.0 * n_bytes / (width * height)
    mean_square = rgb_mse(image, decoded)
    return {
        "encoder": job.encoder,
        "config": job.config,
        "image": job.image.stem,
        "lmbda": f"{job.lmbda:g}",
        "seed": str(job.seed),
        "iterations": str(job.iterations),
        "bytes": str(n_bytes),
        "bpp": f"{bpp:.6f}",
        "psnr_rgb": f"{-10.0 * math.log10(mean_square) if mean_square else math.inf:.4f}",
        "mse": f"{mean_square:.6e}",
        "rd_cost": f"{mean_square + job.lmbda * bpp:.6e}",
        "encode_wall_seconds": f"{encode_seconds:.1f}",
        "decode_wall_seconds": f"{decode_seconds:.2f}",
        "threads": str(args.threads),
        "revision": job.revision,
        "finished_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def append_row(path: Path, row: dict[str, str]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        if new:
            f.write("\t".join(COLUMNS) + "\n")
        f.write("\t".join(row[c] for c in COLUMNS) + "\n")
        f.flush()
        os.fsync(f.fileno())


def print_table(rows: list[dict[str, str]]) -> None:
    """Per (image, lambda): each configuration's figures; then mean RD cost per configuration
    over the (image, lambda) pairs that every configuration has, relative to Cool-chic."""
    by_point: dict[tuple[str, str], dict[str, list[dict[str, str]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        label = f"{row['encoder']} {row['config']}"
        if row["encoder"] == OURS:
            label += f" @{row['revision']}"
        by_point[(row["image"], row["lmbda"])][label].append(row)
    configs = sorted({c for point in by_point.values() for c in point})
    print("| image | lambda | encoder config | seeds | itr | bpp | PSNR dB | RD cost | enc s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (image, lmbda), point in sorted(by_point.items()):
        for config in configs:
            runs = point.get(config)
            if not runs:
                continue
            mean = {k: float(np.mean([float(r[k]) for r in runs])) for k in
                    ("bpp", "psnr_rgb", "rd_cost", "encode_wall_seconds")}  # fmt: skip
            print(
                f"| {image} | {lmbda} | {config} | {len(runs)} | {runs[0]['iterations']} "
                f"| {mean['bpp']:.4f} | {mean['psnr_rgb']:.2f} | {mean['rd_cost']:.4e} "
                f"| {mean['encode_wall_seconds']:.0f} |"
            )
    common = [p for p, point in by_point.items() if all(c in point for c in configs)]
    if not common or len(configs) < 2:
        return
    reference = next((c for c in configs if c.startswith(THEIRS)), configs[0])
    print(f"\nOn the {len(common)} (image, lambda) pairs all configurations have; "
          f"RD cost relative to {reference} (mean of per-pair ratios):")  # fmt: skip
    for config in configs:
        ratios, walls = [], []
        for p in common:
            ours = np.mean([float(r["rd_cost"]) for r in by_point[p][config]])
            ref = np.mean([float(r["rd_cost"]) for r in by_point[p][reference]])
            ratios.append(ours / ref)
            walls.extend(float(r["encode_wall_seconds"]) for r in by_point[p][config])
        print(
            f"  {config}: {100 * (np.mean(ratios) - 1):+.1f} % "
            f"(median encode {np.median(walls):.0f} s)"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", type=Path, default=[])
    parser.add_argument("--crop", type=int, default=0, help="centre crop size (0: whole picture)")
    parser.add_argument("--lmbdas", default="0.001,0.004")
    parser.add_argument("--presets", default="fast", help="our presets, comma separated")
    parser.add_argument("--ours-args", default="", help="extra arguments to our encoder")
    parser.add_argument("--seeds", default="0", help="our seeds, comma separated")
    parser.add_argument("--coolchic", help="Cool-chic 5.0.1 checkout")
    parser.add_argument("--coolchic-python", help="python of the Cool-chic venv")
    parser.add_argument("--coolchic-itr", default="2000", help="Cool-chic n_itr, comma sep.")
    parser.add_argument("--coolchic-cfg", default="cfg/dec/intra/hop.cfg")
    parser.add_argument("--encoders", default=f"{OURS},{THEIRS}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path("workdir/compare"))
    parser.add_argument("--results", type=Path, default=Path("tools/results/compare-coolchic.tsv"))
    parser.add_argument("--revision", help="our revision label (default: git commit)")
    parser.add_argument("--table", action="store_true", help="only print the results table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table:
        print_table(read_rows(args.results))
        return 0
    encoders = args.encoders.split(",")
    if THEIRS in encoders and not (args.coolchic and args.coolchic_python):
        print("error: Cool-chic needs --coolchic and --coolchic-python", file=sys.stderr)
        return 1
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = [crop_picture(p, args.crop, args.workdir) if args.crop else p for p in args.images]
    lmbdas = [float(v) for v in args.lmbdas.split(",")]
    ours_rev = (
        git_revision(Path(__file__).resolve().parent.parent)
        if args.revision is None
        else args.revision
    )
    theirs_rev = git_revision(Path(args.coolchic)) if THEIRS in encoders else ""
    jobs: list[Job] = []
    for image in images:
        for lmbda in lmbdas:
            if THEIRS in encoders:
                for n_itr in args.coolchic_itr.split(","):
                    config = f"{args.coolchic_cfg}@{n_itr}"
                    jobs.append(Job(THEIRS, config, image, lmbda, 0, int(n_itr), theirs_rev))
            if OURS in encoders:
                for preset in args.presets.split(","):
                    config = f"{preset} {args.ours_args}".strip()
                    for seed in args.seeds.split(","):
                        itr = ours_iterations(preset)
                        jobs.append(Job(OURS, config, image, lmbda, int(seed), itr, ours_rev))
    done = {tuple(r[c] for c in ("encoder", "config", "image", "lmbda", "seed", "revision"))
            for r in read_rows(args.results)}  # fmt: skip
    todo = [j for j in jobs if j.key not in done]
    print(f"{len(jobs) - len(todo)} of {len(jobs)} encodes already in {args.results}", flush=True)
    failed = 0
    for i, job in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {job.encoder} {job.config} {job.image.stem} "
              f"lambda {job.lmbda:g} seed {job.seed}", flush=True)  # fmt: skip
        try:
            row = run_job(job, args, args.workdir)
        except RuntimeError as error:
            print(f"  failed: {error}", flush=True)
            failed += 1
            continue
        append_row(args.results, row)
        print(f"  {row['bpp']} bpp, {row['psnr_rgb']} dB, RD cost {row['rd_cost']}, "
              f"{row['encode_wall_seconds']} s", flush=True)  # fmt: skip
    print_table(read_rows(args.results))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
