"""Facts of the coolchic-ref format that the encoder relies on (spec bitstream-v1.md,
bitstream-v2.md).

The one place on the encoder side for the stream's constants, limits and coded
choices: the writer (`bitstream.py`), the integer simulation (`integer_model.py`),
the float model (`model.py`), the quantization search (`quantize.py`), the random
codecs and the input reader all take them from here. Written from the spec, not
from the decoder (whose `syntax.py` is an independent reading of the same text:
the conformance suite checks that the two agree).

Pure Python: no NumPy, no torch.
"""

from __future__ import annotations

from enum import IntEnum

MAGIC = b"CCRF"
VERSION_V1 = 1  # spec bitstream-v1.md
VERSION_V2 = 2  # spec bitstream-v2.md: v1 + the cross-grid ARM context
VERSIONS = (VERSION_V1, VERSION_V2)  # the versions this encoder writes
DEFAULT_VERSION = VERSION_V2  # what the encoder writes unless told otherwise

# ----------------------------------------------------------------------------- limits (3.2-3.4)

MAX_SIDE = 16384  # width and height
MAX_PIXELS = 1 << 24  # width * height
MIN_BIT_DEPTH, MAX_BIT_DEPTH = 8, 16
MAX_GRIDS = 7
MAX_N_CTX_ROWCOL = 3
MAX_UPS_TAPS = 8  # coded taps T of the folded upsampling filter
MAX_ARM_LAYERS = 5
MAX_SYN_LAYERS = 8
MAX_LAYER_WIDTH = 64
MAX_MAC_ARM = 8192  # per latent position
MAX_MAC_SYN = 16384  # per pixel
ARM_KERNELS = (1,)
SYN_KERNELS = (1, 3, 5, 7)
MAX_WEIGHTS_BYTES = 1 << 24
MAX_EGK = 16  # exp-Golomb orders 0..16 (spec 4.2)
MAX_CROSS_GRIDS = 6  # v2 header field cross_grids: 0..6 and at most n_grids - 1 (v2 3.2)

# Weight formats (header fields of spec 3.2): an integer v stands for v / 2^shift.
MAX_W_SHIFT = 16  # arm_w_shift and syn_w_shift
MAX_UPS_SHIFT = 16
MAX_ARM_B_SHIFT = 24  # and at most ARM_FRAC + arm_w_shift
MAX_SYN_B_SHIFT = 28  # and at most SYN_FRAC + syn_w_shift

INT16_MIN, INT16_MAX = -32768, 32767  # every weight and latent

# ----------------------------------------------------------------------------- arithmetic (2, 5)

ARM_FRAC = 8  # ARM activations, mu and log_scale are Q8
SYN_FRAC = 12  # dense latent and synthesis activations are Q12
LEAKY_SHIFT = 4  # leakyrelu: y >> 4 below 0, a slope of 1/16
PRECISION = 24  # rANS frequencies sum to 2^24
LOG_SCALE_MIN, LOG_SCALE_MAX = -1536, 2048  # Q8 clip of the ARM's log-scale (5.4)
MU_LIMIT = 1 << 23  # Q8 clip of the ARM's mu (5.4)

ACTIVATIONS = ("none", "relu", "leakyrelu")  # coded as their index (3.3)


def max_arm_b_shift(arm_w_shift: int) -> int:
    """Largest allowed arm_b_shift for this arm_w_shift (spec 3.2)."""
    return min(MAX_ARM_B_SHIFT, ARM_FRAC + arm_w_shift)


def max_syn_b_shift(syn_w_shift: int) -> int:
    """Largest allowed syn_b_shift for this syn_w_shift (spec 3.2)."""
    return min(MAX_SYN_B_SHIFT, SYN_FRAC + syn_w_shift)


# ----------------------------------------------------------------------------- coded choices


