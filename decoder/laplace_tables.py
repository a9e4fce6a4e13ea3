"""The spec's normative integer tables (bitstream-v1.md section 5.4), loaded once at import.

- `EXP_NEG[t]` = round(2^30 * e^(-t / 256)) for t in 0..5631: Laplace tail mass, Q30.
- `INV_SCALE[s + 1536]` = round(2^20 * e^(-s / 256)) for s in -1536..2048: inverse scale, Q20.

Both are int64 arrays, read from the package data `coolchic_ref.tables`.
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np

EXP_NEG_SIZE = 5632
INV_SCALE_SIZE = 3585


def _load(name: str, size: int) -> np.ndarray:
    text = files("coolchic_ref.tables").joinpath(name).read_text(encoding="ascii")
    values = np.array([int(line) for line in text.split()], dtype=np.int64)
    if values.shape != (size,):
        raise RuntimeError(f"table {name} has {values.size} entries, expected {size}")
    values.flags.writeable = False
    return values


EXP_NEG: np.ndarray = _load("exp_neg_q30.txt", EXP_NEG_SIZE)
INV_SCALE: np.ndarray = _load("inv_scale_q20.txt", INV_SCALE_SIZE)
