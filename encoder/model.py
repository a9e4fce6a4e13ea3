"""Floating-point Torch model of the coolchic-ref decoder (spec bitstream-v1.md).

Every stage mirrors the normative integer process, without its rounding:

- latent grids: grid g is `ceil(H / 2^g) x ceil(W / 2^g)`, one value per position, in
  latent units (the integer decoder's latents are these values rounded);
- ARM (spec 5.2-5.3): fully connected layers on the `2 r (r + 1)` causal neighbours,
  zeros outside the grid; outputs `mu` and `log_scale` (natural log of the Laplace scale);
- Laplace model (spec 5.4): `log_scale` clamped to [-6, 8], `mu` clamped to +-2^15;
  the probability of a latent is the Laplace mass of `[v - 1/2, v + 1/2]`;
- upsampling (spec 6): 2x polyphase filter with T folded taps, replicate border,
  vertical pass then horizontal pass, cascaded from grid g down to full resolution;
- synthesis (spec 7): convolutions with replicate padding, optional residual,
  relu / leakyrelu (slope 1/16) / none;
- samples (spec 8): output channels in [0, 1] units (1.0 = the largest sample value);
  4:2:0 chroma = 2x2 average of the full-resolution chroma with a clamped border.

Training runs the ARM on every position of every grid at once (teacher forcing): the
latents are known, so the wavefront order of the decoder does not matter here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import format as fmt
from .format import ColorFormat, LayerKind, context_offsets, grid_shape, tap_offset

# The spec's fixed-point clips and slopes in real units (spec 2.2, 5.4).
LOG_SCALE_MIN = fmt.LOG_SCALE_MIN / (1 << fmt.ARM_FRAC)  # -6.0
LOG_SCALE_MAX = fmt.LOG_SCALE_MAX / (1 << fmt.ARM_FRAC)  # 8.0
MU_LIMIT = float(fmt.MU_LIMIT >> fmt.ARM_FRAC)  # 2^15
LEAKY_SLOPE = 1.0 / (1 << fmt.LEAKY_SHIFT)  # 1/16
MAX_BITS_PER_LATENT = float(fmt.PRECISION)  # every symbol has a frequency >= 1 out of 2^24


class Layer(Protocol):
    """What the model needs of a layer descriptor (bitstream.LayerDesc fits)."""

    out_channels: int
    kernel: int
    kind: LayerKind
    activation: str


def grid_sizes(height: int, width: int, n_grids: int) -> list[tuple[int, int]]:
    """(rows, columns) of every latent grid: `ceil(H / 2^g) x ceil(W / 2^g)` (spec 3.4)."""
    return [grid_shape(height, width, g) for g in range(n_grids)]


# ----------------------------------------------------------------------------- quantizers


def softround(x: Tensor, temperature: float) -> Tensor:
    """Soft rounding of Agustsson & Theis (2020): tends to round(x) as temperature -> 0."""
    floor = torch.floor(x)
    delta = x - floor - 0.5
    return floor + 0.5 + 0.5 * torch.tanh(delta / temperature) / math.tanh(0.5 / temperature)


def kumaraswamy_noise(shape: torch.Size, a: float, device: torch.device) -> Tensor:
    """Noise in (-1/2, 1/2) from a Kumaraswamy(a, b) law whose mode is 1/2 (C3).

    a = 1 is the uniform law; larger a concentrates the noise around 0.
    """
    u = torch.rand(shape, device=device)
    if a == 1.0:
        return u - 0.5
    b = (2.0**a * (a - 1.0) + 1.0) / a
    # Inverse CDF; clamp keeps (1 - u) ** (1/b) away from 1, where the gradient-free
    # power would give exactly 0 and then 0 ** (1/a) is fine but wasteful to special-case.
    return (1.0 - (1.0 - u).clamp_min(1e-12) ** (1.0 / b)) ** (1.0 / a) - 0.5


NOISE_KINDS = ("gaussian", "kumaraswamy", "uniform", "none")


@dataclass
class Quantizer:
    """How the latents are quantized during training.

    mode: "softround" (C3 phase 1: softround(softround(x) + noise)), "ste" (round in
    the forward pass, softround gradient at `temperature` in the backward pass; with
    `temperature <= 0` the plain straight-through identity gradient), "round" (hard,
    detached: the latents get no gradient), "none" (identity).
    noise: "kumaraswamy" (parameter a), "uniform", "gaussian" (parameter = std).
    """

    mode: str = "softround"
    temperature: float = 0.3
    noise: str = "kumaraswamy"
    noise_param: float = 2.0

    def __call__(self, x: Tensor) -> Tensor:
        if self.mode == "none":
            return x
        if self.mode == "round":
            # Detached: nothing upstream of a hard rounding gets a gradient (it would be
            # 0), so the backward pass skips the latents, their contexts and upsampling.
            return torch.round(x.detach())
        if self.mode == "ste":
            if self.temperature <= 0:
                return x + (torch.round(x) - x).detach()
            soft = softround(x, self.temperature)
            return soft + (torch.round(x) - soft).detach()
        if self.mode != "softround":
            raise ValueError(f"unknown quantizer mode {self.mode!r}")
        y = softround(x, self.temperature)
        if self.noise == "kumaraswamy":
            y = y + kumaraswamy_noise(x.shape, self.noise_param, x.device)
        elif self.noise == "uniform":
            y = y + (torch.rand_like(x) - 0.5)
        elif self.noise == "gaussian":
            y = y + torch.randn_like(x) * self.noise_param
        elif self.noise != "none":
            raise ValueError(f"unknown noise {self.noise!r}")
        return softround(y, self.temperature)


# ----------------------------------------------------------------------------- layers


def activate(x: Tensor, name: str, inplace: bool = False) -> Tensor:
    """Spec 2.2 activations in floating point. `inplace` saves an allocation when x is a
    fresh result that nothing else needs (an addmm / conv output)."""
    if name == "relu":
        return F.relu(x, inplace=inplace)
    if name == "leakyrelu":
        return F.leaky_relu(x, LEAKY_SLOPE, inplace=inplace)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}")


class Arm(nn.Module):
    """Auto-regressive model: an MLP from the `dim_arm` context values to (mu, log_scale).

    Works on the columns of a (dim_arm, N) matrix: one column per latent position. This
    channels-first layout makes every layer one (out, in) x (in, N) matrix product, the
    fastest layout measured on CPU.
    """

    def __init__(self, dim_arm: int, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.layers = list(layers)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        c_in = dim_arm
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            w = torch.empty(layer.out_channels, c_in)
            if last or layer.kind.adds_input:
                # The output layer starts at (mu, log_scale) = (0, 0); a residual layer
                # starts as the identity. Both are the usual Cool-chic initialisation.
                nn.init.zeros_(w)
            else:
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.zeros(layer.out_channels)))
            c_in = layer.out_channels

    def forward(self, ctx: Tensor) -> tuple[Tensor, Tensor]:
        x = ctx
        for layer, w, b in zip(self.layers, self.weights, self.biases, strict=True):
            y = torch.addmm(b.unsqueeze(1), w, x)
            if layer.kind.adds_input:
                y = y + x
            x = activate(y, layer.activation, inplace=True)
        return x[0], x[1]


def fold_taps(taps: Tensor) -> tuple[Tensor, int]:
    """Even- and odd-phase 1-D kernels of the folded filter (spec 6), shape (2, 2L+1).

    Output 2j sits at input coordinate j - 1/4 and output 2j+1 at j + 1/4; tap k weighs
    the input at distance (2k+1)/4, i.e. at offset m (from j) given by the spec's table.
    """
    n_taps = taps.shape[0]
    half = n_taps // 2
    rows, cols = _fold_indices(n_taps, taps.device)
    kernel = taps.new_zeros(2, 2 * half + 1)
    kernel = kernel.index_put((rows, cols), torch.cat([taps, taps]))
    return kernel, half


@functools.lru_cache(maxsize=64)
def _fold_indices(n_taps: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """(phase, offset + L) of each tap in the folded kernel, on `device`; cached so that
    a forward pass does not copy index tensors to the device every time."""
    half = n_taps // 2
    even_idx, odd_idx = [], []
    for k in range(n_taps):
        even_idx.append(tap_offset(k, odd_output=False) + half)
        odd_idx.append(tap_offset(k, odd_output=True) + half)
    rows = torch.cat([torch.zeros(n_taps, dtype=torch.long), torch.ones(n_taps, dtype=torch.long)])
    cols = torch.tensor(even_idx + odd_idx)
    return rows.to(device), cols.to(device)


def default_taps(n_taps: int) -> Tensor:
    """Bicubic (a = -0.75) folded taps at distances 1/4, 3/4, ...; bilinear when T < 4."""
    if n_taps < 4:
        taps = [0.75, 0.25] + [0.0] * max(0, n_taps - 2)
        return torch.tensor(taps[:n_taps] if n_taps >= 2 else [1.0])
    a = -0.75

    def cubic(d: float) -> float:
        if d <= 1:
            return (a + 2) * d**3 - (a + 3) * d**2 + 1
        if d < 2:
            return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
        return 0.0

    return torch.tensor([cubic((2 * k + 1) / 4) for k in range(n_taps)])


class _UpsamplePass(torch.autograd.Function):
    """One 1-D pass of spec 6 on (C, h, w): vertical (along h) or horizontal (along w).

    Each output phase (even, odd) is a weighted sum of the 2L + 1 shifted slices of the
    replicate-padded input, written into its interleaved place of the output; the
    backward scatters the phase gradients back onto the same slices and folds the
    padding onto the border samples. Measured on a 768x512 picture, this is 2.5x faster
    (forward + backward) than one two-channel `F.conv2d` and its backward: Torch's
    convolutions are slow on CPU for one input channel and a 1-D kernel.
    """

    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor, n_out: int, vertical: bool) -> Tensor:  # type: ignore[override]
        c, h, w = x.shape
        k = kernel.shape[1]
        half = k // 2
        axis, n = (1, h) if vertical else (2, w)
        xp = replicate_pad(x, half, 0) if vertical else replicate_pad(x, 0, half)
        phases = x.new_empty((c, h, 2, w) if vertical else (c, h, w, 2))
        for p in range(2):
            acc = xp.narrow(axis, 0, n) * kernel[p, 0]
            for m in range(1, k):
                acc.addcmul_(xp.narrow(axis, m, n), kernel[p, m])
            phases.select(axis + 1, p).copy_(acc)
        out = phases.view(c, 2 * h, w) if vertical else phases.view(c, h, 2 * w)
        ctx.save_for_backward(xp, kernel)
        ctx.vertical = vertical
        ctx.shape = (c, h, w)
        return out.narrow(axis, 0, n_out).contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        xp, kernel = ctx.saved_tensors
        c, h, w = ctx.shape
        k = kernel.shape[1]
        half = k // 2
        axis, n = (1, h) if ctx.vertical else (2, w)
        if grad.shape[axis] < 2 * n:  # a cropped last output sample has gradient 0
            pad = [0, 2 * n - grad.shape[axis]]
            grad = F.pad(grad, [0, 0] + pad if ctx.vertical else pad)
        shape = (c, h, 2, w) if ctx.vertical else (c, h, w, 2)
        phase_grads = [grad.reshape(shape).select(axis + 1, p).contiguous() for p in range(2)]
        grad_kernel = None
        if ctx.needs_input_grad[1]:
            grad_kernel = torch.stack(
                [
                    torch.stack([(g * xp.narrow(axis, m, n)).sum() for m in range(k)])
                    for g in phase_grads
                ]
            )
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_xp = torch.zeros_like(xp)
            for p, g in enumerate(phase_grads):
                for m in range(k):
                    grad_xp.narrow(axis, m, n).addcmul_(g, kernel[p, m])
            # Replicate padding: the padded samples are copies of the first / last one.
            grad_x = grad_xp.narrow(axis, half, n).clone()
            grad_x.narrow(axis, 0, 1).add_(grad_xp.narrow(axis, 0, half).sum(axis, keepdim=True))
            grad_x.narrow(axis, n - 1, 1).add_(
                grad_xp.narrow(axis, half + n, half).sum(axis, keepdim=True)
            )
        return grad_x, grad_kernel, None, None


class Upsampling(nn.Module):
    """The learned 2x upsampling of spec 6, shared by all grids and both directions."""

    def __init__(self, n_taps: int) -> None:
        super().__init__()
        self.taps = nn.Parameter(default_taps(n_taps).float())

    def forward(self, grids: Sequence[Tensor], sizes: Sequence[tuple[int, int]]) -> Tensor:
        """Dense latent (N, H, W) from grids g = 0..N-1 of sizes `sizes`.

        Each channel is upsampled on its own with the same filter, so the per-grid
        cascade of spec 6 is computed level by level on a growing channel stack.
        """
        kernel, half = fold_taps(self.taps)
        n = len(grids)
        x = grids[n - 1].unsqueeze(0)
        for level in range(n - 1, 0, -1):
            h_out, w_out = sizes[level - 1]
            x = _UpsamplePass.apply(x, kernel, h_out, True)
            x = _UpsamplePass.apply(x, kernel, w_out, False)
            x = torch.cat([grids[level - 1].unsqueeze(0), x], dim=0)
        return x


class _Conv(torch.autograd.Function):
    """A 'valid' k x k convolution of a padded (C_in, H + k - 1, W + k - 1) input.

    The backward is written out because Torch's convolution backward on CPU is slow
    for the synthesis' few channels and large pictures: its input gradient alone took
    twice the time of the forward convolution it amounts to. Here the input gradient is
    a forward convolution of the zero-padded output gradient with the flipped,
    transposed kernel (the adjoint of a valid convolution); the weight gradient is
    Torch's own.
    """

    @staticmethod
    def forward(ctx, padded: Tensor, weight: Tensor, bias: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(padded, weight)
        return F.conv2d(padded.unsqueeze(0), weight, bias)[0]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        padded, weight = ctx.saved_tensors
        k = weight.shape[-1]
        grad4 = grad.unsqueeze(0)
        grad_padded = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            adjoint = weight.flip(2, 3).transpose(0, 1)
            grad_padded = F.conv2d(F.pad(grad4, (k - 1,) * 4), adjoint)[0]
        if ctx.needs_input_grad[1]:
            grad_weight = torch.ops.aten.convolution_backward(
                grad4, padded.unsqueeze(0), weight, None,
                [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [False, True, False],
            )[1]  # fmt: skip
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum((1, 2))
        return grad_padded, grad_weight, grad_bias


class Synthesis(nn.Module):
    """Convolution stack of spec 7 with replicate padding, on (C, H, W) tensors."""

    def __init__(self, n_inputs: int, layers: Sequence[Layer]) -> None:
        super().__init__()
        self.layers = list(layers)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        c_in = n_inputs
        for layer in self.layers:
            k = layer.kernel
            w = torch.empty(layer.out_channels, c_in, k, k)
            b = torch.zeros(layer.out_channels)
            if layer.kind.adds_input:
                nn.init.zeros_(w)  # residual layers start as the identity
            else:
                # Torch's default conv init, biases included: with all-zero latents at the
                # start, zero biases would leave every relu at exactly 0, where no
                # gradient flows back to the latents.
                nn.init.kaiming_uniform_(w, a=math.sqrt(5))
                bound = 1.0 / math.sqrt(c_in * k * k)
                nn.init.uniform_(b, -bound, bound)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))
            c_in = layer.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(C_out, H, W) from the dense latent (N, H, W)."""
        c, h, w_ = x.shape
        for layer, w, b in zip(self.layers, self.weights, self.biases, strict=True):
            k = layer.kernel
            if k == 1:
                # A 1x1 convolution is one matrix product on (C, H*W): faster than conv2d.
                y = torch.addmm(b.unsqueeze(1), w.flatten(1), x.reshape(x.shape[0], h * w_))
                y = y.view(-1, h, w_)
            else:
                y = _Conv.apply(replicate_pad(x, k // 2, k // 2), w, b)
            if layer.kind.adds_input:
                y = y + x
            x = activate(y, layer.activation, inplace=True)
        return x


# ----------------------------------------------------------------------------- rate


def laplace_bits(value: Tensor, mu: Tensor, log_scale: Tensor) -> Tensor:
    """-log2 of the Laplace(mu, e^log_scale) mass of [value - 1/2, value + 1/2], per element.

    Clamps as spec 5.4 does, and caps the cost at 24 bits (the integer table gives every
    symbol at least 1 / 2^24).
    """
    mu = mu.clamp(-MU_LIMIT, MU_LIMIT)
    inv_scale = torch.exp(-log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX))
    u = (value - mu).abs()
    # Each branch sees u clamped to its own domain: torch.where would otherwise propagate
    # the NaN / inf gradients of the branch it discards.
    u_far = u.clamp_min(0.5)
    u_near = u.clamp_max(0.5)
    # |v - mu| >= 1/2: both bin ends on one side of mu, mass = e^{-(u-1/2)/b} (1 - e^{-1/b}) / 2.
    log_far = -math.log(2.0) - (u_far - 0.5) * inv_scale + torch.log(-torch.expm1(-inv_scale))
    # |v - mu| < 1/2: the bin contains mu, mass = 1 - (e^{-(1/2-u)/b} + e^{-(1/2+u)/b}) / 2.
    near = -0.5 * (
        torch.expm1(-(0.5 - u_near) * inv_scale) + torch.expm1(-(0.5 + u_near) * inv_scale)
    )
    log_near = torch.log(near.clamp_min(1e-30))
    log_p = torch.where(u >= 0.5, log_far, log_near)
    return (-log_p / math.log(2.0)).clamp_max(MAX_BITS_PER_LATENT)


class _Contexts(torch.autograd.Function):
    """(dim_arm, sum of h_g w_g) causal contexts of all grids, zeros outside (spec 5.2).

    Column i of grid g's block is position i (raster order) of grid g. Autograd through
    `dim_arm` slices of a padded grid is slow on CPU (each slice's backward allocates a
    zero-filled grid); this backward accumulates the shifted gradients in one buffer.
    """

    @staticmethod
    def forward(ctx, n_ctx_rowcol: int, *grids: Tensor) -> Tensor:  # type: ignore[override]
        r = n_ctx_rowcol
        offsets = context_offsets(r)
        ctx.n_ctx_rowcol = r
        ctx.shapes = [tuple(y.shape) for y in grids]
        total = sum(y.numel() for y in grids)
        out = grids[0].new_empty(len(offsets), total)
        start = 0
        for y in grids:
            h, w = y.shape
            padded = F.pad(y, (r, r, r, 0))  # left, right, top; nothing below is causal
            block = out[:, start : start + h * w].view(len(offsets), h, w)
            for j, (dy, dx) in enumerate(offsets):
                block[j].copy_(padded[r + dy : r + dy + h, r + dx : r + dx + w])
            start += h * w
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        r = ctx.n_ctx_rowcol
        offsets = context_offsets(r)
        grads: list[Tensor | None] = [None]
        grad = grad.contiguous()
        start = 0
        for h, w in ctx.shapes:
            acc = grad.new_zeros(h + r, w + 2 * r)
            for j, (dy, dx) in enumerate(offsets):
                # Row j of the block is contiguous: a view, where reshaping the whole
                # (dim_arm, h * w) block would copy it.
                row = grad[j, start : start + h * w].view(h, w)
                acc[r + dy : r + dy + h, r + dx : r + dx + w] += row
            grads.append(acc[r:, r : r + w].contiguous())
            start += h * w
        return tuple(grads)


def arm_contexts(grids: Sequence[Tensor], n_ctx_rowcol: int, cross_grids: int = 0) -> Tensor:
    """(dim_arm, sum of h_g w_g) causal contexts of all grids, zeros outside (spec 5.2).

    With `cross_grids` = c > 0 (v2), c rows follow the spatial context: row k - 1 of grid
    g's block holds the co-located latent of grid g + k, at (y >> k, x >> k), or 0 where
    grid g + k does not exist. Coarser grids are decoded first, so all of it is known.
    """
    spatial = _Contexts.apply(n_ctx_rowcol, *grids)
    if not cross_grids:
        return spatial
    blocks = []
    for g, y in enumerate(grids):
        h, w = y.shape
        rows = []
        for k in range(1, cross_grids + 1):
            if g + k < len(grids):
                coarse = grids[g + k]
                idx_y = torch.arange(h, device=y.device) >> k
                idx_x = torch.arange(w, device=y.device) >> k
                rows.append(coarse[idx_y][:, idx_x].reshape(-1))
            else:
                rows.append(y.new_zeros(h * w))
        blocks.append(torch.stack(rows))
    return torch.cat([spatial, torch.cat(blocks, dim=1)], dim=0)


def replicate_pad(x: Tensor, rows: int, cols: int) -> Tensor:
    """Pad the last two dimensions of (C, H, W) x by `rows` / `cols` samples on both sides,
    repeating the border samples (spec 6 and 7 clip their indexes to the picture)."""
    if not rows and not cols:
        return x
    return F.pad(x.unsqueeze(0), (cols, cols, rows, rows), mode="replicate")[0]


# ----------------------------------------------------------------------------- model


@dataclass
class ForwardOutput:
    """Result of one forward pass.

    image: (C, H, W) synthesis output in [0, 1] units (not clamped, full resolution).
    bits: (N,) estimated latent bits per grid.
    """

    image: Tensor
    bits: Tensor


class CoolChic(nn.Module):
    """Latent grids + ARM + upsampling + synthesis for one picture of H x W luma samples."""

    def __init__(
        self,
        height: int,
        width: int,
        color_format: ColorFormat,
        arm_layers: Sequence[Layer],
        syn_layers: Sequence[Layer],
        n_ctx_rowcol: int,
        ups_half_taps: int,
        n_grids: int,
        cross_grids: int = 0,
    ) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.color_format = ColorFormat(color_format)
        self.n_ctx_rowcol = n_ctx_rowcol
        self.sizes = grid_sizes(height, width, n_grids)
        self.latents = nn.ParameterList([nn.Parameter(torch.zeros(h, w)) for h, w in self.sizes])
        self.cross_grids = cross_grids
        self.arm = Arm(len(context_offsets(n_ctx_rowcol)) + cross_grids, arm_layers)
        self.upsampling = Upsampling(ups_half_taps)
        self.synthesis = Synthesis(n_grids, syn_layers)

    @property
    def n_grids(self) -> int:
        return len(self.sizes)

    def quantized_latents(self, quantizer: Quantizer) -> list[Tensor]:
        return [quantizer(latent) for latent in self.latents]

    def rate(self, latents: Sequence[Tensor]) -> Tensor:
        """Estimated bits of each grid, (N,), the ARM run on all positions at once."""
        ctx = arm_contexts(latents, self.n_ctx_rowcol, self.cross_grids)
        values = torch.cat([y.reshape(-1) for y in latents])
        mu, log_scale = self.arm(ctx)
        bits = laplace_bits(values, mu, log_scale)
        counts = [y.numel() for y in latents]
        return torch.stack([part.sum() for part in torch.split(bits, counts)])

    def decode(self, latents: Sequence[Tensor]) -> Tensor:
        """Synthesis output (C, H, W) in [0, 1] units from (quantized) latents."""
        dense = self.upsampling(latents, self.sizes)
        return self.synthesis(dense)

    def forward(self, quantizer: Quantizer) -> ForwardOutput:
        latents = self.quantized_latents(quantizer)
        return ForwardOutput(image=self.decode(latents), bits=self.rate(latents))

    def to_planes(self, image: Tensor, clamp: bool = True) -> list[Tensor]:
        """Output planes in [0, 1] units: 4:2:0 chroma are 2x2 averages, then every value
        is clamped to [0, 1] (spec 8), unless clamp is False."""
        planes = list(image)
        if self.color_format.subsampled_chroma:
            planes = [planes[0], subsample_420(planes[1]), subsample_420(planes[2])]
        return [p.clamp(0.0, 1.0) for p in planes] if clamp else planes


def subsample_420(plane: Tensor) -> Tensor:
    """2x2 average with the last row / column repeated when H or W is odd (spec 8.1)."""
    h, w = plane.shape
    if h % 2:
        plane = torch.cat([plane, plane[-1:]], dim=0)
    if w % 2:
        plane = torch.cat([plane, plane[:, -1:]], dim=1)
    return F.avg_pool2d(plane[None, None], 2)[0, 0]
