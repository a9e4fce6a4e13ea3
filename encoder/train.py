"""Training: overfit a `CoolChic` model to one picture by minimising D + lambda * R.

D is the mean squared error over all output samples (all planes, 4:2:0 chroma at their
own resolution), in the picture's colour space and bit depth, with samples normalised
to [0, 1] (1.0 = 2^bit_depth - 1). R is the estimated latent rate in bits per pixel
(bits / (W * H)), from the model's Laplace probabilities.

The schedule follows C3 (Kim et al., 2024):

- warm-up (optional): a few candidates with different initialisations are trained
  briefly; the best one (by the loss with hard-rounded latents) goes on;
- phase 1: latents pass through softround(softround(y, t) + noise, t); the temperature
  t and the noise parameter follow the preset's linear schedules (by default t from 0.3
  to 0.1 and Gaussian noise of standard deviation 0.25 to 0.15, close to Cool-chic's
  current presets, 0.25 to 0.1, rather than C3's Kumaraswamy noise), and the learning
  rate follows a cosine decay from `start_lr` to 0;
- phase 2: hard rounding in the forward pass, straight-through gradient, small
  learning rate with cosine decay.

Both phases evaluate the model with hard-rounded latents every `eval_every`
iterations and end with the best model seen. Schedules are functions of the iteration
index, so a checkpoint only needs the model, the optimiser and the RNG state.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .model import CoolChic, Quantizer, activate
from .presets import Architecture, Preset

WARMUP_TEMPERATURE = 0.3
WARMUP_NOISE = 2.0
WARMUP_LAMBDA_TEMPERATURE = 0.35  # with Preset.warmup_noise = "lambda"
STE_TEMPERATURE = 1e-4  # phase 2: softround gradient of a nearly hard rounding (Cool-chic)

# SOAP (Vyas et al., 2024: Adam in the eigenbasis of Shampoo's preconditioner) for the
# networks, with the settings Cool-chic 5 publishes: betas 0.95 / 0.95, decoupled
# weight decay 0.01, eigenbasis refreshed every 10 steps. The latents stay with Adam:
# a grid is a 2-D tensor of up to H x W, far too large for a preconditioner.
SOAP_BETAS = (0.95, 0.95)
SOAP_WEIGHT_DECAY = 0.01
SOAP_PRECONDITION_EVERY = 10


@dataclass
class Metrics:
    """Loss terms of one evaluation. mse over all samples in [0, 1] units; bpp = bits/(W*H)."""

    loss: float
    mse: float
    bpp: float

    @property
    def psnr(self) -> float:
        return 10.0 * math.log10(1.0 / self.mse) if self.mse > 0 else math.inf


@dataclass
class Progress:
    """What the progress callback receives after each iteration.

    The loss terms stay device tensors until read: reading `loss`, `bpp` or `psnr`
    waits for the device (a host synchronisation), so a callback reads them only when
    it prints.
    """

    stage: str  # "warmup k/n", "phase 1", "phase 2"
    itr: int  # iterations done so far, all stages together
    total: int  # iterations planned, all stages together
    loss_tensor: torch.Tensor  # training loss of this iteration (0-d, detached)
    mse_tensor: torch.Tensor  # its MSE, [0, 1] units
    bpp_tensor: torch.Tensor  # its estimated rate

    @property
    def loss(self) -> float:
        return float(self.loss_tensor)

    @property
    def bpp(self) -> float:
        """Estimated rate of this iteration, bits per pixel."""
        return float(self.bpp_tensor)

    @property
    def psnr(self) -> float:
        """PSNR of this iteration's (noisy) output, dB."""
        mse = float(self.mse_tensor)
        return 10 * math.log10(1 / mse) if mse > 0 else math.inf


ProgressFn = Callable[[Progress], None]


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cpu' / 'cuda' as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device available")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def build_model(arch: Architecture, height: int, width: int, color_format: int) -> CoolChic:
    return CoolChic(
        height,
        width,
        color_format,
        arch.arm_layers,
        arch.syn_layers,
        arch.n_ctx_rowcol,
        arch.ups_half_taps,
        arch.n_grids,
        arch.cross_grids,
    )


