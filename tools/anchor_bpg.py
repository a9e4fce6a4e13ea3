"""Measure a per-image BPG anchor (HEVC 4:4:4 in BPG) on Kodak with a local bpgenc.

    python -m tools.anchor_bpg --bpgenc /path/to/bpgenc --bpgdec /path/to/bpgdec \\
        --images ../shared/data/kodak/kodim0{1,2,3,4}.png --qps 20-51 \\
        --results tools/results/kodak-bpg444.tsv [--jobs 2]

The published BPG444 curve of `shared/anchors/kodak-published-rd.tsv` averages all
24 Kodak pictures; our RD runs cover a few. This tool measures BPG per picture with
the settings of that curve (BPG 0.9.8, x265, YCbCr 4:4:4, 8 bits, compression level 8,
`bpgenc -q QP -f 444 -e x265 -c ycbcr -b 8 -m 8`), so that `tools/bd_rate.py
--extra-anchors` can compare the same pictures. Run it on all 24 pictures once to
check that the build reproduces the published average.

bpp is the .bpg file size x 8 / pixels; PSNR is the RGB PSNR (MSE over all samples,
peak 255) of `bpgdec`'s PNG against the original. Rows are in the format of
`kodak-conventional.tsv` (codec, setting, image, bytes, bpp, psnr_rgb); the run is
resumable (rows already in the file are skipped) and each row is written durably.
bpgenc is not bundled: build libbpg 0.9.8 yourself (it needs yasm).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tools.rd_eval import ResultsWriter, decoded_psnr, read_image, read_results

CODEC = "BPG444-measured"
COLUMNS = ("codec", "setting", "image", "bytes", "bpp", "psnr_rgb")


def parse_qps(text: str) -> list[int]:
    """`20-51` or `22,27,32` (or both, comma-separated) as a sorted list of QPs 0..51."""
    qps: set[int] = set()
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 0 <= first <= last <= 51:
            raise ValueError(f"QP range {part!r}: need 0 <= first <= last <= 51")
        qps.update(range(first, last + 1))
    if not qps:
        raise ValueError("no QP given")
    return sorted(qps)


def measure(bpgenc: Path, bpgdec: Path, image: Path, qp: int) -> dict[str, object]:
    """Encode `image` at `qp`, decode it, and return one result row."""
    with tempfile.TemporaryDirectory(prefix="bpg-") as tmp:
        stream = Path(tmp) / "out.bpg"
        decoded = Path(tmp) / "out.png"
        encode = [str(bpgenc), "-o", str(stream), "-q", str(qp), "-f", "444", "-e", "x265"]
        encode += ["-c", "ycbcr", "-b", "8", "-m", "8", str(image)]
        subprocess.run(encode, check=True, capture_output=True)
        subprocess.run(
            [str(bpgdec), "-o", str(decoded), str(stream)], check=True, capture_output=True
        )
        height, width = read_image(image).shape[:2]
        n_bytes = stream.stat().st_size
        return {
            "codec": CODEC,
            "setting": str(qp),
            "image": image.stem,
            "bytes": n_bytes,
            "bpp": f"{n_bytes * 8 / (width * height):.6f}",
            "psnr_rgb": f"{decoded_psnr(image, decoded):.4f}",
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--bpgenc", type=Path, required=True, help="bpgenc of libbpg 0.9.8")
    parser.add_argument("--bpgdec", type=Path, required=True, help="bpgdec of libbpg 0.9.8")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="PNG pictures")
    parser.add_argument("--qps", default="20-51", help="QPs, e.g. 20-51 or 22,27,32")
    parser.add_argument("--results", type=Path, required=True, help="TSV to append rows to")
    parser.add_argument("--jobs", type=int, default=1, help="encodes at a time (default 1)")
    args = parser.parse_args(argv)
    try:
        qps = parse_qps(args.qps)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for tool in (args.bpgenc, args.bpgdec):
        if not tool.is_file():
            print(f"error: no such program {tool}", file=sys.stderr)
            return 2
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        print(f"error: no such image {', '.join(missing)}", file=sys.stderr)
        return 2
    writer = ResultsWriter(args.results, COLUMNS, required=COLUMNS)
    done = {
        (row["image"], row["setting"])
        for row in read_results(args.results, required=COLUMNS)
        if row["codec"] == CODEC
    }
    todo = [(i, q) for i in args.images for q in qps if (i.stem, str(q)) not in done]
    print(f"{len(todo)} encode(s) to run, {len(done)} already in {args.results}")

    def one(job: tuple[Path, int]) -> None:
        row = measure(args.bpgenc, args.bpgdec, *job)
        writer.append(row)
        print(f"{row['image']} qp {row['setting']}: {row['bpp']} bpp {row['psnr_rgb']} dB")

    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for future in [pool.submit(one, job) for job in todo]:
            try:
                future.result()
            except (subprocess.CalledProcessError, ValueError, OSError) as error:
                failed += 1
                print(f"error: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
