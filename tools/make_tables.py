"""Regenerate the normative integer tables of spec/tables/ (informative tool).

Each entry is the real expression rounded to the nearest integer, computed
with 60 significant decimal digits so that the rounding is exact.

    python tools/make_tables.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from decimal import ROUND_HALF_UP, Decimal, getcontext
from pathlib import Path

TABLES_DIR = Path(__file__).resolve().parent.parent / "spec" / "tables"


def _rounded(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def exp_neg_q30() -> list[int]:
    """EXP_NEG[t] = round(2^30 * e^(-t/256)), t = 0..5631 (Q30)."""
    return [_rounded(Decimal(2**30) * (Decimal(-t) / 256).exp()) for t in range(5632)]


def inv_scale_q20() -> list[int]:
    """INV_SCALE[j] = round(2^20 * e^(-(j - 1536)/256)), j = 0..3584 (Q20)."""
    return [_rounded(Decimal(2**20) * (Decimal(-(j - 1536)) / 256).exp()) for j in range(3585)]


TABLES = {"exp_neg_q30.txt": exp_neg_q30, "inv_scale_q20.txt": inv_scale_q20}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    getcontext().prec = 60
    status = 0
    for name, build in TABLES.items():
        text = "\n".join(str(v) for v in build()) + "\n"
        path = TABLES_DIR / name
        if args.check:
            same = path.exists() and path.read_text() == text
            print(f"{name}: {'OK' if same else 'DIFFERS'}")
            status |= not same
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return status


if __name__ == "__main__":
    sys.exit(main())
