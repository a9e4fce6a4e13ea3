"""BD-rate of our RD results against the anchors in shared/anchors.

    python -m tools.bd_rate [--results results/rd.tsv] [--preset medium] [--images kodim01,...]
                            [--anchors VTM,BPG444,...] [--method pchip] [--format text]

BD-rate (Bjontegaard delta rate, %): the average difference of log-rate at equal
PSNR over the PSNR range where both curves exist, as 100 x (10^avg - 1). Negative
means that we need fewer bits than the anchor for the same quality. Computed with
the `bjontegaard` package (log10 of bpp interpolated as a function of PSNR; pchip by
default, as recommended by its authors; akima and the classic cubic fit of VCEG-M33
are available).

Our curve: the mean bpp and mean PSNR over the selected images at each lambda,
using only lambdas at which every selected image has a result.

Anchors:
- dataset-average curves (`kodak-published-rd.tsv`: VTM, BPG444, C3, COOL-CHICv2,
  ...). They average all images of the dataset (24 for Kodak): with fewer images on
  our side the comparison is indicative only, and the note column says so.
- per-image curves (`coolchic-results/vX.Y-image-kodak.tsv`,
  `kodak-conventional.tsv`: jpeg, webp, avif, jxl, x265). They are compared on the
  images both sides have, in two ways: the BD-rate of the two average curves over
  those images, and the mean of the per-image BD-rates.

When the PSNR ranges of the two curves do not overlap, or a curve has fewer than two
points, the BD-rate is NaN and the note says why.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.rd_eval import read_results

REPO_ROOT = Path(__file__).resolve().parent.parent
METHODS = ("pchip", "akima", "cubic")
KODAK_IMAGES = tuple(f"kodim{i:02d}" for i in range(1, 25))

# dataset name -> (dataset-average file, per-image file suffix of Cool-chic releases,
#                  per-image conventional file or None, images in the dataset or None)
DATASETS: dict[str, tuple[str | None, str, str | None, int | None]] = {
    "kodak": ("kodak-published-rd.tsv", "image-kodak.tsv", "kodak-conventional.tsv", 24),
    "clic20-pro-valid": (
        "clic2020-published-rd.tsv",
        "image-clic20-pro-valid.tsv",
        None,
        41,
    ),
    "jvet": (None, "image-jvet.tsv", None, None),
}

Point = tuple[float, float]  # (bpp, psnr)


def default_anchor_dir() -> Path:
    """$COOLCHIC_ANCHORS, else shared/anchors inside or beside the repository."""
    env = os.environ.get("COOLCHIC_ANCHORS")
    if env:
        return Path(env)
    for candidate in (REPO_ROOT / "shared" / "anchors", REPO_ROOT.parent / "shared" / "anchors"):
        if candidate.is_dir():
            return candidate
    return REPO_ROOT.parent / "shared" / "anchors"


# ----------------------------------------------------------------------------- anchors


@dataclass
class Anchor:
    """An anchor codec: either one dataset-average curve or per-image curves.

    `per_image[image][setting] = (bpp, psnr)`; `average` is a list of (bpp, psnr).
    """

    name: str
    source: str
    average: list[Point] | None = None
    per_image: dict[str, dict[str, Point]] | None = None

    @property
    def is_per_image(self) -> bool:
        return self.per_image is not None


def _read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a TSV with a header line, keyed by column name (order may differ)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        return []
    header = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], 2):
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise ValueError(f"{path}:{number}: {len(fields)} fields, header has {len(header)}")
        rows.append(dict(zip(header, fields, strict=True)))
    return rows


def _column(row: Mapping[str, str], names: Sequence[str], path: Path) -> str:
    for name in names:
        if name in row:
            return row[name]
    raise ValueError(f"{path}: none of the columns {', '.join(names)} in the header")


def load_published(path: Path) -> dict[str, Anchor]:
    """Dataset-average curves by codec name (columns codec, bpp, psnr_rgb)."""
    anchors: dict[str, Anchor] = {}
    for row in _read_tsv(path):
        codec = _column(row, ("codec",), path)
        point = (float(_column(row, ("bpp",), path)), float(_column(row, ("psnr_rgb",), path)))
        anchor = anchors.setdefault(codec, Anchor(codec, f"{path.name} (dataset average)", []))
        assert anchor.average is not None
        anchor.average.append(point)
    return anchors


def load_coolchic_release(path: Path) -> Anchor:
    """Per-image curves of one Cool-chic release (seq_name, lmbda, rate_bpp, psnr_db)."""
    version = path.name.split("-image-")[0]
    per_image: dict[str, dict[str, Point]] = {}
    for row in _read_tsv(path):
        image = _column(row, ("seq_name",), path)
        lmbda = _column(row, ("lmbda",), path)
        point = (float(_column(row, ("rate_bpp",), path)), float(_column(row, ("psnr_db",), path)))
        per_image.setdefault(image, {})[lmbda] = point
    name = f"Cool-chic {version.lstrip('v')}"
    return Anchor(name, f"coolchic-results/{path.name} (per image)", per_image=per_image)


def load_conventional(path: Path) -> dict[str, Anchor]:
    """Per-image curves of conventional codecs (codec, setting, image, bpp, psnr_rgb)."""
    anchors: dict[str, Anchor] = {}
    for row in _read_tsv(path):
        codec = _column(row, ("codec",), path)
        image = _column(row, ("image",), path)
        setting = _column(row, ("setting",), path)
        point = (float(_column(row, ("bpp",), path)), float(_column(row, ("psnr_rgb",), path)))
        anchor = anchors.setdefault(codec, Anchor(codec, f"{path.name} (per image)", per_image={}))
        assert anchor.per_image is not None
        anchor.per_image.setdefault(image, {})[setting] = point
    return anchors


def load_anchors(anchor_dir: Path, dataset: str = "kodak") -> list[Anchor]:
    """Every anchor of `dataset` found in `anchor_dir`: dataset averages first."""
    average_file, release_suffix, conventional_file, _ = DATASETS[dataset]
    anchors: list[Anchor] = []
    if average_file and (anchor_dir / average_file).is_file():
        anchors += list(load_published(anchor_dir / average_file).values())
    for path in sorted((anchor_dir / "coolchic-results").glob(f"v*-{release_suffix}")):
        anchors.append(load_coolchic_release(path))
    if conventional_file and (anchor_dir / conventional_file).is_file():
        anchors += list(load_conventional(anchor_dir / conventional_file).values())
    return anchors


def load_extra_anchors(paths: Iterable[Path]) -> list[Anchor]:
    """Per-image anchors from TSVs in the format of `kodak-conventional.tsv` (e.g. the
    measured BPG of tools/anchor_bpg.py); ValueError names a missing or bad file."""
    anchors: list[Anchor] = []
    for path in paths:
        if not path.is_file():
            raise ValueError(f"no anchor file {path}")
        anchors += list(load_conventional(path).values())
    return anchors


def select_anchors(anchors: Sequence[Anchor], names: str | None) -> list[Anchor]:
    """Anchors named in the comma-separated `names`, in that order (exact name first,
    else case-insensitive); all of them when `names` is empty."""
    if not names:
        return list(anchors)
    chosen: list[Anchor] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        # An exact match wins: 'JPEG' is the published curve, 'jpeg' the measured one.
        matches = [a for a in anchors if a.name == name] or [
            a for a in anchors if a.name.lower() == name.lower()
        ]
        if not matches:
            known = ", ".join(a.name for a in anchors)
            raise ValueError(f"unknown anchor {name!r}; known: {known}")
        chosen += [a for a in matches if a not in chosen]
    return chosen


# ----------------------------------------------------------------------------- our side


def load_ours(
    paths: Sequence[Path], preset: str | None = None
) -> dict[str, dict[str, dict[str, Point]]]:
    """Our results as `{preset: {image: {lmbda: (bpp, psnr)}}}`; later rows win."""
    ours: dict[str, dict[str, dict[str, Point]]] = {}
    for path in paths:
        for row in read_results(path):
            if preset is not None and row["preset"] != preset:
                continue
            try:
                point = (float(row["bpp"]), float(row["psnr_rgb"]))
                lmbda = repr(float(row["lmbda"]))
            except ValueError:
                continue
            ours.setdefault(row["preset"], {}).setdefault(row["image"], {})[lmbda] = point
    return ours


def average_curve(
    per_image: Mapping[str, Mapping[str, Point]], images: Iterable[str]
) -> tuple[list[Point], list[str], dict[str, int]]:
    """Mean (bpp, psnr) over `images` at each setting that all of them have.

    Returns (curve points, settings used, {incomplete setting: number of images with it}).
    """
    images = list(images)
    if not images:
        return [], [], {}
    counts: dict[str, int] = {}
    for image in images:
        for setting in per_image.get(image, {}):
            counts[setting] = counts.get(setting, 0) + 1
    complete = [s for s, n in counts.items() if n == len(images)]
    incomplete = {s: n for s, n in counts.items() if n < len(images)}
    points = []
    for setting in complete:
        values = np.array([per_image[image][setting] for image in images], dtype=np.float64)
        points.append((float(values[:, 0].mean()), float(values[:, 1].mean())))
    order = np.argsort([p[1] for p in points])
    return [points[i] for i in order], [complete[i] for i in order], incomplete


# ----------------------------------------------------------------------------- BD-rate


@dataclass
class BDResult:
    """A BD-rate in % (NaN when it cannot be computed) and the PSNR range it covers.

    `overlap_fraction` is that range over the union of both curves' PSNR ranges
    (bjontegaard's definition); the notes flag an anchor covering < 75% of ours.
    """

    value: float
    psnr_lo: float = math.nan
    psnr_hi: float = math.nan
    overlap_fraction: float = math.nan
    notes: list[str] = field(default_factory=list)


def clean_curve(points: Iterable[Point]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(bpp, psnr) sorted by PSNR, without unusable points; notes on what was dropped.

    Points with bpp <= 0 or non-finite values are dropped; points of equal PSNR are
    merged (mean log-rate), since the rate is interpolated as a function of PSNR.
    """
    points = list(points)
    pts = [(r, d) for r, d in points if math.isfinite(r) and math.isfinite(d) and r > 0]
    notes = []
    if len(pts) < len(points):
        notes.append(f"{len(points) - len(pts)} unusable point(s) dropped")
    pts.sort(key=lambda p: p[1])
    psnr: list[float] = []
    log_rates: list[list[float]] = []
    for r, d in pts:
        if psnr and d == psnr[-1]:
            log_rates[-1].append(math.log10(r))
        else:
            psnr.append(d)
            log_rates.append([math.log10(r)])
    rates = np.array([10 ** float(np.mean(v)) for v in log_rates])
    if len(rates) > 1 and np.any(np.diff(rates) <= 0):
        notes.append("non-monotonic curve")
    return rates, np.array(psnr), notes


def bd_rate(anchor: Iterable[Point], test: Iterable[Point], method: str = "pchip") -> BDResult:
    """BD-rate (%) of `test` against `anchor`, both lists of (bpp, psnr).

    NaN with a note when a curve has too few points or the PSNR ranges do not overlap.
    """
    import bjontegaard

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    anchor = list(anchor)
    test = list(test)
    rate_a, psnr_a, notes_a = clean_curve(anchor)
    rate_t, psnr_t, notes_t = clean_curve(test)
    notes = [f"anchor: {n}" for n in notes_a] + [f"ours: {n}" for n in notes_t]
    need = 4 if method == "cubic" else 2
    for label, psnr in (("anchor", psnr_a), ("ours", psnr_t)):
        if len(psnr) < need:
            return BDResult(math.nan, notes=notes + [f"{label}: {len(psnr)} point(s), need {need}"])
    lo = max(psnr_a.min(), psnr_t.min())
    hi = min(psnr_a.max(), psnr_t.max())
    union = max(psnr_a.max(), psnr_t.max()) - min(psnr_a.min(), psnr_t.min())
    if hi <= lo:
        return BDResult(
            math.nan,
            notes=notes
            + [
                f"no PSNR overlap (ours {psnr_t.min():.2f}-{psnr_t.max():.2f} dB, "
                f"anchor {psnr_a.min():.2f}-{psnr_a.max():.2f} dB)"
            ],
        )
    fraction = (hi - lo) / union
    covered = (hi - lo) / (psnr_t.max() - psnr_t.min())
    if covered < 0.75:
        notes.append(f"anchor covers {100 * covered:.0f}% of our PSNR range")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bjontegaard.bd_rate(
            rate_a,
            psnr_a,
            rate_t,
            psnr_t,
            method=method,
            require_matching_points=False,
            min_overlap=0,
        )
    return BDResult(float(value), float(lo), float(hi), float(fraction), notes)


# ----------------------------------------------------------------------------- table


@dataclass
class Row:
    """One line of the report."""

    anchor: str
    kind: str
    n_images: str
    bd_avg: BDResult
    bd_per_image_mean: float | None = None
    per_image_counted: str = ""
    notes: list[str] = field(default_factory=list)


def evaluate_anchor(
    anchor: Anchor,
    ours_per_image: Mapping[str, Mapping[str, Point]],
    images: Sequence[str],
    method: str,
    dataset_size: int | None,
) -> Row:
    """Our curve against one anchor; per-image anchors are compared on common images."""
    if not anchor.is_per_image:
        assert anchor.average is not None
        ours, _, _ = average_curve(ours_per_image, images)
        result = bd_rate(anchor.average, ours, method)
        size = str(dataset_size) if dataset_size else "all"
        n_images = f"{len(images)} vs {size}"
        if not dataset_size or len(images) != dataset_size:
            n_images += "*"
        return Row(anchor.name, "dataset avg", n_images, result, notes=list(result.notes))

    assert anchor.per_image is not None
    common = [i for i in images if i in anchor.per_image and i in ours_per_image]
    if not common:
        return Row(anchor.name, "per image", "0", BDResult(math.nan), notes=["no common image"])
    ours, _, _ = average_curve(ours_per_image, common)
    theirs, _, _ = average_curve(anchor.per_image, common)
    result = bd_rate(theirs, ours, method)
    per_image = [
        bd_rate(
            list(anchor.per_image[image].values()),
            list(ours_per_image[image].values()),
            method,
        ).value
        for image in common
    ]
    finite = [v for v in per_image if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else math.nan
    notes = list(result.notes)
    if len(finite) < len(common):
        notes.append(f"per-image BD-rate NaN for {len(common) - len(finite)} image(s)")
    if len(common) < len(images):
        notes.append(f"anchor lacks {len(images) - len(common)} of our images")
    return Row(
        anchor.name,
        "per image",
        str(len(common)),
        result,
        mean,
        f"{len(finite)}/{len(common)}",
        notes,
    )


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return "NaN"
    return f"{value:+.2f}"


def format_table(rows: Sequence[Row], fmt: str = "text") -> str:
    """The report as aligned text, Markdown or TSV."""
    header = [
        "anchor",
        "kind",
        "n images",
        "BD-rate % (avg curve)",
        "BD-rate % (mean per image)",
        "PSNR overlap [dB]",
        "note",
    ]
    body = []
    for row in rows:
        r = row.bd_avg
        overlap = f"{r.psnr_lo:.2f}-{r.psnr_hi:.2f}" if math.isfinite(r.psnr_lo) else "-"
        per_image = _pct(row.bd_per_image_mean)
        if row.per_image_counted and row.per_image_counted.split("/")[0] != "0":
            per_image += f" [{row.per_image_counted}]"
        body.append(
            [
                row.anchor,
                row.kind,
                row.n_images,
                _pct(r.value),
                per_image,
                overlap,
                "; ".join(row.notes),
            ]
        )
    if fmt == "tsv":
        return "\n".join("\t".join(line) for line in [header, *body])
    if fmt == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(lines)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    out = []
    for number, line in enumerate([header, *body]):
        cells = [
            c.ljust(w) if i in (0, 1, 6) else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def dataset_curve(anchor: Anchor, images: Sequence[str]) -> list[Point]:
    """An anchor's dataset-average curve: published as such, or the mean over `images`
    of a per-image anchor."""
    if not anchor.is_per_image:
        assert anchor.average is not None
        return list(anchor.average)
    assert anchor.per_image is not None
    curve, _, _ = average_curve(anchor.per_image, images)
    return curve


def _print_between_anchors(anchors: Sequence[Anchor], names: str, dataset: str, method: str) -> int:
    parts = [n.strip() for n in names.split(",")]
    if len(parts) != 2 or not all(parts):
        print(f"error: --between-anchors {names!r}: expected TEST,REF", file=sys.stderr)
        return 2
    try:
        test, ref = (select_anchors(anchors, name)[0] for name in parts)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Two per-image anchors are averaged over the images both have: releases differ in
    # which pictures they cover (e.g. jvet: 18 in Cool-chic 5.0, 20 in 4.2).
    per_image = [set(a.per_image) for a in (test, ref) if a.per_image is not None]
    images = sorted(set.intersection(*per_image)) if per_image else []
    result = bd_rate(dataset_curve(ref, images), dataset_curve(test, images), method)
    overlap = (
        f"{result.psnr_lo:.2f}-{result.psnr_hi:.2f} dB" if math.isfinite(result.psnr_lo) else "-"
    )
    notes = f" ({'; '.join(result.notes)})" if result.notes else ""
    print(
        f"{test.name} vs {ref.name} ({dataset} dataset averages, {method}): "
        f"BD-rate {_pct(result.value)} %, PSNR overlap {overlap}{notes}"
    )
    if len(per_image) == 2:
        print(f"  per-image anchors averaged over their {len(images)} common image(s)")
    return 0


def add_extra_anchors_option(parser: argparse.ArgumentParser) -> None:
    """The `--extra-anchors` option, shared with tools/plot_rd.py."""
    parser.add_argument(
        "--extra-anchors",
        type=Path,
        nargs="+",
        default=[],
        metavar="TSV",
        help="More per-image anchors in the format of kodak-conventional.tsv (codec, setting, "
        "image, bpp, psnr_rgb), e.g. tools/results/kodak-bpg444.tsv from tools/anchor_bpg.py.",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--results",
        type=Path,
        nargs="+",
        default=[Path("results/rd.tsv")],
        help="Results TSV(s) written by tools/rd_eval.py (default: results/rd.tsv).",
    )
    parser.add_argument(
        "--preset", default=None, help="Only this preset (default: one table per preset)."
    )
    parser.add_argument(
        "--images",
        default=None,
        help="Comma-separated image names (e.g. kodim01,kodim02); default: all in the results.",
    )
    parser.add_argument(
        "--anchors",
        default=None,
        help="Comma-separated anchor names (e.g. 'VTM,BPG444,C3,COOL-CHICv2,Cool-chic 5.0,x265');"
        " default: all of the dataset. --list-anchors shows them.",
    )
    parser.add_argument("--list-anchors", action="store_true", help="List anchors and exit.")
    parser.add_argument(
        "--between-anchors",
        metavar="TEST,REF",
        default=None,
        help="Print the BD-rate of one anchor against another on their dataset-average "
        "curves (per-image anchors averaged over the whole dataset) and exit; e.g. "
        "'x265,BPG444' relates the per-image x265 anchor to the published BPG444 curve.",
    )
    parser.add_argument(
        "--anchor-dir",
        type=Path,
        default=None,
        help="Anchor folder (default: $COOLCHIC_ANCHORS or shared/anchors by the repository).",
    )
    add_extra_anchors_option(parser)
    parser.add_argument(
        "--dataset", default="kodak", choices=sorted(DATASETS), help="Anchor set (default: kodak)."
    )
    parser.add_argument(
        "--method",
        default="pchip",
        choices=METHODS,
        help="Interpolation of log-rate over PSNR (default: pchip).",
    )
    parser.add_argument(
        "--format", default="text", choices=("text", "markdown", "tsv"), help="Table format."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    anchor_dir = args.anchor_dir or default_anchor_dir()
    if not anchor_dir.is_dir():
        print(f"error: no anchor folder {anchor_dir} (see --anchor-dir)", file=sys.stderr)
        return 2
    all_anchors = load_anchors(anchor_dir, args.dataset)
    try:
        all_anchors += load_extra_anchors(args.extra_anchors)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.list_anchors:
        for anchor in all_anchors:
            print(f"{anchor.name}\t{anchor.source}")
        return 0
    if args.between_anchors is not None:
        return _print_between_anchors(all_anchors, args.between_anchors, args.dataset, args.method)
    try:
        anchors = select_anchors(all_anchors, args.anchors)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    missing = [str(p) for p in args.results if not p.is_file()]
    if missing:
        print(f"error: no results file {', '.join(missing)}", file=sys.stderr)
        return 2
    ours = load_ours(args.results, args.preset)
    if not ours:
        print("error: no result rows (for this preset)", file=sys.stderr)
        return 1
    dataset_size = DATASETS[args.dataset][3]
    for preset, per_image in sorted(ours.items()):
        if args.images:
            images = [i.strip() for i in args.images.split(",") if i.strip()]
            absent = [i for i in images if i not in per_image]
            if absent:
                print(f"warning: preset {preset}: no result for {', '.join(absent)}")
        else:
            images = sorted(per_image)
        curve, lmbdas, incomplete = average_curve(per_image, images)
        print(f"ours: preset {preset}, {len(images)} image(s): {', '.join(images)}")
        print(f"  complete lambdas ({len(lmbdas)}): " + ", ".join(lmbdas))
        for lmbda, n in sorted(incomplete.items(), key=lambda kv: float(kv[0])):
            print(f"  incomplete lambda {lmbda}: {n}/{len(images)} images (left out)")
        for (bpp, psnr), lmbda in zip(curve, lmbdas, strict=True):
            print(f"  lambda {lmbda}: {bpp:.4f} bpp, {psnr:.3f} dB (mean)")
        rows = [evaluate_anchor(a, per_image, images, args.method, dataset_size) for a in anchors]
        print(f"BD-rate vs anchors ({args.method}; negative = fewer bits than the anchor):")
        print(format_table(rows, args.format))
        if any(row.n_images.endswith("*") for row in rows):
            print(
                "* dataset-average anchors are means over the whole dataset, ours over the "
                f"{len(images)} image(s) above: indicative only."
            )
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
