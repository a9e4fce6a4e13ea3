"""Rate-distortion optimized quantization (RDOQ) of the network weights.

After the shift search (`quantize.py`) every coded parameter is round(w 2^shift). Moving
an integer parameter one step toward zero, or to zero, shortens its exp-Golomb code
(spec 4.2) where its zigzag index crosses a power of two, and changes the decoded
picture (upsampling, synthesis) or the latent bits (ARM). RDOQ keeps the moves that
lower the real cost

    J = MSE + lambda * (latent bits + weight bits) / (W * H)

as the integer simulation (`integer_model`) measures it. Simulating every move alone
is too slow (one synthesis of the picture per move), so each pass

1. estimates, for every parameter and both moves, the change of J to second order
   with the float model carrying the codec's parameters:
   dJ ~ g d + h d^2 / 2 + lambda * dbits / pixels, d the move in real units, dbits
   exact at the group's current exp-Golomb order, g the gradient of
   MSE + lambda * latent bits / pixels, h the Gauss-Newton diagonal of the MSE
   (2 / N sum_p (dy_p / dw)^2) plus lambda / pixels times the Fisher diagonal of the
   latent bits (ln 2 sum_n (db_n / dw)^2); both sums of squares are estimated from a
   few random +-1 projections, E[(d(z . y) / dw)^2] = sum_p (dy_p / dw)^2;
2. verifies, module by module (ARM, upsampling, synthesis), the moves predicted to
   help, best first, in batches: a batch is kept only if the exact J falls (weight
   bits with re-chosen exp-Golomb orders, the module's term re-simulated), and is
   halved otherwise.

Bounded by `max_evaluations` exact evaluations per module and pass (and optionally
by a time budget). The result is an ordinary codec: the closed-loop check still applies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from . import integer_model as im
from .bitstream import IntegerCodec, choose_egk, zigzag
from .model import CoolChic, arm_contexts, laplace_bits
from .quantize import arm_weight_bits, decoder_weight_bits, dequantized_model, planes_mse

MODULES = ("arm", "ups", "syn")  # verification order; the ARM only changes the latent bits


@dataclass(frozen=True)
class ParamRef:
    """One coded parameter array of a codec: module, layer index and weights or biases."""

    module: str  # "arm", "ups" or "syn"
    layer: int  # layer index (0 for the upsampling taps)
    part: int  # 0 weights, 1 biases (0 for the taps)

    def get(self, codec: IntegerCodec) -> np.ndarray:
        if self.module == "ups":
            return np.asarray(codec.ups_taps, dtype=np.int64)
        pairs = codec.arm_weights if self.module == "arm" else codec.syn_weights
        return np.asarray(pairs[self.layer][self.part], dtype=np.int64)

    def shift(self, codec: IntegerCodec) -> int:
        return {
            ("arm", 0): codec.arm_w_shift,
            ("arm", 1): codec.arm_b_shift,
            ("ups", 0): codec.ups_shift,
            ("syn", 0): codec.syn_w_shift,
            ("syn", 1): codec.syn_b_shift,
        }[(self.module, self.part)]

    def group(self, codec: IntegerCodec) -> np.ndarray:
        """All values sharing this array's exp-Golomb order (spec 4.3), flattened."""
        if self.module == "ups":
            return self.get(codec).reshape(-1)
        pairs = codec.arm_weights if self.module == "arm" else codec.syn_weights
        return np.concatenate([np.asarray(p[self.part]).reshape(-1) for p in pairs])

    def param(self, model: CoolChic) -> torch.nn.Parameter:
        """The float model's parameter coded by this array."""
        if self.module == "ups":
            return model.upsampling.taps
        net = model.arm if self.module == "arm" else model.synthesis
        return (net.weights if self.part == 0 else net.biases)[self.layer]


