"""Peak memory of an encode, estimated before training, and the memory available.

Training dominates the peak: every forward pass keeps the activations that the
backward pass needs, at each latent position (ARM: contexts and hidden layers) and at
each pixel (upsampled latent, synthesis layers), and the backward pass adds their
gradients. The estimate is

    peak bytes = FIXED_BYTES + pixels x BYTES_PER_UNIT x units_per_pixel(architecture)

with `units_per_pixel` the float values one forward pass stores per pixel. The
constants are set from the peak RSS of short encodes (`python tools/bench_memory.py`:
`coolchic-ref encode --preset instant --n_itr 3`, RGB pictures of 256x256 to
1024x1024, operating points 500 to 3000; tools/results/memory.md), so that every
measured peak is below the estimate: the fitted per-pixel costs (871, 892, 1134 and
2010 bytes at op 500, 1000, 2000, 3000) are 0.69 to 0.94 of the estimate's, and a
3840x2160 encode at op 2000, measured at 12.4 GB, is estimated at 14.3 GB. An encode
is refused when the estimate exceeds the memory available.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from .presets import Architecture

GIB = float(1 << 30)
FIXED_BYTES = 430 * (1 << 20)  # interpreter, Torch, Numba, the reference decoder
BYTES_PER_UNIT = 10.0  # per stored float per pixel: the value, its gradient, allocator slack


def units_per_pixel(arch: Architecture) -> float:
    """Float values stored by one training forward pass, per pixel.

    Latents of all grids together are 4/3 values per pixel (1 + 1/4 + 1/16 + ...); each
    has the ARM's context and the output of every ARM layer. The dense latent has one
    value per grid at every pixel, and each synthesis layer its outputs (a 3x3 layer also
    its padded input). Elementwise steps (quantizer, rate, distortion) add about 30.
    """
    latent_share = sum(4.0**-g for g in range(arch.n_grids))
    arm = arch.arm_inputs + sum(layer.out_channels for layer in arch.arm_layers)
    synthesis = float(arch.n_grids)
    c_in = arch.n_grids
    for layer in arch.syn_layers:
        synthesis += layer.out_channels + (c_in if layer.kernel > 1 else 0)
        c_in = layer.out_channels
    return latent_share * arm + synthesis + 30.0


def estimate_peak_bytes(arch: Architecture, height: int, width: int) -> int:
    """Estimated peak resident memory of an encode of a width x height picture."""
    return int(FIXED_BYTES + height * width * BYTES_PER_UNIT * units_per_pixel(arch))


def largest_fitting(arch: Architecture, height: int, width: int, limit: int) -> tuple[int, int]:
    """The largest (width, height) of the same aspect ratio whose estimate fits `limit`;
    (0, 0) when nothing does."""
    per_pixel = BYTES_PER_UNIT * units_per_pixel(arch)
    pixels = (limit - FIXED_BYTES) / per_pixel
    if pixels <= 0:
        return 0, 0
    scale = math.sqrt(pixels / (height * width))
    return int(width * scale), int(height * scale)


@dataclass(frozen=True)
class Available:
    """Memory an encode may use, in bytes, and where the figure comes from."""

    bytes: int
    source: str


def available_memory(
    proc: Path = Path("/proc"), cgroup: Path = Path("/sys/fs/cgroup")
) -> Available | None:
    """MemAvailable of /proc/meminfo, lowered to the cgroup's free share when a cgroup v2
    limit is set (containers); None where neither can be read (not Linux)."""
    found: Available | None = None
    try:
        text = (proc / "meminfo").read_text()
        match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.MULTILINE)
        if match:
            found = Available(int(match[1]) * 1024, "MemAvailable")
    except OSError:
        pass
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            free = max(0, int(limit) - used)
            if found is None or free < found.bytes:
                found = Available(free, "cgroup memory.max")
    except (OSError, ValueError):
        pass
    return found


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_memory(text: str) -> int:
    """'12G', '512M', '8GiB', '1.5g' or a number of bytes -> bytes (units are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"memory size {text!r}: expected e.g. 16G, 512M or a number of bytes")
    return int(float(match[1]) * _UNITS[match[2]])


class MemoryLimitError(ValueError):
    """The encode would need more memory than is available; the message is one line."""


def check_memory(
    arch: Architecture, height: int, width: int, limit: int | None, source: str
) -> tuple[int, str]:
    """(estimated peak bytes, one-line report); raises MemoryLimitError when the estimate
    exceeds `limit` (None: no limit known, nothing checked)."""
    peak = estimate_peak_bytes(arch, height, width)
    report = f"memory: about {peak / GIB:.1f} GiB at peak"
    if limit is None:
        return peak, report
    report += f" ({limit / GIB:.1f} GiB available, {source})"
    if peak > limit:
        fit_w, fit_h = largest_fitting(arch, height, width, limit)
        hint = (
            f"the largest picture of this shape that fits is about {fit_w}x{fit_h}"
            if fit_w and fit_h
            else "no picture fits"
        )
        raise MemoryLimitError(
            f"a {width}x{height} encode needs about {peak / GIB:.1f} GiB of memory at peak, "
            f"more than the {limit / GIB:.1f} GiB available ({source}); {hint}; "
            "--max-memory sets the limit"
        )
    return peak, report


def default_limit() -> tuple[int | None, str]:
    """(bytes, source) of the memory available to this process, or (None, 'unknown')."""
    found = available_memory()
    if found is None:
        return None, "unknown"
    return found.bytes, found.source
