"""From a trained float model to the integers of a stream.

Latents are rounded to integers. Each module's parameters are quantized with a
power-of-two step: ARM weights and biases (`arm_w_shift`, `arm_b_shift`), upsampling
taps (`ups_shift`), synthesis weights and biases (`syn_w_shift`, `syn_b_shift`), an
integer v standing for v / 2^shift. The shifts are chosen by a greedy rate-distortion
search on the real cost:

    cost = MSE + lambda * (latent bits + weight bits) / (W * H)

where the latent bits are the exact code length under the integer Laplace model
(`integer_model.latent_bits`), the weight bits the exact exp-Golomb length of the
weights section, and the MSE that of the samples the integer decoder will output
(`integer_model.simulate_decode` pieces). The ARM only changes the latent bits and
the upsampling / synthesis only the MSE, so the two searches are independent:
`ArmShiftSearch` (arm_w_shift, arm_b_shift), then `DecoderShiftSearch` (ups_shift,
syn_w_shift, syn_b_shift, by coordinate descent). With `rdoq`, the rate-distortion
optimized rounding of `rdoq.py` then moves single weights toward zero where that
lowers the same cost. `quantize_model` returns the codec and a `QuantizationReport`.

A shift is admissible only if no int32 accumulator of spec 2.3 / 6 can wrap on this
picture: conforming streams made by a sensible encoder never wrap (spec 2.2). This is
checked with the actual activations (`model_stats`).

`search="fast"` replaces the exact evaluations by the float model with quantized
weights (same terms, computed in float32 by Torch) and checks the chosen shifts with
the exact evaluation once; it exists for the `instant` preset.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch

from . import integer_model as im
from .bitstream import IntegerCodec, choose_egk, egk_bits
from .format import (
    ARM_FRAC,
    INT16_MAX,
    INT16_MIN,
    MAX_SYN_B_SHIFT,
    MAX_UPS_SHIFT,
    MAX_UPS_TAPS,
    MAX_W_SHIFT,
    SYN_FRAC,
    max_arm_b_shift,
    max_syn_b_shift,
)
from .model import CoolChic, activate, arm_contexts, replicate_pad
from .presets import Architecture

if TYPE_CHECKING:
    from .rdoq import RdoqReport

A = TypeVar("A")
B = TypeVar("B")

# Accumulators must stay below this bound (a margin below 2^31 for the float estimate).
SAFE_ACCUMULATOR = float(1 << 30)


@dataclass
class Shifts:
    """Fixed-point formats of the coded parameters (header fields of spec 3.2)."""

    arm_w: int = 8
    arm_b: int = 12
    ups: int = 10
    syn_w: int = 10
    syn_b: int = 16


# ----------------------------------------------------------------------------- building


def _to_int(values: torch.Tensor, shift: int) -> np.ndarray | None:
    """round(values * 2^shift) as int64, or None if a value leaves the int16 range."""
    v = np.rint(values.detach().double().cpu().numpy() * float(1 << shift))
    if v.size and (v.min() < INT16_MIN or v.max() > INT16_MAX):
        return None
    return v.astype(np.int64)


def integer_latents(model: CoolChic) -> list[np.ndarray]:
    """Latents rounded to integers (clipped to the int16 range of the header's min / max)."""
    return [
        np.clip(np.rint(latent.detach().double().cpu().numpy()), INT16_MIN, INT16_MAX).astype(
            np.int64
        )
        for latent in model.latents
    ]


def quantize_arm(model: CoolChic, w_shift: int, b_shift: int) -> list | None:
    out = []
    for w, b in zip(model.arm.weights, model.arm.biases, strict=True):
        wi, bi = _to_int(w, w_shift), _to_int(b, b_shift)
        if wi is None or bi is None:
            return None
        out.append((wi, bi))
    return out


def quantize_synthesis(model: CoolChic, w_shift: int, b_shift: int) -> list | None:
    out = []
    for w, b in zip(model.synthesis.weights, model.synthesis.biases, strict=True):
        wi, bi = _to_int(w, w_shift), _to_int(b, b_shift)
        if wi is None or bi is None:
            return None
        out.append((wi, bi))
    return out


def build_codec(
    model: CoolChic,
    arch: Architecture,
    bit_depth: int,
    shifts: Shifts,
    latents: list[np.ndarray] | None = None,
) -> IntegerCodec | None:
    """The IntegerCodec of `model` at `shifts`, or None if a parameter overflows int16."""
    arm = quantize_arm(model, shifts.arm_w, shifts.arm_b)
    syn = quantize_synthesis(model, shifts.syn_w, shifts.syn_b)
    taps = _to_int(model.upsampling.taps, shifts.ups)
    if arm is None or syn is None or taps is None:
        return None
    latents = latents if latents is not None else integer_latents(model)
    return _codec(model, arch, bit_depth, shifts, latents, arm, taps, syn)


def _codec(
    model: CoolChic,
    arch: Architecture,
    bit_depth: int,
    shifts: Shifts,
    latents: list[np.ndarray],
    arm: list,
    taps: np.ndarray,
    syn: list,
) -> IntegerCodec:
    """The IntegerCodec of these integer parameters for `model`'s picture and `arch`
    (whose version and cross_grids it takes: the model must have been built for it)."""
    if model.cross_grids != arch.cross_grids:
        raise ValueError(
            f"the model has {model.cross_grids} cross-grid inputs, the architecture "
            f"{arch.cross_grids}"
        )
    return IntegerCodec(
        color_format=model.color_format,
        bit_depth=bit_depth,
        width=model.width,
        height=model.height,
        n_ctx_rowcol=arch.n_ctx_rowcol,
        arm_layers=list(arch.arm_layers),
        syn_layers=list(arch.syn_layers),
        arm_weights=arm,
        ups_taps=taps,
        syn_weights=syn,
        arm_w_shift=shifts.arm_w,
        arm_b_shift=shifts.arm_b,
        ups_shift=shifts.ups,
        syn_w_shift=shifts.syn_w,
        syn_b_shift=shifts.syn_b,
        latents=latents,
        version=arch.version,
        cross_grids=arch.cross_grids,
    )


def dequantized_model(model: CoolChic, codec: IntegerCodec) -> CoolChic:
    """A copy of `model` whose parameters are the codec's integers / 2^shift and latents."""
    twin = copy.deepcopy(model)
    device = next(model.parameters()).device

    def put(param: torch.nn.Parameter, values: np.ndarray, shift: int) -> None:
        param.data = torch.as_tensor(values / float(1 << shift), dtype=torch.float32).to(device)

    for p, (w, _) in zip(twin.arm.weights, codec.arm_weights, strict=True):
        put(p, w, codec.arm_w_shift)
    for p, (_, b) in zip(twin.arm.biases, codec.arm_weights, strict=True):
        put(p, b, codec.arm_b_shift)
    for p, (w, _) in zip(twin.synthesis.weights, codec.syn_weights, strict=True):
        put(p, w, codec.syn_w_shift)
    for p, (_, b) in zip(twin.synthesis.biases, codec.syn_weights, strict=True):
        put(p, b, codec.syn_b_shift)
    put(twin.upsampling.taps, np.asarray(codec.ups_taps), codec.ups_shift)
    for p, latent in zip(twin.latents, codec.latents, strict=True):
        put(p, latent, 0)
    return twin


# ----------------------------------------------------------------------------- costs


def weight_bits(values: Iterable[np.ndarray]) -> int:
    """Exp-Golomb bits of a group of parameters at its best order (spec 4.2)."""
    flat = np.concatenate([np.asarray(v, dtype=np.int64).reshape(-1) for v in values])
    return egk_bits(flat, choose_egk(flat))


def arm_weight_bits(codec: IntegerCodec) -> int:
    return weight_bits(w for w, _ in codec.arm_weights) + weight_bits(
        b for _, b in codec.arm_weights
    )


def decoder_weight_bits(codec: IntegerCodec) -> int:
    """Bits of the upsampling taps and the synthesis weights and biases."""
    return (
        weight_bits([np.asarray(codec.ups_taps)])
        + weight_bits(w for w, _ in codec.syn_weights)
        + weight_bits(b for _, b in codec.syn_weights)
    )


def planes_mse(planes: list[np.ndarray], targets: list[np.ndarray], bit_depth: int) -> float:
    """MSE over all samples, in [0, 1] units (1.0 = 2^bit_depth - 1)."""
    maxval = float((1 << bit_depth) - 1)
    total = sum(
        float(np.sum((p.astype(np.float64) - t.astype(np.float64)) ** 2))
        for p, t in zip(planes, targets, strict=True)
    )
    return total / sum(t.size for t in targets) / (maxval * maxval)


# ----------------------------------------------------------------------------- overflow


@dataclass
class LayerStats:
    """Magnitudes of one layer on this picture, in real units, for the int32 bound.

    wx: max over positions and outputs of sum_i |w_i| |x_i|; w_abs: max over outputs of
    sum_i |w_i|; x_sum: max over positions of sum_i |x_i|; n_in: inputs per output;
    b_abs: max |bias|.
    """

    wx: float
    w_abs: float
    x_sum: float
    n_in: int
    b_abs: float

    def bound(self, frac: int, w_shift: int, b_shift: int) -> float:
        """Upper bound of |accumulator| (spec 2.3) with weights Q`w_shift`, biases Q`b_shift`.

        Quantized weights are within 1/2 of w 2^w_shift, inputs within 1 of x 2^frac; the
        activations of the quantized model drift a little from the float ones: 25% margin.
        """
        margin = 1.25
        products = (
            margin * 2.0 ** (frac + w_shift) * self.wx
            + 2.0**w_shift * self.w_abs
            + margin * 2.0 ** (frac - 1) * self.x_sum
            + 0.5 * self.n_in
        )
        bias = 2.0 ** (frac + w_shift) * self.b_abs + 2.0 ** (frac + w_shift - b_shift - 1)
        return products + bias


@dataclass
class ModelStats:
    arm: list[LayerStats]
    syn: list[LayerStats]
    ups_input_max: float  # largest |input| of any upsampling pass, real units
    ups_tap_sum: float  # sum of |v_k| of the float taps

    def arm_ok(self, w_shift: int, b_shift: int) -> bool:
        return all(s.bound(ARM_FRAC, w_shift, b_shift) < SAFE_ACCUMULATOR for s in self.arm)

    def syn_ok(self, w_shift: int, b_shift: int) -> bool:
        return all(s.bound(SYN_FRAC, w_shift, b_shift) < SAFE_ACCUMULATOR for s in self.syn)

    def ups_ok(self, shift: int) -> bool:
        bound = (self.ups_tap_sum * 2.0**shift + 0.5 * MAX_UPS_TAPS) * (
            1.25 * self.ups_input_max * 2.0**SYN_FRAC + 1.0
        )
        return bound < SAFE_ACCUMULATOR


@torch.no_grad()
def model_stats(model: CoolChic, latents: list[torch.Tensor]) -> ModelStats:
    """Per-layer magnitudes of the float model run on the integer latents."""
    arm_stats = []
    x = arm_contexts(latents, model.n_ctx_rowcol, model.cross_grids)
    for layer, w, b in zip(model.arm.layers, model.arm.weights, model.arm.biases, strict=True):
        x_abs = x.abs()
        arm_stats.append(
            LayerStats(
                wx=float((w.abs() @ x_abs).max()),
                w_abs=float(w.abs().sum(dim=1).max()),
                x_sum=float(x_abs.sum(dim=0).max()),
                n_in=w.shape[1],
                b_abs=float(b.abs().max()),
            )
        )
        y = torch.addmm(b.unsqueeze(1), w, x)
        if layer.kind.adds_input:
            y = y + x
        x = activate(y, layer.activation)

    # Upsampling: the largest input of every pass is the largest value of the cascade.
    ups_max = max(float(latent.abs().max()) for latent in latents)
    kernel_sum = float(model.upsampling.taps.abs().sum())
    dense = model.upsampling(latents, model.sizes)
    ups_max = max(ups_max, float(dense.abs().max())) * max(1.0, kernel_sum)

    syn_stats = []
    x = dense
    for layer, w, b in zip(
        model.synthesis.layers, model.synthesis.weights, model.synthesis.biases, strict=True
    ):
        k = layer.kernel
        x_abs = replicate_pad(x.abs(), k // 2, k // 2).unsqueeze(0)
        wx = torch.nn.functional.conv2d(x_abs, w.abs())
        x_sum = torch.nn.functional.conv2d(x_abs, torch.ones_like(w[:1]))
        syn_stats.append(
            LayerStats(
                wx=float(wx.max()),
                w_abs=float(w.abs().flatten(1).sum(dim=1).max()),
                x_sum=float(x_sum.max()),
                n_in=w[0].numel(),
                b_abs=float(b.abs().max()),
            )
        )
        y = torch.nn.functional.conv2d(replicate_pad(x, k // 2, k // 2).unsqueeze(0), w, b)[0]
        if layer.kind.adds_input:
            y = y + x
        x = activate(y, layer.activation)
    return ModelStats(arm_stats, syn_stats, ups_max, kernel_sum)


# ----------------------------------------------------------------------------- search


@dataclass(frozen=True)
class Trial:
    """One evaluated point of a search; cost in the loss unit (MSE + lambda * bpp terms)."""

    module: str  # "arm" or "synthesis" (synthesis and upsampling together)
    w_shift: int
    b_shift: int
    ups_shift: int | None  # None for the ARM
    exact: bool  # integer simulation (True) or float proxy (False)
    cost: float


@dataclass
class QuantizationReport:
    """Outcome of the quantization. Costs are in the loss unit: MSE + lambda * bpp.

    planes: the samples the decoder will output for the codec (integer simulation);
    latent_bits / weight_bits: exact code lengths; mse in [0, 1] units; evaluations:
    cost evaluations of the shift search; rdoq: what the weight RDOQ did (None if off).
    """

    shifts: Shifts
    latent_bits: float
    weight_bits: float
    mse: float
    evaluations: int
    planes: list[np.ndarray]
    tried: list[Trial] = field(default_factory=list)
    rdoq: RdoqReport | None = None


@dataclass
class QuantizationProblem:
    """What every search needs: the trained model, its integer latents and the picture.

    targets: the picture's planes (integer samples); latents: the rounded latents, as
    integers (`latents`) and as float tensors on the model's device (`latents_t`).
    """

    model: CoolChic
    arch: Architecture
    targets: list[np.ndarray]
    bit_depth: int
    lmbda: float
    latents: list[np.ndarray]
    latents_t: list[torch.Tensor]
    stats: ModelStats
    trials: list[Trial] = field(default_factory=list)

    @classmethod
    def from_model(
        cls,
        model: CoolChic,
        arch: Architecture,
        targets: list[np.ndarray],
        bit_depth: int,
        lmbda: float,
    ) -> QuantizationProblem:
        device = next(model.parameters()).device
        latents = integer_latents(model)
        latents_t = [torch.as_tensor(v, dtype=torch.float32, device=device) for v in latents]
        stats = model_stats(model, latents_t)
        return cls(model, arch, targets, bit_depth, lmbda, latents, latents_t, stats)

    @property
    def pixels(self) -> int:
        return self.model.height * self.model.width

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def record(self, trial: Trial) -> float:
        self.trials.append(trial)
        return trial.cost


def _highest_shift(params: Iterable[torch.Tensor], limit: int) -> int:
    """Largest shift (at most `limit`) at which the largest |value| still fits int16."""
    v_max = max(float(p.detach().abs().max()) for p in params)
    return min(limit, max(0, int(math.floor(math.log2(INT16_MAX / max(v_max, 1e-12))))))


def _set_params(params: Iterable[torch.nn.Parameter], values: list[np.ndarray], shift: int) -> None:
    """Give float parameters the values of integers `values` / 2^shift."""
    for p, v in zip(params, values, strict=True):
        p.data = torch.as_tensor(v / float(1 << shift), dtype=torch.float32, device=p.device)


def _greedy(
    candidates: Iterable[int], cost: Callable[[int], float], patience: int = 2
) -> int | None:
    """First minimum of `cost` along `candidates`, stopping after `patience` worse ones."""
    best, best_cost, worse = None, math.inf, 0
    for c in candidates:
        value = cost(c)
        if value < best_cost:
            best, best_cost, worse = c, value, 0
        elif best is not None:
            worse += 1
            if worse >= patience:
                break
    return best


def _refine(center: int, low: int, high: int, cost: Callable[[int], float]) -> int:
    """Best of center - 1, center, center + 1 (within [low, high]) under `cost`."""
    options = [c for c in (center - 1, center, center + 1) if low <= c <= high]
    costs = {c: cost(c) for c in options}
    return min(options, key=lambda c: (costs[c], c != center))


class ArmShiftSearch:
    """ARM weight and bias formats minimizing lambda * (latent bits + ARM weight bits) / pixels.

    Greedy descent from the finest weight format with the float proxy, then (exact
    search) a +-1 refinement of each shift with the integer model.
    """

    def __init__(self, problem: QuantizationProblem) -> None:
        self.problem = problem
        self.twin = copy.deepcopy(problem.model)  # the float proxy's quantized ARM
        self.w_high = _highest_shift(problem.model.arm.weights, MAX_W_SHIFT)
        self.evaluations = 0

    def cost(self, w_shift: int, b_shift: int, exact: bool) -> float:
        """Rate cost of the ARM at these formats; inf if not admissible."""
        p = self.problem
        if not 0 <= b_shift <= max_arm_b_shift(w_shift) or not p.stats.arm_ok(w_shift, b_shift):
            return math.inf
        arm = quantize_arm(p.model, w_shift, b_shift)
        if arm is None:
            return math.inf
        self.evaluations += 1
        w_bits = weight_bits(w for w, _ in arm) + weight_bits(b for _, b in arm)
        if exact:
            codec = _arm_codec(p.model, p.arch, p.bit_depth, p.latents, arm, w_shift, b_shift)
            bits = im.latent_bits(codec)
        else:
            _set_params(self.twin.arm.weights, [w for w, _ in arm], w_shift)
            _set_params(self.twin.arm.biases, [b for _, b in arm], b_shift)
            with torch.no_grad():
                bits = float(self.twin.rate(p.latents_t).sum())
        cost = p.lmbda * (bits + w_bits) / p.pixels
        return p.record(Trial("arm", w_shift, b_shift, None, exact, cost))

    def run(self, exact: bool) -> tuple[int, int]:
        """(arm_w_shift, arm_b_shift)."""
        w_shift = _greedy(
            range(self.w_high, -1, -1), lambda ws: self.cost(ws, max_arm_b_shift(ws), False)
        )
        if w_shift is None:
            raise RuntimeError("no admissible ARM weight precision (weights too large)")
        b_shift = _greedy(
            range(max_arm_b_shift(w_shift), -1, -1), lambda bs: self.cost(w_shift, bs, False)
        )
        assert b_shift is not None
        if exact:
            w_shift = _refine(
                w_shift, 0, self.w_high, lambda ws: self.cost(ws, min(b_shift, ARM_FRAC + ws), True)
            )
            b_shift = min(b_shift, ARM_FRAC + w_shift)
            b_shift = _refine(
                b_shift, 0, max_arm_b_shift(w_shift), lambda bs: self.cost(w_shift, bs, True)
            )
        return w_shift, b_shift


@dataclass(frozen=True)
class DecoderShifts:
    """Formats of the upsampling taps and the synthesis weights and biases."""

    ups: int
    syn_w: int
    syn_b: int

    def with_shift(self, name: str, value: int) -> DecoderShifts:
        """A copy with field `name` set to `value` and syn_b kept legal for syn_w."""
        moved = replace(self, **{name: value})
        return replace(moved, syn_b=min(moved.syn_b, SYN_FRAC + moved.syn_w))


class DecoderShiftSearch:
    """Upsampling and synthesis formats minimizing MSE + lambda * their weight bits / pixels.

    Starts from the finest admissible formats and lowers each precision in turn (the
    upsampling shift, the synthesis weight shift, the synthesis bias shift) while the
    cost falls, twice over with the float proxy since each choice depends a little on
    the others; then (exact search) refines each by +-1 with the integer model.
    """

    ORDER = ("ups", "syn_w", "syn_b")  # coordinate order of the proxy rounds
    ROUNDS = 2

    def __init__(self, problem: QuantizationProblem) -> None:
        p = self.problem = problem
        # The chosen ARM's codec, given to `refine`; its decoder part is replaced per trial.
        self.arm_codec: IntegerCodec | None = None
        self.twin = copy.deepcopy(p.model)
        self.syn_high = _highest_shift(p.model.synthesis.weights, MAX_W_SHIFT)
        # Biases are int16 too: a start at the largest legal bias shift would leave the
        # coded range for any bias above 2^-12 and make every first trial inadmissible.
        self.syn_b_high = _highest_shift(p.model.synthesis.biases, MAX_SYN_B_SHIFT)
        self.ups_high = _highest_shift([p.model.upsampling.taps], MAX_UPS_SHIFT)
        self.targets_t = [torch.as_tensor(t.astype(np.float32), device=p.device) for t in p.targets]
        self.dense_cache: dict[int, np.ndarray] = {}  # integer dense latent per ups shift
        self.evaluations = 0

    def highest(self, name: str, point: DecoderShifts) -> int:
        if name == "ups":
            return self.ups_high
        if name == "syn_w":
            return self.syn_high
        return self.syn_b_top(point.syn_w)

    def syn_b_top(self, syn_w: int) -> int:
        """Largest bias shift legal for `syn_w` at which the biases fit int16."""
        return min(max_syn_b_shift(syn_w), self.syn_b_high)

    def cost(self, point: DecoderShifts, exact: bool) -> float:
        """MSE + lambda * (taps + synthesis) bits / pixels at `point`; inf if not admissible."""
        p = self.problem
        ws, bs, ups = point.syn_w, point.syn_b, point.ups
        if not 0 <= bs <= max_syn_b_shift(ws) or not 0 <= ups <= self.ups_high:
            return math.inf
        if not p.stats.syn_ok(ws, bs) or not p.stats.ups_ok(ups):
            return math.inf
        syn = quantize_synthesis(p.model, ws, bs)
        taps = _to_int(p.model.upsampling.taps, ups)
        if syn is None or taps is None:
            return math.inf
        self.evaluations += 1
        w_bits = (
            weight_bits([taps]) + weight_bits(w for w, _ in syn) + weight_bits(b for _, b in syn)
        )
        mse = self._exact_mse(point, syn, taps) if exact else self._proxy_mse(point, syn, taps)
        cost = mse + p.lmbda * w_bits / p.pixels
        return p.record(Trial("synthesis", ws, bs, ups, exact, cost))

    def _exact_mse(self, point: DecoderShifts, syn: list, taps: np.ndarray) -> float:
        assert self.arm_codec is not None  # set by `refine`
        codec = replace(
            self.arm_codec,
            syn_weights=syn,
            syn_w_shift=point.syn_w,
            syn_b_shift=point.syn_b,
            ups_taps=taps,
            ups_shift=point.ups,
        )
        if point.ups not in self.dense_cache:
            self.dense_cache[point.ups] = im.upsample_dense(codec)
        planes = im.output_planes(codec, im.synthesis_output(codec, self.dense_cache[point.ups]))
        return planes_mse(planes, self.problem.targets, self.problem.bit_depth)

    @torch.no_grad()
    def _proxy_mse(self, point: DecoderShifts, syn: list, taps: np.ndarray) -> float:
        p, twin = self.problem, self.twin
        _set_params(twin.synthesis.weights, [w for w, _ in syn], point.syn_w)
        _set_params(twin.synthesis.biases, [b for _, b in syn], point.syn_b)
        _set_params([twin.upsampling.taps], [taps], point.ups)
        maxval = float((1 << p.bit_depth) - 1)
        planes = twin.to_planes(twin.decode(p.latents_t))
        err = sum(
            float(((torch.round(plane * maxval) - t) ** 2).sum())
            for plane, t in zip(planes, self.targets_t, strict=True)
        )
        return err / sum(t.size for t in p.targets) / (maxval * maxval)

    def start(self) -> DecoderShifts:
        """The finest admissible formats."""
        stats = self.problem.stats
        syn_w = next(
            (ws for ws in range(self.syn_high, -1, -1) if stats.syn_ok(ws, self.syn_b_top(ws))),
            None,
        )
        ups = next((u for u in range(self.ups_high, -1, -1) if stats.ups_ok(u)), None)
        if syn_w is None or ups is None:
            raise RuntimeError(
                "no admissible synthesis / upsampling precision (activations too large)"
            )
        return DecoderShifts(ups=ups, syn_w=syn_w, syn_b=self.syn_b_top(syn_w))

    def proxy_rounds(self) -> DecoderShifts:
        """The formats the float proxy chooses (needs no ARM)."""
        point = self.start()
        for _ in range(self.ROUNDS):
            for name in self.ORDER:
                value = _greedy(
                    range(self.highest(name, point), -1, -1),
                    lambda v, at=point, name=name: self.cost(at.with_shift(name, v), False),
                )
                if value is not None:
                    point = point.with_shift(name, value)
        return point

    def refine(self, point: DecoderShifts, arm_codec: IntegerCodec) -> DecoderShifts:
        """+-1 refinement of each format with the integer model (and the chosen ARM)."""
        self.arm_codec = arm_codec
        for name in ("syn_w", "syn_b", "ups"):
            value = _refine(
                getattr(point, name),
                0,
                self.highest(name, point),
                lambda v, at=point, name=name: self.cost(at.with_shift(name, v), True),
            )
            point = point.with_shift(name, value)
        return point


def quantize_model(
    model: CoolChic,
    arch: Architecture,
    targets: list[np.ndarray],
    bit_depth: int,
    lmbda: float,
    search: str = "exact",
    rdoq: bool = False,
    parallel: bool = False,
) -> tuple[IntegerCodec, QuantizationReport]:
    """Integer codec of a trained model: shifts by greedy RD search (module docstring),
    then, with `rdoq`, rate-distortion optimized rounding of the weights (`rdoq.py`).

    targets: the picture's planes (integer samples). search: "exact" or "fast".
    parallel: run the independent searches and evaluations on two threads (for a
    caller whose Torch runs on one thread with a second core free); same result.
    """
    if search not in ("exact", "fast"):
        raise ValueError(f"unknown quantization search {search!r} (exact or fast)")
    exact = search == "exact"
    problem = QuantizationProblem.from_model(model, arch, targets, bit_depth, lmbda)

    arm_search = ArmShiftSearch(problem)
    decoder_search = DecoderShiftSearch(problem)
    # The ARM's shifts change only the rate, the decoder's only the MSE: their searches
    # are independent until the decoder's integer refinement, which needs the chosen ARM.
    (arm_w, arm_b), decoder = _both(
        lambda: arm_search.run(exact), decoder_search.proxy_rounds, parallel
    )
    arm = quantize_arm(model, arm_w, arm_b)
    assert arm is not None  # admissible: the search evaluated it
    if exact:
        arm_codec = _arm_codec(model, arch, bit_depth, problem.latents, arm, arm_w, arm_b)
        decoder = decoder_search.refine(decoder, arm_codec)

    shifts = Shifts(
        arm_w=arm_w, arm_b=arm_b, ups=decoder.ups, syn_w=decoder.syn_w, syn_b=decoder.syn_b
    )
    codec = build_codec(model, arch, bit_depth, shifts, problem.latents)
    if codec is None:  # cannot happen: every chosen shift was admissible
        raise RuntimeError("quantization produced out-of-range parameters")
    rdoq_report = None
    if rdoq:
        from .rdoq import rdoq_weights

        codec, rdoq_report = rdoq_weights(model, codec, targets, lmbda)
    latent_bits, planes = _both(
        lambda: im.latent_bits(codec), lambda: im.simulate_decode(codec), parallel
    )
    report = QuantizationReport(
        shifts=shifts,
        latent_bits=latent_bits,
        weight_bits=float(arm_weight_bits(codec) + decoder_weight_bits(codec)),
        mse=planes_mse(planes, targets, bit_depth),
        evaluations=arm_search.evaluations + decoder_search.evaluations,
        planes=planes,
        tried=problem.trials,
        rdoq=rdoq_report,
    )
    return codec, report


def _both(first: Callable[[], A], second: Callable[[], B], parallel: bool) -> tuple[A, B]:
    """(first(), second()); with `parallel`, first() runs on a helper thread meanwhile.

    Both sides spend their time in Torch or NumPy kernels, which release the GIL.
    """
    if not parallel:
        return first(), second()
    with ThreadPoolExecutor(1) as pool:
        first_result = pool.submit(first)
        second_result = second()
        return first_result.result(), second_result


def _arm_codec(
    model: CoolChic,
    arch: Architecture,
    bit_depth: int,
    latents: list[np.ndarray],
    arm: list,
    w_shift: int,
    b_shift: int,
) -> IntegerCodec:
    """A codec with this ARM; its upsampling / synthesis are placeholders (unused by
    `latent_bits`) until the decoder-side search fills them in."""
    shifts = Shifts(arm_w=w_shift, arm_b=b_shift, ups=0, syn_w=0, syn_b=0)
    taps = np.zeros(arch.ups_half_taps, dtype=np.int64)
    return _codec(model, arch, bit_depth, shifts, latents, arm, taps, [])
