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
the upsampling / synthesis only the MSE, so the two searches are independent.

A shift is admissible only if no int32 accumulator of spec 2.3 / 6 can wrap on this
picture: conforming streams made by a sensible encoder never wrap (spec 2.2). This is
checked with the actual activations (`_max_accumulators`).

`search="fast"` replaces the exact evaluations by the float model with quantized
weights (same terms, computed in float32 by Torch) and checks the chosen shifts with
the exact evaluation once; it exists for the `instant` preset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from . import integer_model as im
from .bitstream import INT16_MAX, INT16_MIN, IntegerCodec, choose_egk, egk_bits
from .model import ARM_FRAC, SYN_FRAC, CoolChic, activate, arm_contexts, replicate_pad
from .presets import Architecture

INT32_LIMIT = float(1 << 31)
# Accumulators must stay below this bound (a margin below 2^31 for the float estimate).
SAFE_ACCUMULATOR = float(1 << 30)
MAX_W_SHIFT = 16
MAX_UPS_SHIFT = 16


@dataclass
class Shifts:
    """Fixed-point formats of the coded parameters (header fields of spec 3.2)."""

    arm_w: int = 8
    arm_b: int = 12
    ups: int = 10
    syn_w: int = 10
    syn_b: int = 16


@dataclass
class QuantizationReport:
    """Outcome of the search. Costs are in the loss unit: MSE + lambda * bpp."""

    shifts: Shifts
    latent_bits: float
    weight_bits: float
    mse: float
    evaluations: int
    tried: list[dict] = field(default_factory=list)


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
    """The IntegerCodec of these integer parameters for `model`'s picture and `arch`."""
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
    )


def dequantized_model(model: CoolChic, codec: IntegerCodec) -> CoolChic:
    """A copy of `model` whose parameters are the codec's integers / 2^shift and latents."""
    import copy

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
        n_taps = 8
        bound = (self.ups_tap_sum * 2.0**shift + 0.5 * n_taps) * (
            1.25 * self.ups_input_max * 2.0**SYN_FRAC + 1.0
        )
        return bound < SAFE_ACCUMULATOR


@torch.no_grad()
def model_stats(model: CoolChic, latents: list[torch.Tensor]) -> ModelStats:
    """Per-layer magnitudes of the float model run on the integer latents."""
    arm_stats = []
    x = arm_contexts(latents, model.n_ctx_rowcol)
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
        if layer.residual:
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
        if layer.residual:
            y = y + x
        x = activate(y, layer.activation)
    return ModelStats(arm_stats, syn_stats, ups_max, kernel_sum)


# ----------------------------------------------------------------------------- search


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