@torch.no_grad()
def init_output_mean(model: CoolChic, means: torch.Tensor) -> None:
    """Make the initial output (all-zero latents) equal to the mean of each plane.

    The bias of the last non-residual synthesis layer is shifted so that its output has
    these means; the residual layers after it start as identities (zero weights). This
    starts the training from a mean-grey picture instead of black, and, more important,
    keeps the relus of residual layers such as `X-3-residual-relu` active: fed a
    negative input they output 0 everywhere, pass no gradient, and the latents would
    never be learnt.
    """
    syn = model.synthesis
    last = max(i for i, layer in enumerate(syn.layers) if not layer.kind.adds_input or i == 0)
    if syn.layers[last].out_channels != means.numel():
        return  # a hidden layer: leave the default initialisation
    x = torch.zeros(model.n_grids, 1, 1)
    for i, (layer, w, b) in enumerate(zip(syn.layers, syn.weights, syn.biases, strict=True)):
        # On a constant input a k x k convolution with replicate padding acts as 1x1.
        y = torch.einsum("oikl,ihw->ohw", w, x) + b.view(-1, 1, 1)
        if i == last:
            b += means.to(b) - y.view(-1)
            y = means.to(b).view(-1, 1, 1)
        elif layer.kind.adds_input:
            y = y + x
        x = activate(y, layer.activation) if i != last else y


def _synthesis_is_linear_pair(model: CoolChic, n_outputs: int) -> bool:
    """True when the synthesis starts with a 1x1 relu layer of at least N outputs, then a
    1x1 layer with no activation to the output channels, then residual layers only: the
    shape every operating point has, and the one `init_from_picture` can set up."""
    layers = model.synthesis.layers
    return (
        len(layers) >= 2
        and layers[0].kernel == 1
        and not layers[0].kind.adds_input
        and layers[0].activation == "relu"
        and layers[0].out_channels >= model.n_grids
        and layers[1].kernel == 1
        and not layers[1].kind.adds_input
        and layers[1].activation == "none"
        and layers[1].out_channels == n_outputs
        and all(layer.kind.adds_input for layer in layers[2:])
    )


def full_resolution_targets(model: CoolChic, targets: list[torch.Tensor]) -> torch.Tensor:
    """(C, H, W): the target planes at the synthesis' resolution (4:2:0 chroma repeated 2x2)."""
    planes = []
    for plane in targets:
        if plane.shape != (model.height, model.width):
            plane = plane.repeat_interleave(2, 0).repeat_interleave(2, 1)
            plane = plane[: model.height, : model.width]
        planes.append(plane)
    return torch.stack(planes)


def latent_step(lmbda: float, n_channels: int, scale: float = 1.0) -> float:
    """Output change (in [0, 1] units, along a unit colour direction) of one latent unit.

    High-rate theory for one latent per pixel: a uniform step s costs s^2 / (12 C) of MSE
    per sample (C channels) and -log2(s) bits; D + lambda R is lowest at s^2 = 6 C lambda
    / ln 2. A coarser grid spreads each latent over 4^g pixels and spends 4^-g bits per
    pixel on it, so the same step holds at every level.
    """
    return scale * math.sqrt(6.0 * n_channels * lmbda / math.log(2.0))


# Step scales `init_from_picture` chooses from, in units of `latent_step`: the scale
# with the lowest RD cost of the start differs by picture (on 256x256 Kodak crops from
# 0.35 on kodim23 to 1.0 on the textures of kodim01 at lambda 0.004).
INIT_STEP_SCALES = (0.35, 0.5, 0.7, 1.0, 1.4)


@dataclass
class _Pyramid:
    step: float  # output change of one latent unit, [0, 1] units
    latents: list[torch.Tensor]  # per grid, in latent units (not rounded)
    directions: torch.Tensor  # (N, C): unit colour direction of each grid
    mse: float  # of the picture rebuilt from the rounded latents, [0, 1] units
    bits: float  # zeroth-order entropy of the rounded latents, per grid, summed


def _entropy_bits(values: torch.Tensor) -> float:
    """Bits of the rounded values under their own histogram (no context)."""
    _, counts = torch.unique(torch.round(values).flatten(), return_counts=True)
    counts = counts.double()
    return float(-(counts * torch.log2(counts / counts.sum())).sum())


