"""Encoding presets (training schedules) and decoder operating points (architectures).

A *preset* says how long and how carefully the encoder trains; an *operating point*
(`--op`) says how many multiplications per decoded pixel the decoder will spend. They
are independent: any preset works with any operating point.

Training follows C3 (Kim et al., 2024) as Cool-chic does: an optional warm-up that
trains a few candidates briefly and keeps the best, phase 1 with soft-rounded latents
plus Gaussian noise (temperature and noise annealed, cosine learning-rate decay),
phase 2 with straight-through hard rounding and a small, decaying learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import format as fmt
from .bitstream import LayerDesc, context_size, grid_shape, parse_layers
from .model import NOISE_KINDS


@dataclass(frozen=True)
class Preset:
    """A training schedule. Iteration counts are full passes over the picture."""

    name: str
    phase1_itr: int  # soft rounding + noise
    phase2_itr: int  # straight-through hard rounding
    # Warm-up: `warmup_candidates` models (different random initialisations) train
    # `warmup_itr` iterations each; the best `warmup_survivors` (by the loss with
    # hard-rounded latents) train `warmup_itr` more, and the best of them goes on.
    warmup_candidates: int = 1
    warmup_itr: int = 0
    warmup_survivors: int = 1
    # The warm-up's quantization proxy: "kumaraswamy" (softround at 0.3 with C3's
    # Kumaraswamy noise, a = 2) or "lambda" (softround at 0.35 with Gaussian noise whose
    # standard deviation falls with lambda: (0.747 - 0.432 log10 lambda) / 10, the level
    # Cool-chic 5.0 publishes for its warm-up; 0.20 at lambda 0.001, 0.18 at 0.004).
    warmup_noise: str = "kumaraswamy"
    start_lr: float = 1e-2
    phase2_lr: float = 1e-4
    # Phase 2's latents: "ste" (hard rounding forward, soft-rounding gradient: the latents
    # still move) or "frozen" (hard-rounded and fixed: only the networks train).
    phase2_latents: str = "ste"
    # The latents learn `latent_lr_scale` times faster than the networks: measured on a
    # 256x256 Kodak crop, x10 lowers the loss by 58% after 170 iterations and by 11%
    # after 1100 (latents start at 0 and must travel several units; the networks would
    # diverge at such a learning rate).
    latent_lr_scale: float = 10.0
    # Initial log-scale (natural log of the Laplace scale) the ARM predicts for every
    # latent, through its output bias. At 0 an all-zero grid costs 1.35 bits per value
    # (1.8 bpp with 1.33 latents per pixel), and at a learning rate of 1e-2 the bias
    # needs hundreds of iterations to bring that down.
    # -3 (scale 0.05): measured on the kodim23 sample with `instant`, RD cost -12.6 % at
    # lambda 0.004 (0 -> -1.5 -> -3 -> -5: 3.146, 2.861, 2.749, 4.572 x 1e-3) and -5.3 % at
    # 0.001; with `faster` on a kodim01 crop unchanged (1.8604 -> 1.8607): it speeds the
    # start up, and longer schedules forget it.
    arm_log_scale_init: float = -3.0
    # Where training starts: "zero" (all-zero latents, the output is each plane's mean)
    # or "picture" (`train.init_from_picture`: a colour pyramid of the picture in the
    # latents and a linear synthesis that reads it; latent unit = `init_step_scale` x the
    # high-rate step for lambda, None = the scale whose start has the lowest RD cost).
    init: str = "zero"
    init_step_scale: float | None = None
    # Phase-1 quantization proxy: softround temperature and noise, each annealed
    # linearly (start, end). `noise` is "gaussian" (parameter = standard deviation),
    # "kumaraswamy" (parameter a: 2 = peaked, 1 = uniform in [-1/2, 1/2]) or "uniform".
    # Gaussian 0.25 -> 0.15 against C3's Kumaraswamy 2 -> 1, `fast`, lambda 1e-3, hard-
    # rounded loss: -10.4 % on a 384x256 crop of kodim03, -2.4 % on a 256x256 crop of
    # kodim01 (tools/results/recipe-experiments.md). Uniform noise (std 0.29) at the end
    # of phase 1 trains far from the hard rounding the decoder sees.
    # Temperature 0.35 -> 0.08 and std 0.22 -> 0.15 (Cool-chic 5.0's published phase-1
    # schedule) against 0.3 -> 0.1 and 0.25 -> 0.15: stream RD cost on 256x256 crops of
    # kodim01-04 at lambda 0.001 and 0.004, `fast` -0.77 % (seed 0) and -0.66 % (seed 1),
    # better at 14 of 16; `faster` -0.75 % (seed 0, 6 of 8); tools/results/fast-schedule.jsonl.
    temperature: tuple[float, float] = (0.35, 0.08)
    noise: str = "gaussian"
    noise_param: tuple[float, float] = (0.22, 0.15)
    # Optimizer of the networks ("soap" or "adam"; the latents always use Adam) and the
    # largest L2 norm of the networks' gradient (0: no clipping).
    optimizer: str = "soap"
    grad_clip: float = 0.1
    eval_every: int = 100  # iterations between evaluations with hard rounding
    quant_search: str = "exact"  # "exact" (integer model) or "fast" (float proxy + check)
    rdoq: bool = False  # RD-optimized rounding of the network weights (`rdoq.py`)
    description: str = ""

    def __post_init__(self) -> None:
        # A schedule is checked when it is built, so that a bad `--set` override fails
        # at start-up rather than after the warm-up has run.
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise {self.noise!r} (choose from {', '.join(NOISE_KINDS)})")
        if self.warmup_noise not in ("kumaraswamy", "lambda"):
            raise ValueError(f"unknown warmup_noise {self.warmup_noise!r} (kumaraswamy or lambda)")
        if self.phase2_latents not in ("ste", "frozen"):
            raise ValueError(f"unknown phase2_latents {self.phase2_latents!r} (ste or frozen)")
        if self.init not in ("zero", "picture"):
            raise ValueError(f"unknown init {self.init!r} (zero or picture)")
        if self.optimizer not in ("soap", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r} (soap or adam)")
        if self.grad_clip < 0:
            raise ValueError("grad_clip must not be negative")
        if self.quant_search not in ("exact", "fast"):
            raise ValueError(f"unknown quant_search {self.quant_search!r} (exact or fast)")
        for name in ("temperature", "noise_param"):
            schedule = getattr(self, name)
            if len(schedule) != 2 or not all(isinstance(v, (int, float)) for v in schedule):
                raise ValueError(f"{name} must be two numbers (start, end), not {schedule!r}")
        if min(self.phase1_itr, self.phase2_itr, self.warmup_itr) < 0:
            raise ValueError("iteration counts must not be negative")
        if min(self.warmup_candidates, self.warmup_survivors, self.eval_every) < 1:
            raise ValueError("warmup_candidates, warmup_survivors, eval_every must be at least 1")

    @property
    def warmup_total_itr(self) -> int:
        """Iterations of the whole warm-up, all candidates together (0 if there is none)."""
        if self.warmup_candidates < 2:
            return 0
        second = min(self.warmup_survivors, self.warmup_candidates)
        return (self.warmup_candidates + (second if second > 1 else 0)) * self.warmup_itr

    @property
    def total_itr(self) -> int:
        return self.warmup_total_itr + self.phase1_itr + self.phase2_itr


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "instant",
            phase1_itr=130,
            phase2_itr=15,
            start_lr=1e-2,
            phase2_lr=1e-4,
            phase2_latents="frozen",
            eval_every=50,
            quant_search="fast",
            # Starting from the picture: RD cost -7.9 % on 10 crop/lambda points (better
            # at 8; +5.7 % on the textures of kodim01 at lambda 0.004), instant-init.md.
            init="picture",
            # The older phase-1 schedule: `instant` was measured and timed with it, not
            # with the default above.
            temperature=(0.3, 0.1),
            noise_param=(0.25, 0.15),
            description="about 15 s for 256x256, 45 s for 768x512 on 2 CPU cores",
        ),
        Preset("faster", phase1_itr=500, phase2_itr=60, start_lr=1e-2, eval_every=100),
        Preset(
            "fast",
            phase1_itr=1500,
            phase2_itr=150,
            warmup_candidates=2,
            warmup_itr=100,
        ),
        Preset(
            "medium",
            phase1_itr=4000,
            phase2_itr=300,
            warmup_candidates=3,
            warmup_itr=200,
        ),
        Preset(
            "slow",
            phase1_itr=10000,
            phase2_itr=1000,
            warmup_candidates=4,
            warmup_itr=400,
            eval_every=200,
        ),
        Preset(
            "placebo",
            phase1_itr=30000,
            phase2_itr=1500,
            warmup_candidates=5,
            warmup_itr=400,
            eval_every=500,
        ),
    )
}

DEFAULT_PRESET = "medium"


# Cross-grid context (bitstream v2) of every operating point: the ARM of grid g also sees
# the co-located latents of grids g + 1 .. g + C. C = 3 everywhere for now, until the
# ablation (tools/results/v2-ablation.md) tunes it per operating point.
DEFAULT_CROSS_GRIDS = 3


@dataclass(frozen=True)
class OperatingPoint:
    """A named decoder architecture. `X` in a layer string is the number of channels.

    `cross_grids` applies to version-2 streams (capped at n_grids - 1); v1 has none.
    """

    name: str
    layers_arm: str
    layers_synthesis: str
    n_ctx_rowcol: int
    ups_half_taps: int = 4
    n_grids: int = 7
    cross_grids: int = DEFAULT_CROSS_GRIDS


OPERATING_POINTS: dict[str, OperatingPoint] = {
    op.name: op
    for op in (
        OperatingPoint(
            "500",
            layers_arm="12-1-linear-relu,2-1-linear-none",
            layers_synthesis="12-1-linear-relu,X-1-linear-none,X-3-residual-none",
            n_ctx_rowcol=2,
        ),
        OperatingPoint(
            "1000",
            layers_arm="16-1-linear-relu,16-1-linear-relu,2-1-linear-none",
            layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none",
            n_ctx_rowcol=2,
        ),
        OperatingPoint(
            "2000",
            layers_arm="24-1-linear-relu,24-1-linear-relu,2-1-linear-none",
            layers_synthesis="16-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none",
            n_ctx_rowcol=3,
        ),
        OperatingPoint(
            "3000",
            layers_arm="24-1-linear-relu,24-1-linear-relu,24-1-linear-relu,2-1-linear-none",
            layers_synthesis="48-1-linear-relu,X-1-linear-none,X-3-residual-relu,X-3-residual-none",
            n_ctx_rowcol=3,
        ),
    )
}

AUTO_OP = "auto"
DEFAULT_OP = AUTO_OP
OP_NAMES: tuple[str, ...] = (*OPERATING_POINTS, AUTO_OP)  # what `--op` accepts

# `--op auto`: the networks' weights cost about the same at every rate (0.02 to 0.04
# bpp on a Kodak picture at op 2000) while the latents' rate falls with lambda, so at
# low rates the smaller networks are worth the capacity they give up. Measured with
# `medium` on kodim01-04 (tools/results/recipe-experiments.md, "Operating point
# against lambda"): RD cost MSE + lambda * bpp of op 1000 against op 2000 -1.85 % on
# average at lambda 0.02, -0.5 % at 0.004, +2.65 % at 0.001; of op 500 against op 1000
# -3.8 % at 0.02 (better on all four pictures), +3.5 % at 0.004 (worse on all four). Each
# switch lies between two measured lambdas, near their geometric middle (0.009 for 0.004
# and 0.02, 0.002 for 0.001 and 0.004), which was not measured itself.
AUTO_OPS: tuple[tuple[float, str], ...] = ((0.009, "500"), (0.002, "1000"))
AUTO_DEFAULT_OP = "2000"  # below the smallest lambda of AUTO_OPS
# The thresholds above were measured on 768x512 pictures. The weights cost the same bits
# whatever the size, so per pixel a picture k times smaller pays k times more for them:
# the rule then reads its thresholds at k x lambda. Measured with `fast` on 256x256 centre
# crops of kodim01-04 (k = 6, seed 0, tools/results/fast-op.jsonl), RD cost of the op this
# rule takes against the one it took before: lambda 0.001, op 1000 against 2000: +0.2,
# -2.7, -2.5, -10.0 % (mean -3.8 %); lambda 0.004, op 500 against 1000: -0.9, -6.5, -0.9,
# -10.8 % (mean -4.8 %). With `instant` (145 iterations) the smaller networks lose 1.2 %
# and 1.9 % on the mean (5 crops) but take a quarter less time (instant-op.jsonl).
AUTO_REFERENCE_PIXELS = 768 * 512


def auto_lambda(lmbda: float, pixels: int | None = None) -> float:
    """The lambda at which `--op auto` reads its thresholds for a picture of `pixels`."""
    if not pixels:
        return lmbda
    return lmbda * max(1.0, AUTO_REFERENCE_PIXELS / pixels)


def auto_operating_point(lmbda: float, pixels: int | None = None) -> str:
    """The operating point `--op auto` takes at this lambda (rate weight of MSE + lmbda * bpp)
    for a picture of `pixels` (None: a picture of at least AUTO_REFERENCE_PIXELS)."""
    scaled = auto_lambda(lmbda, pixels)
    return next((op for min_lmbda, op in AUTO_OPS if scaled >= min_lmbda), AUTO_DEFAULT_OP)


def describe_auto_rule() -> str:
    """`--op auto` in words: 'on 768x512 pictures, 500 for lambda >= 0.009, ..., else 2000;
    ...'."""
    rules = [f"{op} for lambda >= {min_lmbda:g}" for min_lmbda, op in AUTO_OPS]
    return (
        "on 768x512 pictures, "
        + ", ".join([*rules, f"else {AUTO_DEFAULT_OP}"])
        + f"; a smaller picture of P pixels reads these at lambda x {AUTO_REFERENCE_PIXELS} / P"
    )