def param_refs(codec: IntegerCodec) -> list[ParamRef]:
    """Every coded parameter array of `codec`, in stream order."""
    refs = [ParamRef("arm", i, part) for i in range(len(codec.arm_weights)) for part in (0, 1)]
    refs.append(ParamRef("ups", 0, 0))
    refs += [ParamRef("syn", i, part) for i in range(len(codec.syn_weights)) for part in (0, 1)]
    return refs


def with_values(codec: IntegerCodec, ref: ParamRef, values: np.ndarray) -> IntegerCodec:
    """A copy of `codec` whose array `ref` is `values`."""
    if ref.module == "ups":
        return replace(codec, ups_taps=values)
    name = "arm_weights" if ref.module == "arm" else "syn_weights"
    pairs = list(getattr(codec, name))
    pair = list(pairs[ref.layer])
    pair[ref.part] = values
    pairs[ref.layer] = (pair[0], pair[1])
    return replace(codec, **{name: pairs})


def egk_lengths(values: np.ndarray, k: int) -> np.ndarray:
    """Length in bits of the order-k signed exp-Golomb code of each value (spec 4.2)."""
    x = zigzag(values) + (1 << k)
    _, bit_length = np.frexp(x.astype(np.float64))  # exact: x < 2^18
    return 2 * bit_length.astype(np.int64) - k - 1


# ----------------------------------------------------------------------------- exact cost


@dataclass
class _State:
    """A codec and the exact terms of its cost; `dense` is the integer dense latent."""

    codec: IntegerCodec
    dense: np.ndarray
    latent_bits: float
    mse: float
    weight_bits: int

    def cost(self, lmbda: float, pixels: int) -> float:
        return self.mse + lmbda * (self.latent_bits + self.weight_bits) / pixels


def _weight_bits(codec: IntegerCodec) -> int:
    return arm_weight_bits(codec) + decoder_weight_bits(codec)


def _evaluate(codec: IntegerCodec, targets: list[np.ndarray]) -> _State:
    dense = im.upsample_dense(codec)
    planes = im.output_planes(codec, im.synthesis_output(codec, dense))
    return _State(
        codec,
        dense,
        im.latent_bits(codec),
        planes_mse(planes, targets, codec.bit_depth),
        _weight_bits(codec),
    )


def _re_evaluate(state: _State, codec: IntegerCodec, module: str, targets) -> _State:
    """The state of `codec`, which differs from `state.codec` in `module` only."""
    if module == "arm":
        return replace(state, codec=codec, latent_bits=im.latent_bits(codec),
                       weight_bits=_weight_bits(codec))  # fmt: skip
    dense = im.upsample_dense(codec) if module == "ups" else state.dense
    planes = im.output_planes(codec, im.synthesis_output(codec, dense))
    return replace(
        state,
        codec=codec,
        dense=dense,
        mse=planes_mse(planes, targets, codec.bit_depth),
        weight_bits=_weight_bits(codec),
    )


# ----------------------------------------------------------------------------- estimates


def _curvature(
    outputs: torch.Tensor, params: list[torch.Tensor], n_probes: int, gen: torch.Generator
) -> list[torch.Tensor]:
    """Estimates of sum_p (d outputs_p / d param)^2 from `n_probes` random +-1 projections."""
    sums = [torch.zeros_like(p) for p in params]
    for _ in range(n_probes):
        z = torch.randint(0, 2, outputs.shape, generator=gen).to(outputs) * 2 - 1
        grads = torch.autograd.grad((z * outputs).sum(), params, retain_graph=True)
        for acc, g in zip(sums, grads, strict=True):
            acc += g.detach() ** 2
    return [acc / n_probes for acc in sums]