def _colour_pyramid(model: CoolChic, residual: torch.Tensor, step: float) -> _Pyramid:
    """Closed-loop pyramid of the mean-free picture `residual` (C, H, W) with latent
    unit `step` along each grid's principal colour direction; consumes `residual`."""
    n_channels = residual.shape[0]
    n = model.n_grids
    latents = [torch.zeros(h, w, device=residual.device) for h, w in model.sizes]
    directions = torch.zeros(n, n_channels, device=residual.device)
    for g in range(n - 1, -1, -1):
        h, w = model.sizes[g]
        coarse = F.adaptive_avg_pool2d(residual.unsqueeze(0), (h, w))[0].reshape(n_channels, -1)
        if n_channels == 1:
            direction = torch.ones(1, device=residual.device)
        else:
            # Principal direction of the residual colours, the sign chosen to add light.
            _, _, v = torch.linalg.svd(coarse.T, full_matrices=False)
            direction = v[0] if v[0].sum() >= 0 else -v[0]
        latents[g] = (direction @ coarse).view(h, w) / step
        directions[g] = direction
        # Closed loop: finer grids see the coarser grids' rounding error and correct it.
        # The upsampling cascade starts at grid g: the coarser grids are left out, the
        # finer ones are the zero channels it stacks beside grid g on its way down.
        only_g = [torch.zeros_like(y) for y in latents[:g]] + [torch.round(latents[g])]
        upsampled = model.upsampling(only_g, model.sizes[: g + 1])[g]
        residual -= step * direction.view(-1, 1, 1) * upsampled.unsqueeze(0)
    # What is left is the error of the picture rebuilt from the rounded latents.
    mse = float(residual.square().mean())
    return _Pyramid(step, latents, directions, mse, sum(_entropy_bits(y) for y in latents))


@torch.no_grad()
def init_from_picture(
    model: CoolChic,
    targets: list[torch.Tensor],
    lmbda: float,
    step_scale: float | None = None,
) -> float | None:
    """Start the model from a colour pyramid of the picture instead of all-zero latents.

    Coarsest grid first, each grid holds the residual left by the rounded coarser ones,
    averaged down to its size and projected on the residual's principal colour
    direction d_g (C = 3) or taken as is (C = 1), in units of s = `step_scale` x
    `latent_step`. Without a `step_scale`, the scale of INIT_STEP_SCALES whose start
    has the lowest MSE + lambda * bpp wins, the rate estimated by the zeroth-order
    entropy of the rounded latents. The synthesis starts as the matching linear map:
    the first layer passes grid g on (through a pair of relu units z and -z, or one
    unit with a bias that keeps its relu open), the second layer weighs it by s d_g,
    and the other hidden units start silent. Training then starts from the picture,
    up to the detail one channel per grid cannot hold, with a gradient on every
    latent. Returns the step scale used, or None (and changes nothing) for a synthesis
    of another shape.
    """
    target = full_resolution_targets(model, targets)
    n_channels = target.shape[0]
    if not _synthesis_is_linear_pair(model, n_channels):
        return None
    target = target.to(model.synthesis.weights[0].device)
    means = target.mean((1, 2))
    n_pixels = model.height * model.width
    best: tuple[float, float, _Pyramid] | None = None
    for scale in INIT_STEP_SCALES if step_scale is None else (step_scale,):
        pyramid = _colour_pyramid(
            model, target - means.view(-1, 1, 1), latent_step(lmbda, n_channels, scale)
        )
        cost = pyramid.mse + lmbda * pyramid.bits / n_pixels
        if best is None or cost < best[0]:
            best = (cost, scale, pyramid)
    assert best is not None
    _, scale, pyramid = best
    step, latents, directions = pyramid.step, pyramid.latents, pyramid.directions
    n = model.n_grids
    # Grid g reaches the output through relu(z) - relu(-z) = z where the first layer
    # has two units for it (finest grids first), else through relu(z + b) with a bias b
    # that keeps the relu open. Large biases cancelled by the output bias would make
    # the output sensitive to the quantization of the second layer's weights: pairs
    # need none.
    syn = model.synthesis
    w1, b1, w2, b2 = syn.weights[0], syn.biases[0], syn.weights[1], syn.biases[1]
    hidden = w1.shape[0]
    n_pairs = min(n, hidden - n)
    w1.zero_()
    b1.zero_()
    w2.zero_()
    b2.copy_(means)
    unit = 0
    for g in range(n):
        column = step * directions[g]
        w1[unit, g, 0, 0] = 1.0
        w2[:, unit, 0, 0] = column
        if g < n_pairs:
            w1[unit + 1, g, 0, 0] = -1.0
            w2[:, unit + 1, 0, 0] = -column
            unit += 2
        else:
            b1[unit] = latents[g].abs().max() + 1.0
            b2 -= column * b1[unit]
            unit += 1
    for latent, value in zip(model.latents, latents, strict=True):
        latent.copy_(value)
    return scale