@dataclass
class Architecture:
    """Everything the header says about the decoder's networks (and the stream's version).

    `version` defaults to 1, with `cross_grids` 0, so that an Architecture built without
    them describes the v1 stream it always did; `EncoderConfig` sets both.
    """

    arm_layers: list[LayerDesc]
    syn_layers: list[LayerDesc]
    n_ctx_rowcol: int
    ups_half_taps: int
    n_grids: int
    cross_grids: int = 0  # v2: co-located latents of the next coarser grids in the ARM context
    version: int = fmt.VERSION_V1

    @property
    def dim_arm(self) -> int:
        """Spatial context size 2 r (r + 1), as the header's IntegerCodec.dim_arm."""
        return context_size(self.n_ctx_rowcol)

    @property
    def arm_inputs(self) -> int:
        """Inputs of the first ARM layer: dim_arm + cross_grids (v2 3.3)."""
        return self.dim_arm + self.cross_grids

    def describe(self) -> str:
        arm = ",".join(layer.describe() for layer in self.arm_layers)
        syn = ",".join(layer.describe() for layer in self.syn_layers)
        text = (
            f"arm={arm} ctx={self.n_ctx_rowcol} synthesis={syn} "
            f"ups_taps={2 * self.ups_half_taps} grids={self.n_grids}"
        )
        if self.version != fmt.VERSION_V1:
            text += f" cross_grids={self.cross_grids} v{self.version}"
        return text