def estimate_derivatives(
    model: CoolChic,
    codec: IntegerCodec,
    targets: list[np.ndarray],
    lmbda: float,
    n_probes: int = 8,
    seed: int = 0,
) -> dict[ParamRef, tuple[np.ndarray, np.ndarray]]:
    """(g, h) of J for every coded array, in real units (module docstring, step 1)."""
    twin = dequantized_model(model, codec)
    for p in twin.parameters():
        p.requires_grad_(False)
    refs = param_refs(codec)
    device = next(twin.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    pixels = codec.width * codec.height
    latents = [p.detach() for p in twin.latents]
    out: dict[ParamRef, tuple[np.ndarray, np.ndarray]] = {}

    # Distortion: upsampling and synthesis.
    d_refs = [r for r in refs if r.module != "arm"]
    d_params = [r.param(twin).requires_grad_(True) for r in d_refs]
    maxval = float((1 << codec.bit_depth) - 1)
    with torch.enable_grad():
        planes = twin.to_planes(twin.decode(latents))
        y = torch.cat([p.reshape(-1) for p in planes])
        t = torch.cat([torch.as_tensor(p, dtype=torch.float32).reshape(-1) for p in targets])
        mse = ((y - t.to(device) / maxval) ** 2).mean()
        g_d = torch.autograd.grad(mse, d_params, retain_graph=True)
        h_d = _curvature(y, d_params, n_probes, gen)
    for r, g, h in zip(d_refs, g_d, h_d, strict=True):
        out[r] = (g.cpu().double().numpy(), (2.0 / y.numel()) * h.cpu().double().numpy())

    # Rate: the ARM, on the coded (non-constant) grids only.
    a_refs = [r for r in refs if r.module == "arm"]
    a_params = [r.param(twin).requires_grad_(True) for r in a_refs]
    scale = lmbda / pixels
    with torch.enable_grad():
        ctx = arm_contexts(latents, twin.n_ctx_rowcol, twin.cross_grids)
        values = torch.cat([v.reshape(-1) for v in latents])
        mu, log_scale = twin.arm(ctx)
        bits = laplace_bits(values, mu, log_scale)
        coded = torch.cat(
            [torch.full((v.numel(),), float(v.min() != v.max()), device=device) for v in latents]
        )
        bits = bits * coded
        g_r = torch.autograd.grad(bits.sum(), a_params, retain_graph=True)
        h_r = _curvature(bits, a_params, n_probes, gen)
    for r, g, h in zip(a_refs, g_r, h_r, strict=True):
        out[r] = (
            scale * g.cpu().double().numpy(),
            scale * math.log(2.0) * h.cpu().double().numpy(),
        )
    return out


@dataclass(frozen=True)
class Move:
    """Set element `index` (flat) of array `ref` to `value`; `gain` is the predicted dJ."""

    ref: ParamRef
    index: int
    value: int
    gain: float


def candidate_moves(
    codec: IntegerCodec,
    derivatives: dict[ParamRef, tuple[np.ndarray, np.ndarray]],
    lmbda: float,
) -> list[Move]:
    """Moves toward zero predicted to lower J, best (most negative dJ) first."""
    pixels = codec.width * codec.height
    moves: list[Move] = []
    for ref, (g, h) in derivatives.items():
        v = ref.get(codec).reshape(-1)
        k = choose_egk(ref.group(codec))
        base = egk_lengths(v, k)
        step = 1.0 / float(1 << ref.shift(codec))
        g, h = g.reshape(-1), h.reshape(-1)
        best_gain = np.full(v.shape, np.inf)
        best_value = v.copy()
        for target in (v - np.sign(v), np.zeros_like(v)):
            delta = (target - v) * step
            gain = g * delta + 0.5 * h * delta * delta
            gain += lmbda * (egk_lengths(target, k) - base) / pixels
            better = (target != v) & (gain < best_gain)
            best_gain = np.where(better, gain, best_gain)
            best_value = np.where(better, target, best_value)
        for i in np.flatnonzero(best_gain < 0):
            moves.append(Move(ref, int(i), int(best_value[i]), float(best_gain[i])))
    moves.sort(key=lambda m: m.gain)
    return moves


def apply_moves(codec: IntegerCodec, moves: list[Move]) -> IntegerCodec:
    arrays: dict[ParamRef, np.ndarray] = {}
    for m in moves:
        if m.ref not in arrays:
            arrays[m.ref] = m.ref.get(codec).copy()
        arrays[m.ref].reshape(-1)[m.index] = m.value
    for ref, values in arrays.items():
        codec = with_values(codec, ref, values)
    return codec


# ----------------------------------------------------------------------------- search


@dataclass
class RdoqReport:
    """What RDOQ did. Costs in the loss unit (MSE + lambda * bpp); bits exact."""

    cost_before: float
    cost_after: float
    weight_bits_before: int
    weight_bits_after: int
    mse_before: float
    mse_after: float
    latent_bits_before: float
    latent_bits_after: float
    predicted: int  # moves predicted to help, summed over passes
    kept: dict[str, int] = field(default_factory=dict)  # moves kept per module
    evaluations: int = 0  # exact evaluations
    passes: int = 0
    seconds: float = 0.0


def rdoq_weights(
    model: CoolChic,
    codec: IntegerCodec,
    targets: list[np.ndarray],
    lmbda: float,
    passes: int = 2,
    max_evaluations: int = 8,
    time_budget_s: float | None = None,
    n_probes: int = 4,
) -> tuple[IntegerCodec, RdoqReport]:
    """`codec` with some weights moved toward zero where that lowers J (module docstring).

    model: the trained float model `codec` was quantized from (for the estimates).
    The work is bounded by `passes` x 3 modules x `max_evaluations` exact evaluations
    (each one synthesis of the picture, or one latent-bits count for the ARM), and
    optionally by `time_budget_s` of wall time (checked between evaluations; the result
    then depends on the machine's speed).
    """
    start = time.perf_counter()
    pixels = codec.width * codec.height
    state = _evaluate(codec, targets)
    first = state
    cost = state.cost(lmbda, pixels)
    report = RdoqReport(
        cost_before=cost,
        cost_after=cost,
        weight_bits_before=state.weight_bits,
        weight_bits_after=state.weight_bits,
        mse_before=state.mse,
        mse_after=state.mse,
        latent_bits_before=state.latent_bits,
        latent_bits_after=state.latent_bits,
        predicted=0,
        kept={m: 0 for m in MODULES},
    )

    def out_of_time() -> bool:
        return time_budget_s is not None and time.perf_counter() - start > time_budget_s

    for pass_index in range(passes):
        if out_of_time():
            break
        derivatives = estimate_derivatives(model, state.codec, targets, lmbda, n_probes, pass_index)
        moves = candidate_moves(state.codec, derivatives, lmbda)
        report.predicted += len(moves)
        report.passes += 1
        kept_this_pass = 0
        for module in MODULES:
            queue = [m for m in moves if m.ref.module == module]
            batch, evaluations = len(queue), 0
            while queue and evaluations < max_evaluations:
                if out_of_time():
                    break
                trial_moves = queue[:batch]
                trial = _re_evaluate(state, apply_moves(state.codec, trial_moves), module, targets)
                evaluations += 1
                if trial.cost(lmbda, pixels) < state.cost(lmbda, pixels):
                    state = trial
                    report.kept[module] += len(trial_moves)
                    kept_this_pass += len(trial_moves)
                    queue = queue[batch:]
                elif batch > 1:
                    batch = (batch + 1) // 2
                else:
                    queue = queue[1:]  # the best predicted move alone does not help
            report.evaluations += evaluations
        if kept_this_pass == 0:
            break
    report.cost_after = state.cost(lmbda, pixels)
    report.weight_bits_after = state.weight_bits
    report.mse_after = state.mse
    report.latent_bits_after = state.latent_bits
    report.seconds = time.perf_counter() - start
    assert report.cost_after <= first.cost(lmbda, pixels)
    return state.codec, report