def distortion(
    model: CoolChic, image: torch.Tensor, targets: list[torch.Tensor], clamp: bool = True
) -> torch.Tensor:
    """Mean squared error over all samples of all planes, [0, 1] units.

    clamp=False (training) skips the final clamp to [0, 1] that the decoder applies: a
    clamped loss has no gradient outside [0, 1], and an output that drifts out
    entirely (e.g. after a large early step) would never come back.
    """
    planes = model.to_planes(image, clamp=clamp)
    total = sum(((p - t) ** 2).sum() for p, t in zip(planes, targets, strict=True))
    return total / sum(t.numel() for t in targets)


def loss_terms(
    model: CoolChic, targets: list[torch.Tensor], lmbda: float, quantizer: Quantizer
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, mse, bpp) tensors of one forward pass."""
    out = model(quantizer)
    mse = distortion(model, out.image, targets, clamp=not torch.is_grad_enabled())
    bpp = out.bits.sum() / (model.height * model.width)
    return mse + lmbda * bpp, mse, bpp


def backward_pass(
    model: CoolChic,
    targets: list[torch.Tensor],
    lmbda: float,
    quantizer: Quantizer,
    rate_thread: ThreadPoolExecutor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward and backward of one training step; returns detached (loss, mse, bpp).

    With a `rate_thread`, the rate branch (contexts, ARM, Laplace bits) runs there while
    this thread runs the distortion branch (upsampling, synthesis, MSE). The branches
    share only the quantized latents and no parameter, so each starts from its own
    detached copy of them; their latent gradients are summed and sent back through the
    quantizer. Same gradients as one backward pass (measured: bit for bit on the sample,
    op 1000), in 0.66-0.70 of its time on a 256x256 picture with one Torch thread per
    branch on 2 cores. Torch releases the GIL inside its kernels, so the branches
    overlap; each is single-threaded and deterministic.
    """
    if rate_thread is None:
        loss, mse, bpp = loss_terms(model, targets, lmbda, quantizer)
        loss.backward()
        return loss.detach(), mse.detach(), bpp.detach()
    quantized = model.quantized_latents(quantizer)
    needs_grad = quantized[0].requires_grad
    for_rate = [q.detach().requires_grad_(needs_grad) for q in quantized]
    for_distortion = [q.detach().requires_grad_(needs_grad) for q in quantized]

    def rate_branch() -> torch.Tensor:
        bpp = model.rate(for_rate).sum() / (model.height * model.width)
        (lmbda * bpp).backward()
        return bpp.detach()

    pending = rate_thread.submit(rate_branch)
    try:
        image = model.decode(for_distortion)
        mse = distortion(model, image, targets, clamp=False)
        mse.backward()
    finally:
        bpp = pending.result()  # never leave the other branch running on an error
    if needs_grad:
        grads = [a.grad + b.grad for a, b in zip(for_distortion, for_rate, strict=True)]
        torch.autograd.backward(quantized, grads)
    mse = mse.detach()
    return mse + lmbda * bpp, mse, bpp


