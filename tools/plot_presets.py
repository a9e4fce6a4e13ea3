"""Plot the presets as a time/quality curve: RD cost against a reference encoder vs time.

    python -m tools.plot_presets [--table tools/results/presets-crops.tsv]
                                 [--out tools/results/presets-crops.png]

The table has one row per encoder: `encoder`, `points` (how many picture/lambda points
the RD figure averages), `rd_vs_coolchic5_pct` (mean RD cost, MSE + lambda * bpp,
against Cool-chic 5.0.1 at the same points, in %) and `seconds` (encode wall time);
`rd_source` and `time_source` say where each figure was measured and are printed.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TABLE = ROOT / "tools" / "results" / "presets-crops.tsv"


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        for column in ("encoder", "rd_vs_coolchic5_pct", "seconds"):
            if not row.get(column):
                raise ValueError(f"{path}: a row has no {column}")
        float(row["rd_vs_coolchic5_pct"]), float(row["seconds"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--out", type=Path, default=DEFAULT_TABLE.with_suffix(".png"))
    args = parser.parse_args(argv)
    try:
        rows = read_table(args.table)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ours = [r for r in rows if r["encoder"].startswith("coolchic-ref")]
    others = [r for r in rows if not r["encoder"].startswith("coolchic-ref")]
    ax.plot(
        [float(r["seconds"]) for r in ours],
        [float(r["rd_vs_coolchic5_pct"]) for r in ours],
        "o-",
        label="coolchic-ref presets",
    )
    for row in others:
        ax.plot(float(row["seconds"]), float(row["rd_vs_coolchic5_pct"]), "s", label=row["encoder"])
    for row in rows:
        name = row["encoder"].removeprefix("coolchic-ref ")
        ax.annotate(name, (float(row["seconds"]), float(row["rd_vs_coolchic5_pct"])),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)  # fmt: skip
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xscale("log")
    ticks = [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]
    ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
    ax.set_xticks([], minor=True)
    seconds = [float(r["seconds"]) for r in rows]
    ax.set_xlim(min(seconds) / 1.5, max(seconds) * 3)
    ax.set_xlabel("encode wall time per 256x256 picture, 2 CPU cores (s)")
    ax.set_ylabel("RD cost against Cool-chic 5.0.1 (%)")
    ax.set_title("Presets: time against quality", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(args.out)
    for row in rows:
        print(
            f"{row['encoder']:34s} {float(row['rd_vs_coolchic5_pct']):+6.1f} %  "
            f"{float(row['seconds']):7.1f} s  ({row.get('rd_source', '')}; "
            f"{row.get('time_source', '')})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