def parse_arm_layers(text: str) -> list[LayerDesc]:
    """ARM layers: spec text (`24-1-linear-relu,...,2-1-linear-none`) or Cool-chic's
    `<width>,<hidden layers>` shorthand (e.g. `24,2`: two relu layers of 24, then 2 outputs)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        width, hidden = int(parts[0]), int(parts[1])
        layers = [LayerDesc(width, 1, False, "relu") for _ in range(hidden)]
        return layers + [LayerDesc(2, 1, False, "none")]
    layers = parse_layers(text)
    for layer in layers:
        if layer.kernel != 1:
            raise ValueError(
                f"ARM layer {layer.describe()!r}: the ARM is fully connected, kernel 1"
            )
    return layers


def parse_synthesis_layers(text: str, n_channels: int) -> list[LayerDesc]:
    """Synthesis layers in spec text; `X` as an output width means the picture's channels."""
    items = []
    for item in text.split(","):
        head, _, rest = item.strip().partition("-")
        items.append(f"{n_channels if head.upper() == 'X' else head}-{rest}")
    return parse_layers(",".join(items))


def upsampled_samples(height: int, width: int, n_grids: int) -> int:
    """Samples produced by all 1-D upsampling passes (spec 3.4, informative MAC count)."""
    total = 0
    for level in range(1, n_grids):
        for step in range(level, 0, -1):
            _, w_in = grid_shape(height, width, step)
            h_out, w_out = grid_shape(height, width, step - 1)
            total += h_out * w_in + h_out * w_out
    return total