@torch.no_grad()
def evaluate(model: CoolChic, targets: list[torch.Tensor], lmbda: float) -> Metrics:
    """Loss with hard-rounded latents (what the decoder will see, up to weight quantization)."""
    loss, mse, bpp = loss_terms(model, targets, lmbda, Quantizer(mode="round"))
    return Metrics(float(loss), float(mse), float(bpp))


def _cosine(lr: float, itr: int, total: int) -> float:
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(itr, total) / max(total, 1)))


def _linear(start_end: tuple[float, float], itr: int, total: int) -> float:
    a, b = start_end
    return a + (b - a) * min(itr, total) / max(total, 1)


@contextlib.contextmanager
def cpu_allocator_tuned(device: torch.device) -> Iterator[None]:
    """Keep freed memory in glibc's heap while training on CPU.

    Activations of a 768x512 picture are tens of MB each. By default glibc serves them
    with mmap and unmaps them when freed, so every iteration page-faults hundreds of MB
    of fresh zeroed pages; measured on 2 cores this cost 40% of the iteration time.
    Disabling mmap and heap trimming for the duration of the training avoids it. The
    defaults are restored (and the heap trimmed) afterwards.
    """
    libc = None
    if device.type == "cpu" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_max = -1, -4
            libc.mallopt(m_mmap_max, 0)
            libc.mallopt(m_trim_threshold, 1 << 30)
        except (OSError, AttributeError):
            libc = None
    try:
        yield
    finally:
        if libc is not None:
            libc.mallopt(-4, 65536)  # glibc's default M_MMAP_MAX
            libc.mallopt(-1, 128 * 1024)  # glibc's default M_TRIM_THRESHOLD
            libc.malloc_trim(0)


