"""Plot RD curves (PSNR vs bpp) of our results and chosen anchors as a PNG.

    python -m tools.plot_rd [--results results/rd.tsv] [--out results/rd.png]
                            [--anchors 'VTM,BPG444,C3,COOL-CHICv2,Cool-chic 5.0,x265']
                            [--image kodim01] [--logx]

Our curve per preset is the mean bpp and PSNR over the selected images at each
lambda that all of them have (the same curve as tools/bd_rate.py), labelled with its
lambdas. Per-image anchors (Cool-chic releases, jpeg/webp/avif/jxl/x265) are
averaged over the same images; dataset-average anchors (VTM, BPG444, C3, ...) are the
published curves over the whole dataset, drawn dashed. With --image, one image's
curves are drawn instead (ours and per-image anchors only). The legend gives the
BD-rate of our curve against each anchor (tools/bd_rate.py's number for the average
curve).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from tools import bd_rate as bd

DEFAULT_ANCHORS = "VTM,BPG444,C3,COOL-CHICv2,Cool-chic 5.0,x265,avif,jpeg"


def anchor_curve(
    anchor: bd.Anchor, images: Sequence[str], single_image: str | None
) -> tuple[list[bd.Point], str] | None:
    """The points to draw for an anchor and a label suffix; None if nothing to draw."""
    if single_image is not None:
        if not anchor.is_per_image or single_image not in (anchor.per_image or {}):
            return None
        assert anchor.per_image is not None
        points = sorted(anchor.per_image[single_image].values(), key=lambda p: p[1])
        return points, ""
    if not anchor.is_per_image:
        assert anchor.average is not None
        return sorted(anchor.average, key=lambda p: p[1]), " (published avg)"
    assert anchor.per_image is not None
    common = [i for i in images if i in anchor.per_image] or sorted(anchor.per_image)
    points, _, _ = bd.average_curve(anchor.per_image, common)
    return (points, f" ({len(common)} img)") if points else None


def plot(
    ours: dict[str, dict[str, dict[str, bd.Point]]],
    anchors: Sequence[bd.Anchor],
    out: Path,
    images: Sequence[str] | None = None,
    single_image: str | None = None,
    logx: bool = False,
    max_bpp: float | None = None,
    title: str | None = None,
    method: str = "pchip",
    dpi: int = 130,
) -> Path:
    """Draw the figure and write it to `out` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6.5), layout="constrained")
    our_curves: dict[str, list[bd.Point]] = {}
    all_images: set[str] = set()
    for preset, per_image in sorted(ours.items()):
        selected = list(images) if images else sorted(per_image)
        all_images.update(selected)
        if single_image is not None:
            settings = sorted(per_image.get(single_image, {}).items(), key=lambda kv: kv[1][1])
            points = [p for _, p in settings]
            lmbdas = [s for s, _ in settings]
            label = f"ours, {preset} ({single_image})"
        else:
            points, lmbdas, _ = bd.average_curve(per_image, selected)
            label = f"ours, {preset} ({len(selected)} img)"
        if not points:
            continue
        our_curves[preset] = points
        (line,) = ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            linewidth=2.4,
            markersize=6,
            label=label,
            zorder=5,
        )
        for (bpp, psnr), lmbda in zip(points, lmbdas, strict=True):
            ax.annotate(
                f"λ={lmbda}",
                (bpp, psnr),
                textcoords="offset points",
                xytext=(6, -11),
                fontsize=7,
                color=line.get_color(),
            )

    sorted_images = sorted(all_images)
    reference = next(iter(our_curves.values()), None)
    drawn_points: list[bd.Point] = []
    for anchor in anchors:
        drawn = anchor_curve(anchor, sorted_images, single_image)
        if drawn is None:
            continue
        points, suffix = drawn
        drawn_points += points
        label = f"{anchor.name}{suffix}"
        if reference is not None and len(our_curves) == 1:
            result = bd.bd_rate(points, reference, method)
            if math.isfinite(result.value):
                label += f": BD {result.value:+.1f}%"
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker=".",
            linewidth=1.3,
            linestyle="-" if anchor.is_per_image else "--",
            label=label,
        )

    all_ours = [p for points in our_curves.values() for p in points]
    if max_bpp is None:
        max_bpp = 1.6 * max(p[0] for p in all_ours) if all_ours else 2.0
    if logx:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        min_bpp = 0.6 * min(p[0] for p in all_ours) if all_ours else 0.03
        ax.set_xlim(min_bpp, max_bpp)
    else:
        ax.set_xlim(0.0, max_bpp)
    visible = all_ours or [p for p in drawn_points if p[0] <= max_bpp]
    if visible:
        low = min(p[1] for p in visible)
        high = max(p[1] for p in visible)
        margin = 3.0 if all_ours else 0.5
        ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel("rate [bpp]")
    ax.set_ylabel("PSNR RGB [dB]")
    if not title:
        what = single_image or f"mean over {len(sorted_images)} image(s)"
        title = f"RD: {what}" if all_ours else f"RD anchors ({single_image or 'no results'})"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.35)
    ax.legend(fontsize=8, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--results",
        type=Path,
        nargs="*",
        default=[Path("results/rd.tsv")],
        help="Results TSV(s) of tools/rd_eval.py (default: results/rd.tsv; none: anchors only).",
    )
    parser.add_argument("--out", type=Path, default=Path("results/rd.png"), help="Output PNG.")
    parser.add_argument("--preset", default=None, help="Only this preset (default: all).")
    parser.add_argument("--images", default=None, help="Comma-separated image names to average.")
    parser.add_argument("--image", default=None, help="Plot this one image's curves instead.")
    parser.add_argument(
        "--anchors",
        default=DEFAULT_ANCHORS,
        help=f"Comma-separated anchor names, or 'none' (default: {DEFAULT_ANCHORS}).",
    )
    parser.add_argument(
        "--anchor-dir", type=Path, default=None, help="Anchor folder (as tools/bd_rate.py)."
    )
    bd.add_extra_anchors_option(parser)
    parser.add_argument("--dataset", default="kodak", choices=sorted(bd.DATASETS))
    parser.add_argument("--logx", action="store_true", help="Logarithmic rate axis.")
    parser.add_argument("--max-bpp", type=float, default=None, help="Right end of the rate axis.")
    parser.add_argument("--title", default=None, help="Figure title.")
    parser.add_argument("--method", default="pchip", choices=bd.METHODS, help="For the BD-rates.")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    anchor_dir = args.anchor_dir or bd.default_anchor_dir()
    anchors: list[bd.Anchor] = []
    if args.anchors.lower() != "none":
        if not anchor_dir.is_dir():
            print(f"error: no anchor folder {anchor_dir} (see --anchor-dir)", file=sys.stderr)
            return 2
        try:
            known = bd.load_anchors(anchor_dir, args.dataset)
            known += bd.load_extra_anchors(args.extra_anchors)
            anchors = bd.select_anchors(known, args.anchors)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    present = [p for p in args.results if p.is_file()]
    for path in args.results:
        if not path.is_file():
            print(f"warning: no results file {path}; plotting anchors only", file=sys.stderr)
    ours = bd.load_ours(present, args.preset)
    images = [i.strip() for i in args.images.split(",")] if args.images else None
    out = plot(
        ours,
        anchors,
        args.out,
        images=images,
        single_image=args.image,
        logx=args.logx,
        max_bpp=args.max_bpp,
        title=args.title,
        method=args.method,
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