def mac_per_pixel(
    arch: Architecture, height: int, width: int, coded_grids: list[bool] | None = None
) -> dict[str, float]:
    """Decoder multiplications per pixel as spec 3.4 counts them (informative).

    `coded_grids[g]` is False for a constant grid (no ARM work); default all True.
    """
    pixels = height * width
    coded_grids = coded_grids or [True] * arch.n_grids
    c_in, mac_arm = arch.arm_inputs, 0
    for layer in arch.arm_layers:
        mac_arm += c_in * layer.out_channels
        c_in = layer.out_channels
    c_in, mac_syn = arch.n_grids, 0
    for layer in arch.syn_layers:
        mac_syn += layer.kernel * layer.kernel * c_in * layer.out_channels
        c_in = layer.out_channels
    positions = sum(
        h * w
        for g, (h, w) in enumerate(grid_shape(height, width, g) for g in range(arch.n_grids))
        if coded_grids[g]
    )
    mac = {
        "arm": mac_arm * positions / pixels,
        "upsampling": arch.ups_half_taps * upsampled_samples(height, width, arch.n_grids) / pixels,
        "synthesis": float(mac_syn),
    }
    mac["total"] = sum(mac.values())
    return mac


@dataclass
class EncoderConfig:
    """All encoder options. `None` fields take the preset's / operating point's value."""

    lmbda: float = 1e-3
    preset: str = DEFAULT_PRESET
    op: str = DEFAULT_OP
    start_lr: float | None = None
    layers_synthesis: str | None = None
    layers_arm: str | None = None
    n_ctx_rowcol: int | None = None
    upsampling_kernel_size: int | None = None  # 2T
    n_grids: int | None = None
    # Bitstream version (1 or 2) and, for v2, the cross-grid context C (None: the
    # operating point's, capped at n_grids - 1). Version 1 has no cross-grid context.
    version: int = fmt.DEFAULT_VERSION
    cross_grids: int | None = None
    n_itr: int | None = None  # phase-1 iterations
    n_train_loops: int = 1
    rdoq: bool | None = None  # None: the preset's
    seed: int = 0
    device: str = "auto"

    def resolve_preset(self) -> Preset:
        """The preset with `start_lr` / `n_itr` overrides applied."""
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        preset = PRESETS[self.preset]
        if self.start_lr is not None:
            preset = replace(preset, start_lr=self.start_lr)
        if self.rdoq is not None:
            preset = replace(preset, rdoq=self.rdoq)
        if self.n_itr is not None:
            # Keep the preset's proportions: phase 2 about a tenth of phase 1.
            preset = replace(
                preset,
                phase1_itr=self.n_itr,
                phase2_itr=max(1, min(preset.phase2_itr, self.n_itr // 8)),
            )
        return preset

    def resolve_op(self, pixels: int | None = None) -> str:
        """The operating point's name, `auto` replaced by the one chosen for `lmbda` and a
        picture of `pixels` (None: one of at least AUTO_REFERENCE_PIXELS)."""
        if self.op == AUTO_OP:
            return auto_operating_point(self.lmbda, pixels)
        if self.op not in OPERATING_POINTS:
            names = ", ".join(OP_NAMES)
            raise ValueError(f"unknown operating point {self.op!r} (choose from {names})")
        return self.op

    def resolve_architecture(self, n_channels: int, pixels: int | None = None) -> Architecture:
        """The operating point's architecture (for a picture of `pixels`) with the explicit
        overrides applied."""
        op = OPERATING_POINTS[self.resolve_op(pixels)]
        n_taps = op.ups_half_taps
        if self.upsampling_kernel_size is not None:
            size = self.upsampling_kernel_size
            if size % 2 or not 2 <= size <= 16:
                raise ValueError(f"upsampling kernel size {size}: must be even, 2..16")
            n_taps = size // 2
        n_grids = self.n_grids or op.n_grids
        arch = Architecture(
            arm_layers=parse_arm_layers(self.layers_arm or op.layers_arm),
            syn_layers=parse_synthesis_layers(
                self.layers_synthesis or op.layers_synthesis, n_channels
            ),
            n_ctx_rowcol=self.n_ctx_rowcol or op.n_ctx_rowcol,
            ups_half_taps=n_taps,
            n_grids=n_grids,
            cross_grids=self.resolve_cross_grids(n_grids, op.cross_grids),
            version=self.version,
        )
        check_architecture(arch, n_channels)
        return arch

    def resolve_cross_grids(self, n_grids: int, op_default: int = DEFAULT_CROSS_GRIDS) -> int:
        """The cross-grid count C for `n_grids` grids: 0 for version 1; for version 2 the
        explicit `cross_grids`, or else the operating point's default capped at
        n_grids - 1. ValueError for an explicit C the version or the grids cannot take
        (`check_architecture` rejects an unknown version)."""
        if self.version == fmt.VERSION_V1:
            if self.cross_grids:
                raise ValueError(
                    f"cross_grids {self.cross_grids}: bitstream version 1 has no cross-grid "
                    "context (use version 2)"
                )
            return 0
        limit = fmt.max_cross_grids(self.version, n_grids)
        if self.cross_grids is None:
            return min(op_default, limit)
        if not 0 <= self.cross_grids <= limit:
            raise ValueError(
                f"cross_grids {self.cross_grids}: must be 0..{limit} with {n_grids} grids "
                f"(at most {fmt.MAX_CROSS_GRIDS} and n_grids - 1)"
            )
        return self.cross_grids


def check_architecture(arch: Architecture, n_channels: int) -> None:
    """Raise ValueError, with a one-line message, if the header could not code `arch`."""
    if not 1 <= arch.n_ctx_rowcol <= fmt.MAX_N_CTX_ROWCOL:
        raise ValueError(f"n_ctx_rowcol {arch.n_ctx_rowcol}: must be 1, 2 or 3")
    if not 1 <= arch.n_grids <= fmt.MAX_GRIDS:
        raise ValueError(f"n_grids {arch.n_grids}: must be 1..{fmt.MAX_GRIDS}")
    if arch.version not in fmt.VERSIONS:
        raise ValueError(f"bitstream version {arch.version}: must be one of {fmt.VERSIONS}")
    limit = fmt.max_cross_grids(arch.version, arch.n_grids)
    if not 0 <= arch.cross_grids <= limit:
        raise ValueError(
            f"cross_grids {arch.cross_grids}: must be 0..{limit} for version {arch.version} "
            f"with {arch.n_grids} grids"
        )
    if not 1 <= len(arch.arm_layers) <= fmt.MAX_ARM_LAYERS:
        raise ValueError(f"{len(arch.arm_layers)} ARM layers: must be 1..{fmt.MAX_ARM_LAYERS}")
    if not 1 <= len(arch.syn_layers) <= fmt.MAX_SYN_LAYERS:
        raise ValueError(
            f"{len(arch.syn_layers)} synthesis layers: must be 1..{fmt.MAX_SYN_LAYERS}"
        )
    if arch.arm_layers[-1].out_channels != 2:
        raise ValueError("the last ARM layer must have 2 outputs (mu, log_scale)")
    if arch.syn_layers[-1].out_channels != n_channels:
        raise ValueError(f"the last synthesis layer must have {n_channels} outputs (use X)")
    for what, layers, c_in, kernels, limit in (
        ("ARM", arch.arm_layers, arch.arm_inputs, fmt.ARM_KERNELS, fmt.MAX_MAC_ARM),
        ("synthesis", arch.syn_layers, arch.n_grids, fmt.SYN_KERNELS, fmt.MAX_MAC_SYN),
    ):
        mac = 0
        for layer in layers:
            if not 1 <= layer.out_channels <= fmt.MAX_LAYER_WIDTH:
                raise ValueError(
                    f"{what} layer {layer.describe()}: width must be 1..{fmt.MAX_LAYER_WIDTH}"
                )
            if layer.kernel not in kernels:
                raise ValueError(f"{what} layer {layer.describe()}: kernel must be in {kernels}")
            if layer.kind.adds_input and layer.out_channels != c_in:
                raise ValueError(
                    f"{what} layer {layer.describe()}: {layer.kind.label} needs {c_in} outputs"
                )
            mac += layer.kernel**2 * c_in * layer.out_channels
            c_in = layer.out_channels
        if mac > limit:
            raise ValueError(f"{what} needs {mac} MAC per position, the spec allows {limit}")