class ColorFormat(IntEnum):
    """Header field color_format (spec 3.2) and what follows from it."""

    GREY = 0
    RGB = 1
    YUV444 = 2
    YUV420 = 3

    @property
    def label(self) -> str:
        """The name users see (CLI, JSON, YUV file names): grey, rgb, yuv444, yuv420."""
        return self.name.lower()

    @property
    def n_channels(self) -> int:
        """Planes of the picture and outputs of the last synthesis layer."""
        return 1 if self is ColorFormat.GREY else 3

    @property
    def subsampled_chroma(self) -> bool:
        """True if planes 1 and 2 are 4:2:0 reduced to ceil(H/2) x ceil(W/2) (spec 8.1)."""
        return self is ColorFormat.YUV420

    @classmethod
    def from_label(cls, label: str) -> ColorFormat:
        """The format named `label` (as `label` writes it); ValueError if none is."""
        for fmt in cls:
            if fmt.label == label:
                return fmt
        raise ValueError(f"unknown colour format {label!r}")


class LayerKind(IntEnum):
    """Header field layer type (spec 3.3): how a layer combines its result with its input."""

    LINEAR = 0
    RESIDUAL = 1

    @property
    def label(self) -> str:
        """The word of the textual layer form ``<out>-<kernel>-<kind>-<activation>``."""
        return self.name.lower()

    @property
    def adds_input(self) -> bool:
        """The layer adds its input to its output before the activation, so it needs
        as many outputs as inputs."""
        return self is LayerKind.RESIDUAL

    @classmethod
    def from_label(cls, label: str) -> LayerKind:
        """The kind named `label`; ValueError if none is."""
        for kind in cls:
            if kind.label == label:
                return kind
        raise ValueError(f"unknown layer kind {label!r}")


# ----------------------------------------------------------------------------- geometry


def grid_shape(height: int, width: int, level: int) -> tuple[int, int]:
    """(rows, columns) of latent grid `level`: (ceil(H / 2^level), ceil(W / 2^level))."""
    return -(-height // (1 << level)), -(-width // (1 << level))


def context_offsets(n_ctx_rowcol: int) -> list[tuple[int, int]]:
    """The 2 r (r + 1) causal ARM context offsets (dy, dx), in the order of spec 5.2."""
    r = n_ctx_rowcol
    return [(dy, dx) for dy in range(-r, 1) for dx in range(-r, r + 1) if dy < 0 or dx < 0]


def context_size(n_ctx_rowcol: int) -> int:
    """Number of causal context positions, 2 r (r + 1) (spec 5.2)."""
    return 2 * n_ctx_rowcol * (n_ctx_rowcol + 1)


def max_cross_grids(version: int, n_grids: int) -> int:
    """Largest cross_grids C a stream of this version and grid count may declare: 0 for v1,
    min(6, n_grids - 1) for v2 (v2 3.2)."""
    if version == VERSION_V1:
        return 0
    return max(0, min(MAX_CROSS_GRIDS, n_grids - 1))


# ----------------------------------------------------------------------------- header layout


def header_fixed_bytes(version: int) -> int:
    """Bytes of the header before the ARM layer descriptors: 16 in v1; 17 in v2, whose
    u8 cross_grids sits at offset 16 (v2 3.2)."""
    if version not in VERSIONS:
        raise ValueError(f"unknown bitstream version {version!r} (choose from {VERSIONS})")
    return 16 if version == VERSION_V1 else 17


def header_bytes(version: int, n_arm_layers: int, n_syn_layers: int, n_grids: int) -> int:
    """Length of the header (v1 3.2: 30 + 3A + 4S + 8N; v2 3.2: one byte more)."""
    return header_fixed_bytes(version) + 3 * n_arm_layers + 4 * n_syn_layers + 14 + 8 * n_grids


def tap_offset(k: int, odd_output: bool) -> int:
    """Input offset m (from j) of coded tap k for output 2j or 2j + 1 (spec 6)."""
    if not odd_output:
        return k >> 1 if k % 2 == 0 else -((k + 1) >> 1)
    return -(k >> 1) if k % 2 == 0 else (k + 1) >> 1
