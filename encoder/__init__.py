"""coolchic-ref encoder (optional extra: torch, constriction).

    from coolchic_ref.encoder import encode
    result = encode("picture.png", lmbda=1e-3, preset="fast")

Importing this package does not import torch; `encode` loads it on first use.
"""

from __future__ import annotations

from typing import Any

# Torch's OpenMP threads: the libgomp default (spin a moment, then sleep) is kept.
# Measured 2026-12-03, 768x512, `instant`, 2 cores: 0.29 s per iteration with it,
# 0.49 with OMP_WAIT_POLICY=PASSIVE (set here before) and 0.41 on one thread; with a
# busy-loop process on one of the cores 0.97, 0.48 and 0.47. Pictures of up to 2^16
# pixels train on one thread (`api.SINGLE_THREAD_PIXELS`); encodes that share the
# cores run one thread each (`tools/rd_eval.py --jobs`, or OMP_NUM_THREADS=1).


def __getattr__(name: str) -> Any:
    if name in ("encode", "EncodeResult", "ClosedLoopError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClosedLoopError", "EncodeResult", "encode"]