class Adam:
    """Adam (Kingma & Ba, 2015) without weight decay: the arithmetic of torch.optim.Adam's
    single-tensor path on the CPU, operation for operation, so that encodes are unchanged.

    Written out because torch.optim's optimizers import torch._dynamo on their first
    call (0.8 s of a 15 s `instant` encode on 2 cores) for a compiler this encoder does
    not use. `state_dict` has torch's layout, so checkpoints of either load in the other.
    """

    def __init__(
        self, groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.param_groups = [{"betas": betas, "eps": eps, **group} for group in groups]
        for group in self.param_groups:
            group["params"] = list(group["params"])
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def _indexed(self) -> Iterator[tuple[int, dict, torch.Tensor]]:
        index = 0
        for group in self.param_groups:
            for param in group["params"]:
                yield index, group, param
                index += 1

    @torch.no_grad()
    def step(self) -> None:
        for index, group, param in self._indexed():
            if param.grad is None:
                continue
            grad = param.grad
            state = self.state.get(index)
            if state is None:
                state = self.state[index] = {
                    "step": torch.tensor(0.0),
                    "exp_avg": torch.zeros_like(param),
                    "exp_avg_sq": torch.zeros_like(param),
                }
            beta1, beta2 = group["betas"]
            state["step"] += 1
            step = state["step"].item()
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = group["lr"] / (1 - beta1**step)
            denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(group["eps"])
            param.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for _, _, param in self._indexed():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad.zero_()

    def state_dict(self) -> dict:
        groups = []
        start = 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({**group, "params": list(range(start, start + n))})
            start += n
        return {"state": dict(self.state), "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        if len(state["param_groups"]) != len(self.param_groups):
            raise ValueError("optimizer state of another model")
        for group, saved in zip(self.param_groups, state["param_groups"], strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("optimizer state of another model")
            group.update({k: v for k, v in saved.items() if k != "params"})
        params = {index: param for index, _, param in self._indexed()}
        self.state = {
            int(index): {
                key: value.clone() if key == "step" else value.to(params[int(index)].device)
                for key, value in entries.items()
            }
            for index, entries in state["state"].items()
        }


# Modules that pytorch-optimizer imports only to recognise distributed tensors (DTensor),
# which an encoder never holds; they pull in sympy and take 0.8-1.6 s of start-up.
_DISTRIBUTED_TENSOR_MODULES = ("torch.distributed.tensor", "torch.distributed._tensor")


@functools.cache
def _soap_class() -> type:
    """pytorch-optimizer's SOAP, imported without DTensor support, with unwrapped methods.

    A None entry in sys.modules makes an import raise ImportError, which pytorch-optimizer
    catches and then treats every tensor as a plain one; the entries are removed again so
    that the rest of the process imports those modules as usual. torch.optim.Optimizer
    wraps four of its methods so that torch.compile skips them, and the wrapper imports
    torch._dynamo on its first call (0.8 s); nothing here is compiled, so the subclass
    calls the methods themselves.
    """
    blocked = [name for name in _DISTRIBUTED_TENSOR_MODULES if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        from pytorch_optimizer import SOAP
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]

    def unwrapped(name: str) -> Callable:
        method = getattr(torch.optim.Optimizer, name)
        return getattr(method, "__wrapped__", method)

    methods = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
    return type("SOAP", (SOAP,), {name: unwrapped(name) for name in methods})


def _soap(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """pytorch-optimizer's SOAP with the settings above (see `_soap_class`)."""
    return _soap_class()(
        groups,
        lr=lr,
        betas=SOAP_BETAS,
        weight_decay=SOAP_WEIGHT_DECAY,
        precondition_frequency=SOAP_PRECONDITION_EVERY,
    )


class Optimizers:
    """Adam for the latent grids, SOAP or Adam for the networks, stepped together.

    `param_groups` lists the groups of both; each has a `scale`, the factor applied to
    the schedule's learning rate (`latent_lr_scale` for the latents, 1 for the networks).
    """

    def __init__(self, model: CoolChic, lr: float, latent_lr_scale: float, kind: str) -> None:
        latents = list(model.latents.parameters())
        ids = {id(p) for p in latents}
        self.network_params = [p for p in model.parameters() if id(p) not in ids]
        self.latents = Adam(
            [{"params": latents, "lr": lr * latent_lr_scale, "scale": latent_lr_scale}]
        )
        networks = [{"params": self.network_params, "lr": lr, "scale": 1.0}]
        self.networks: Adam | torch.optim.Optimizer
        if kind == "soap":
            self.networks = _soap(networks, lr)
        elif kind == "adam":
            self.networks = Adam(networks)
        else:
            raise ValueError(f"unknown optimizer {kind!r} (soap or adam)")

    @property
    def param_groups(self) -> list[dict]:
        # Looked up each time: `load_state_dict` replaces the optimizers' group dicts.
        return self.latents.param_groups + self.networks.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.latents.zero_grad(set_to_none)
        self.networks.zero_grad(set_to_none)

    def step(self) -> None:
        self.latents.step()
        self.networks.step()

    def state_dict(self) -> dict:
        return {"latents": self.latents.state_dict(), "networks": self.networks.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.latents.load_state_dict(state["latents"])
        self.networks.load_state_dict(state["networks"])


@dataclass
class _Stage:
    name: str
    n_itr: int
    lr: float
    kind: str  # "warmup" | "phase1" | "phase2"


class Trainer:
    """Runs the schedule of a preset on one model; resumable through `state_dict`."""

    def __init__(
        self,
        arch: Architecture,
        targets: list[torch.Tensor],
        picture_size: tuple[int, int],
        color_format: int,
        lmbda: float,
        preset: Preset,
        seed: int,
        device: torch.device,
        progress: ProgressFn | None = None,
        checkpoint: Callable[[dict], None] | None = None,
        latent_lr_scale: float | None = None,
        parallel_branches: bool = False,
    ) -> None:
        """`parallel_branches`: run the rate and distortion branches of each step on two
        threads (`backward_pass`); meant for one Torch thread per branch."""
        self.arch = arch
        self.targets = targets
        self.height, self.width = picture_size
        self.color_format = color_format
        self.lmbda = lmbda
        self.preset = preset
        self.seed = seed
        self.device = device
        self.progress = progress
        self.checkpoint = checkpoint
        self.latent_lr_scale = (
            preset.latent_lr_scale if latent_lr_scale is None else latent_lr_scale
        )
        self.itr_done = 0
        self.total = preset.total_itr
        self.stage_index = 0
        self.stage_itr = 0
        self.model: CoolChic | None = None
        self.optimizer: Optimizers | None = None
        self.best_state: dict | None = None
        self.best_loss = math.inf
        self.log: list[dict] = []
        self.parallel_branches = parallel_branches
        self._rate_thread: ThreadPoolExecutor | None = None

    # -- stages -----------------------------------------------------------------------

    def _stages(self) -> list[_Stage]:
        p = self.preset
        stages = []
        if p.warmup_candidates > 1 and p.warmup_itr > 0:
            stages.append(_Stage("warm-up", p.warmup_itr, p.start_lr, "warmup"))
        stages.append(_Stage("phase 1", p.phase1_itr, p.start_lr, "phase1"))
        if p.phase2_itr > 0:
            stages.append(_Stage("phase 2", p.phase2_itr, p.phase2_lr, "phase2"))
        return stages

    def _new_model(self, seed: int) -> CoolChic:
        torch.manual_seed(seed)
        model = build_model(self.arch, self.height, self.width, self.color_format)
        init_output_mean(model, torch.stack([t.mean() for t in self.targets]).cpu())
        if self.preset.init == "picture":
            init_from_picture(model, self.targets, self.lmbda, self.preset.init_step_scale)
        with torch.no_grad():
            model.arm.biases[-1][1] = self.preset.arm_log_scale_init
        return model.to(self.device)

    def _quantizer(self, stage: _Stage, itr: int) -> Quantizer:
        p = self.preset
        if stage.kind == "warmup":
            if p.warmup_noise == "lambda":
                std = (0.747 - 0.432 * math.log10(self.lmbda)) / 10.0
                return Quantizer("softround", WARMUP_LAMBDA_TEMPERATURE, "gaussian", std)
            return Quantizer("softround", WARMUP_TEMPERATURE, "kumaraswamy", WARMUP_NOISE)
        if stage.kind == "phase1":
            t = _linear(p.temperature, itr, stage.n_itr)
            return Quantizer("softround", t, p.noise, _linear(p.noise_param, itr, stage.n_itr))
        if p.phase2_latents == "frozen":
            return Quantizer("round")  # no gradient reaches the latents
        return Quantizer("ste", STE_TEMPERATURE)

    def _optimizer(self, model: CoolChic, lr: float) -> Optimizers:
        """Adam for the latents, at `latent_lr_scale` times the networks' learning rate;
        the preset's optimizer (SOAP or Adam) for the networks."""
        return Optimizers(model, lr, self.latent_lr_scale, self.preset.optimizer)

    def _lr(self, stage: _Stage, itr: int) -> float:
        if stage.kind == "warmup":
            return stage.lr  # constant, as in Cool-chic's warm-up
        return _cosine(stage.lr, itr, stage.n_itr)

    # -- running ------------------------------------------------------------------------

    def run(self) -> CoolChic:
        """Train to the end of the schedule; return the best model (hard-rounding loss)."""
        stages = self._stages()
        if self.parallel_branches:
            self._rate_thread = ThreadPoolExecutor(1, thread_name_prefix="rate-branch")
        try:
            with cpu_allocator_tuned(self.device):
                while self.stage_index < len(stages):
                    stage = stages[self.stage_index]
                    if stage.kind == "warmup":
                        self._warmup(stage)
                    else:
                        self._train_stage(stage)
                    self.stage_index += 1
                    self.stage_itr = 0
                    self._save_checkpoint()
        finally:
            if self._rate_thread is not None:
                self._rate_thread.shutdown()
                self._rate_thread = None
        assert self.model is not None
        return self.model

    def _warmup(self, stage: _Stage) -> None:
        """Train each candidate for stage.n_itr iterations; the best `warmup_survivors`
        train stage.n_itr more (each with its own optimizer state); the best goes on.

        Candidates are ranked by the loss with hard-rounded latents. Only the survivors
        so far are kept in memory.
        """
        n = self.preset.warmup_candidates
        n_keep = min(self.preset.warmup_survivors, n)
        n_runs = n + (n_keep if n_keep > 1 else 0)
        survivors: list[tuple[float, int, CoolChic, Optimizers]] = []
        for k in range(n):
            model = self._new_model(self.seed * 1000 + k)
            optimizer = self._optimizer(model, stage.lr)
            loss = self._warmup_train(model, optimizer, stage, f"warm-up {k + 1}/{n_runs}")
            survivors = sorted([*survivors, (loss, k, model, optimizer)], key=lambda c: c[:2])
            survivors = survivors[:n_keep]
        if n_keep > 1:
            ranked = []
            for rank, (_, k, model, optimizer) in enumerate(survivors):
                name = f"warm-up {n + rank + 1}/{n_runs}"
                loss = self._warmup_train(model, optimizer, stage, name)
                ranked.append((loss, k, model, optimizer))
            survivors = sorted(ranked, key=lambda c: c[:2])
        self.model = survivors[0][2]
        self.optimizer = None

    def _warmup_train(
        self, model: CoolChic, optimizer: Optimizers, stage: _Stage, name: str
    ) -> float:
        """stage.n_itr warm-up iterations; return the loss with hard-rounded latents."""
        for itr in range(stage.n_itr):
            self._step(model, optimizer, stage, itr, name)
        metrics = evaluate(model, self.targets, self.lmbda)
        self.log.append({"stage": name, "itr": self.itr_done, **asdict(metrics)})
        return metrics.loss

    def _train_stage(self, stage: _Stage) -> None:
        if self.model is None:
            self.model = self._new_model(self.seed * 1000)
        if self.optimizer is None or self.stage_itr == 0:
            self.optimizer = self._optimizer(self.model, stage.lr)
            self.best_state, self.best_loss = None, math.inf
        model, optimizer = self.model, self.optimizer
        every = max(1, self.preset.eval_every)
        while self.stage_itr < stage.n_itr:
            self._step(model, optimizer, stage, self.stage_itr, stage.name)
            self.stage_itr += 1
            if self.stage_itr % every == 0 or self.stage_itr == stage.n_itr:
                self._evaluate_and_keep(stage)
                self._save_checkpoint()
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        self.optimizer = None

    def _evaluate_and_keep(self, stage: _Stage) -> None:
        assert self.model is not None
        metrics = evaluate(self.model, self.targets, self.lmbda)
        self.log.append({"stage": stage.name, "itr": self.itr_done, **asdict(metrics)})
        if metrics.loss < self.best_loss:
            self.best_loss = metrics.loss
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def _step(
        self, model: CoolChic, optimizer: Optimizers, stage: _Stage, itr: int, name: str
    ) -> None:
        lr = self._lr(stage, itr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["scale"]
        quantizer = self._quantizer(stage, itr)
        optimizer.zero_grad(set_to_none=True)
        loss, mse, bpp = backward_pass(
            model, self.targets, self.lmbda, quantizer, self._rate_thread
        )
        if self.preset.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(optimizer.network_params, self.preset.grad_clip)
        optimizer.step()
        self.itr_done += 1
        if self.progress is not None:
            self.progress(Progress(name, self.itr_done, self.total, loss, mse, bpp))

    # -- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything needed to continue: model, optimiser, best model, counters, RNG."""
        return {
            "stage_index": self.stage_index,
            "stage_itr": self.stage_itr,
            "itr_done": self.itr_done,
            "model": None if self.model is None else self.model.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "best_state": self.best_state,
            "best_loss": self.best_loss,
            "log": self.log,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.stage_index = state["stage_index"]
        self.stage_itr = state["stage_itr"]
        self.itr_done = state["itr_done"]
        self.best_state = state["best_state"]
        self.best_loss = state["best_loss"]
        self.log = list(state["log"])
        if state["model"] is not None:
            self.model = self._new_model(self.seed * 1000)
            self.model.load_state_dict(state["model"])
            if state["optimizer"] is not None:
                self.optimizer = self._optimizer(self.model, 0.0)
                self.optimizer.load_state_dict(state["optimizer"])
        # RNG states are CPU byte tensors whatever the device: a checkpoint loaded with
        # map_location=<device> has moved them, and set_rng_state refuses them there.
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])

    def _save_checkpoint(self) -> None:
        """Called at every evaluation and stage end: a few MB, negligible next to the
        `eval_every` iterations between two calls."""
        if self.checkpoint is not None:
            self.checkpoint(self.state_dict())


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write a checkpoint atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
