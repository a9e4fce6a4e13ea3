"""coolchic-ref encoder (optional extra: torch, constriction).

    from coolchic_ref.encoder import encode
    result = encode("picture.png", lmbda=1e-3, preset="fast")

Importing this package does not import torch; `encode` loads it on first use.
"""

from __future__ import annotations

import os
from typing import Any

# Torch's OpenMP threads spin while waiting for work by default. When another process
# also wants the CPU (2 cores here), every parallel region then waits for a descheduled
# spinning thread: measured 1.5-6.8 s per iteration instead of 0.32 s for a 768x512
# picture. Passive waiting costs a few percent on an idle machine. libgomp reads the
# variable when torch loads, so it only takes effect if torch is not imported yet; a
# value set by the user wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def __getattr__(name: str) -> Any:
    if name in ("encode", "EncodeResult", "ClosedLoopError"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ClosedLoopError", "EncodeResult", "encode"]