def quantize_model(
    model: CoolChic,
    arch: Architecture,
    targets: list[np.ndarray],
    bit_depth: int,
    lmbda: float,
    search: str = "exact",
) -> tuple[IntegerCodec, QuantizationReport]:
    """Integer codec of a trained model: shifts by greedy RD search (module docstring).

    targets: the picture's planes (integer samples). search: "exact" or "fast".
    """
    import copy
    from dataclasses import replace

    pixels = model.height * model.width
    device = next(model.parameters()).device
    latents = integer_latents(model)
    latents_t = [torch.as_tensor(v, dtype=torch.float32, device=device) for v in latents]
    stats = model_stats(model, latents_t)
    twin = copy.deepcopy(model)
    tried: list[dict] = []
    evaluations = 0

    def set_params(params, values: list[np.ndarray], shift: int) -> None:
        for p, v in zip(params, values, strict=True):
            p.data = torch.as_tensor(v / float(1 << shift), dtype=torch.float32, device=device)

    # ---- ARM: latent bits + ARM weight bits -----------------------------------------
    w_max = max(float(w.detach().abs().max()) for w in model.arm.weights)
    ws_high = min(MAX_W_SHIFT, max(0, int(math.floor(math.log2(INT16_MAX / max(w_max, 1e-12))))))

    def arm_cost(ws: int, bs: int, exact: bool) -> float:
        nonlocal evaluations
        if not 0 <= bs <= min(24, ARM_FRAC + ws) or not stats.arm_ok(ws, bs):
            return math.inf
        arm = quantize_arm(model, ws, bs)
        if arm is None:
            return math.inf
        evaluations += 1
        w_bits = weight_bits(w for w, _ in arm) + weight_bits(b for _, b in arm)
        if exact:
            codec = _arm_codec(model, arch, bit_depth, latents, arm, ws, bs)
            bits = im.latent_bits(codec)
        else:
            set_params(twin.arm.weights, [w for w, _ in arm], ws)
            set_params(twin.arm.biases, [b for _, b in arm], bs)
            with torch.no_grad():
                bits = float(twin.rate(latents_t).sum())
        cost = lmbda * (bits + w_bits) / pixels
        tried.append({"module": "arm", "w_shift": ws, "b_shift": bs, "exact": exact, "cost": cost})
        return cost

    arm_w = _greedy(range(ws_high, -1, -1), lambda ws: arm_cost(ws, min(24, ARM_FRAC + ws), False))
    if arm_w is None:
        raise RuntimeError("no admissible ARM weight precision (weights too large)")
    arm_b = _greedy(range(min(24, ARM_FRAC + arm_w), -1, -1), lambda bs: arm_cost(arm_w, bs, False))
    assert arm_b is not None
    if search == "exact":
        arm_w = _refine(arm_w, 0, ws_high, lambda ws: arm_cost(ws, min(arm_b, ARM_FRAC + ws), True))
        arm_b = min(arm_b, ARM_FRAC + arm_w)
        arm_b = _refine(arm_b, 0, min(24, ARM_FRAC + arm_w), lambda bs: arm_cost(arm_w, bs, True))

    # ---- Upsampling and synthesis: MSE + their weight bits ------------------------------
    w_max = max(float(w.detach().abs().max()) for w in model.synthesis.weights)
    syn_high = min(MAX_W_SHIFT, max(0, int(math.floor(math.log2(INT16_MAX / max(w_max, 1e-12))))))
    t_max = float(model.upsampling.taps.detach().abs().max())
    ups_high = min(MAX_UPS_SHIFT, max(0, int(math.floor(math.log2(INT16_MAX / max(t_max, 1e-12))))))
    maxval = float((1 << bit_depth) - 1)
    targets_t = [torch.as_tensor(t.astype(np.float32), device=device) for t in targets]
    dense_cache: dict[int, np.ndarray] = {}
    base_codec = _arm_codec(
        model, arch, bit_depth, latents, quantize_arm(model, arm_w, arm_b), arm_w, arm_b
    )

    def syn_cost(ws: int, bs: int, ups: int, exact: bool) -> float:
        nonlocal evaluations
        if not 0 <= bs <= min(28, SYN_FRAC + ws) or not 0 <= ups <= ups_high:
            return math.inf
        if not stats.syn_ok(ws, bs) or not stats.ups_ok(ups):
            return math.inf
        syn = quantize_synthesis(model, ws, bs)
        taps = _to_int(model.upsampling.taps, ups)
        if syn is None or taps is None:
            return math.inf
        evaluations += 1
        w_bits = (
            weight_bits([taps]) + weight_bits(w for w, _ in syn) + weight_bits(b for _, b in syn)
        )
        if exact:
            codec = replace(
                base_codec,
                syn_weights=syn,
                syn_w_shift=ws,
                syn_b_shift=bs,
                ups_taps=taps,
                ups_shift=ups,
            )
            if ups not in dense_cache:
                dense_cache[ups] = im.upsample_dense(codec)
            planes = im.output_planes(codec, im.synthesis_output(codec, dense_cache[ups]))
            mse = planes_mse(planes, targets, bit_depth)
        else:
            set_params(twin.synthesis.weights, [w for w, _ in syn], ws)
            set_params(twin.synthesis.biases, [b for _, b in syn], bs)
            set_params([twin.upsampling.taps], [taps], ups)
            with torch.no_grad():
                image = twin.decode(latents_t)
                planes = twin.to_planes(image)
                err = sum(
                    float(((torch.round(p * maxval) - t) ** 2).sum())
                    for p, t in zip(planes, targets_t, strict=True)
                )
            mse = err / sum(t.size for t in targets) / (maxval * maxval)
        cost = mse + lmbda * w_bits / pixels
        tried.append(
            {
                "module": "synthesis",
                "w_shift": ws,
                "b_shift": bs,
                "ups_shift": ups,
                "exact": exact,
                "cost": cost,
            }
        )
        return cost

    # Start from precise settings, then lower each precision while the cost falls.
    syn_w = next(
        (ws for ws in range(syn_high, -1, -1) if stats.syn_ok(ws, min(28, SYN_FRAC + ws))), None
    )
    ups = next((u for u in range(ups_high, -1, -1) if stats.ups_ok(u)), None)
    if syn_w is None or ups is None:
        raise RuntimeError("no admissible synthesis / upsampling precision (activations too large)")
    cur = {"w": syn_w, "b": min(28, SYN_FRAC + syn_w), "ups": ups}

    def cost_with(name: str, exact: bool) -> Callable[[int], float]:
        def cost(value: int) -> float:
            trial = dict(cur, **{name: value})
            if name == "w":  # keep the bias format legal for this weight format
                trial["b"] = min(trial["b"], SYN_FRAC + value)
            return syn_cost(trial["w"], trial["b"], trial["ups"], exact)

        return cost

    def set_choice(name: str, value: int | None) -> None:
        if value is not None:
            cur[name] = value
            cur["b"] = min(cur["b"], SYN_FRAC + cur["w"])

    highest = {
        "w": lambda: syn_high,
        "b": lambda: min(28, SYN_FRAC + cur["w"]),
        "ups": lambda: ups_high,
    }
    for _ in range(2):  # two rounds: each choice depends a little on the others
        for name in ("ups", "w", "b"):
            set_choice(name, _greedy(range(highest[name](), -1, -1), cost_with(name, False)))
    if search == "exact":
        for name in ("w", "b", "ups"):
            set_choice(name, _refine(cur[name], 0, highest[name](), cost_with(name, True)))
    syn_w, syn_b, ups = cur["w"], cur["b"], cur["ups"]

    shifts = Shifts(arm_w=arm_w, arm_b=arm_b, ups=ups, syn_w=syn_w, syn_b=syn_b)
    codec = build_codec(model, arch, bit_depth, shifts, latents)
    if codec is None:  # cannot happen: every chosen shift was admissible
        raise RuntimeError("quantization produced out-of-range parameters")
    planes = im.simulate_decode(codec)
    report = QuantizationReport(
        shifts=shifts,
        latent_bits=im.latent_bits(codec),
        weight_bits=float(arm_weight_bits(codec) + decoder_weight_bits(codec)),
        mse=planes_mse(planes, targets, bit_depth),
        evaluations=evaluations,
        tried=tried,
    )
    report.planes = planes  # type: ignore[attr-defined]
    return codec, report


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
    `latent_bits`) until the second search fills them in."""
    shifts = Shifts(arm_w=w_shift, arm_b=b_shift, ups=0, syn_w=0, syn_b=0)
    taps = np.zeros(arch.ups_half_taps, dtype=np.int64)
    return _codec(model, arch, bit_depth, shifts, latents, arm, taps, [])
