"""Random integer codecs for tests, benchmarks and the conformance suite.

`random_codec(rng, ...)` draws every choice not fixed by an argument. By
default the parameters are scaled like a trained model's (real-valued weights
of about 1/sqrt(fan_in), a Laplace-like latent distribution, an interpolating
upsampling filter, output biases near mid-grey), so the samples are varied and
mostly not saturated. `extreme=True` instead puts weights, biases and taps at
+-32767/-32768 and latents at the int16 extremes, with shifts anywhere in their
allowed ranges, to exercise int32 wrap-around and clipping.

Codecs are version 1 unless `version=2` is asked for; a v1 codec is drawn with
exactly the random numbers it always was (the committed conformance streams are
rebuilt from their seeds), and a v2 codec draws its cross-grid count C (unless
given) right after the number of grids, then everything as v1 does with an ARM of
dim_arm + C inputs.

NumPy only (no torch).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .bitstream import IntegerCodec, LayerDesc, parse_layers
from .format import (
    ACTIVATIONS,
    INT16_MAX,
    INT16_MIN,
    MAX_GRIDS,
    MAX_MAC_ARM,
    MAX_MAC_SYN,
    MAX_N_CTX_ROWCOL,
    MAX_UPS_SHIFT,
    MAX_UPS_TAPS,
    MAX_W_SHIFT,
    SYN_KERNELS,
    VERSION_V1,
    VERSIONS,
    ColorFormat,
    LayerKind,
    context_size,
    grid_shape,
    max_arm_b_shift,
    max_cross_grids,
    max_syn_b_shift,
)


def _quantize(values: np.ndarray, shift: int) -> np.ndarray:
    """round(values * 2^shift), clipped to int16: int64 array."""
    return np.clip(np.rint(np.asarray(values) * (1 << shift)), INT16_MIN, INT16_MAX).astype(
        np.int64
    )


def _extreme_ints(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Mostly int16 extremes, the rest uniform over int16."""
    pick = rng.integers(0, 10, size=shape)
    uniform = rng.integers(INT16_MIN, INT16_MAX + 1, size=shape)
    return np.where(pick < 3, INT16_MAX, np.where(pick < 6, INT16_MIN, uniform)).astype(np.int64)


def _random_arm(rng: np.random.Generator, arm_inputs: int) -> list[LayerDesc]:
    while True:
        layers, in_channels = [], arm_inputs
        for _ in range(int(rng.integers(0, 3))):
            if rng.random() < 0.3:
                out, kind = in_channels, LayerKind.RESIDUAL
            else:
                out, kind = int(rng.integers(2, 25)), LayerKind.LINEAR
            layers.append(LayerDesc(out, 1, kind, str(rng.choice(ACTIVATIONS))))
            in_channels = out
        last_act = "none" if rng.random() < 0.8 else str(rng.choice(ACTIVATIONS))
        layers.append(LayerDesc(2, 1, LayerKind.LINEAR, last_act))
        if _mac(layers, arm_inputs) <= MAX_MAC_ARM:
            return layers


def _random_syn(rng: np.random.Generator, n_grids: int, n_channels: int) -> list[LayerDesc]:
    while True:
        layers, in_channels = [], n_grids
        for _ in range(int(rng.integers(0, 4))):
            kernel = int(rng.choice(SYN_KERNELS, p=[0.4, 0.3, 0.2, 0.1]))
            if rng.random() < 0.3:
                out, kind = in_channels, LayerKind.RESIDUAL
            else:
                out, kind = int(rng.integers(1, 17)), LayerKind.LINEAR
            layers.append(LayerDesc(out, kernel, kind, str(rng.choice(ACTIVATIONS))))
            in_channels = out
        kernel = int(rng.choice(SYN_KERNELS, p=[0.4, 0.3, 0.2, 0.1]))
        residual = in_channels == n_channels and rng.random() < 0.5
        kind = LayerKind.RESIDUAL if residual else LayerKind.LINEAR
        layers.append(LayerDesc(n_channels, kernel, kind, "none"))
        if _mac(layers, n_grids) <= MAX_MAC_SYN:
            return layers


def _mac(layers: list[LayerDesc], first_in: int) -> int:
    mac, in_channels = 0, first_in
    for layer in layers:
        mac += layer.kernel**2 * in_channels * layer.out_channels
        in_channels = layer.out_channels
    return mac


def _as_layers(layers: str | list[LayerDesc] | None) -> list[LayerDesc] | None:
    return parse_layers(layers) if isinstance(layers, str) else layers


def _ups_filter(rng: np.random.Generator, taps: int) -> np.ndarray:
    """An interpolating low-pass filter: v[k] at distance (2k + 1) / 4, sum 1."""
    distance = (2 * np.arange(taps) + 1) / 4
    support = max(1.0, taps / 2)
    v = np.maximum(0.0, 1 - distance / support) + rng.normal(0, 0.05, size=taps)
    if taps > 2:
        v[-1] -= 0.1  # a small negative lobe, as learned filters have
    return v / v.sum()


def random_codec(
    rng: np.random.Generator,
    *,
    width: int | None = None,
    height: int | None = None,
    n_grids: int | None = None,
    color_format: ColorFormat | int | None = None,
    bit_depth: int | None = None,
    n_ctx_rowcol: int | None = None,
    arm: str | list[LayerDesc] | None = None,
    syn: str | list[LayerDesc] | None = None,
    ups_taps: int | None = None,
    latent_range: int | None = None,
    weight_range: int | None = None,
    extreme: bool = False,
    extreme_latents: bool | None = None,
    constant_grids: Iterable[int] = (),
    shifts: dict[str, int] | None = None,
    version: int = VERSION_V1,
    cross_grids: int | None = None,
) -> IntegerCodec:
    """A random valid `IntegerCodec`; every argument left None is drawn from `rng`.

    - width, height: picture size (default 1..48 each);
    - n_grids 1..7, color_format (any ColorFormat), bit_depth 8..16 (default one of 8, 10,
      12, 16),
      n_ctx_rowcol 1..3, ups_taps: number of coded taps T (1..8);
    - arm, syn: layers in textual form or as `LayerDesc` lists (default random
      within the spec's MAC limits);
    - latent_range: latents within [-latent_range, latent_range] (default 1..12;
      ignored where `extreme` puts latents at the int16 extremes);
    - weight_range: if given, every weight, bias and tap is uniform in
      [-weight_range, weight_range] instead of the trained-like scaling;
    - extreme: int16-extreme weights and latents, shifts anywhere in range;
    - extreme_latents: override whether latents are int16-extreme (default: `extreme`);
      large alphabets make writing cost O(latents x K);
    - constant_grids: indices of grids whose latents are all equal (K = 1);
    - shifts: override any of arm_w_shift, arm_b_shift, ups_shift, syn_w_shift,
      syn_b_shift;
    - version: 1 (default) or 2; cross_grids: v2's C (default drawn in
      0..min(6, n_grids - 1); must be 0 or None for v1).
    """
    if version not in VERSIONS:
        raise ValueError(f"version {version!r}: must be one of {VERSIONS}")
    if version == VERSION_V1 and cross_grids:
        raise ValueError("version 1 codecs have no cross-grid context")
    width = int(rng.integers(1, 49)) if width is None else width
    height = int(rng.integers(1, 49)) if height is None else height
    n_grids = int(rng.integers(1, MAX_GRIDS + 1)) if n_grids is None else n_grids
    # No draw for v1: its codecs stay what they were before v2 existed.
    if version == VERSION_V1:
        cross_grids = 0
    elif cross_grids is None:
        cross_grids = int(rng.integers(0, max_cross_grids(version, n_grids) + 1))
    if color_format is None:
        color_format = int(rng.integers(0, len(ColorFormat)))
    color_format = ColorFormat(color_format)
    bit_depth = int(rng.choice([8, 10, 12, 16])) if bit_depth is None else bit_depth
    if n_ctx_rowcol is None:
        n_ctx_rowcol = int(rng.integers(1, MAX_N_CTX_ROWCOL + 1))
    taps = int(rng.integers(1, MAX_UPS_TAPS + 1)) if ups_taps is None else ups_taps
    latent_range = int(rng.integers(1, 13)) if latent_range is None else latent_range
    n_channels = color_format.n_channels
    arm_inputs = context_size(n_ctx_rowcol) + cross_grids
    arm_layers = _as_layers(arm) or _random_arm(rng, arm_inputs)
    syn_layers = _as_layers(syn) or _random_syn(rng, n_grids, n_channels)

    # Fixed-point formats. Trained-like: biases must fit int16 at their scale.
    if extreme:
        arm_w = int(rng.integers(0, MAX_W_SHIFT + 1))
        syn_w = int(rng.integers(0, MAX_W_SHIFT + 1))
        chosen = {
            "arm_w_shift": arm_w,
            "arm_b_shift": int(rng.integers(0, max_arm_b_shift(arm_w) + 1)),
            "ups_shift": int(rng.integers(0, MAX_UPS_SHIFT + 1)),
            "syn_w_shift": syn_w,
            "syn_b_shift": int(rng.integers(0, max_syn_b_shift(syn_w) + 1)),
        }
    else:
        chosen = {
            "arm_w_shift": int(rng.integers(6, 13)),
            "arm_b_shift": int(rng.integers(4, 13)),
            "ups_shift": int(rng.integers(6, 13)),
            "syn_w_shift": int(rng.integers(6, 13)),
            "syn_b_shift": int(rng.integers(4, 14)),
        }
    chosen.update(shifts or {})

    def parameters(shape: tuple[int, ...], real: np.ndarray, shift: int) -> np.ndarray:
        if extreme:
            return _extreme_ints(rng, shape)
        if weight_range is not None:
            bound = min(weight_range, INT16_MAX)
            return rng.integers(-bound, bound + 1, size=shape).astype(np.int64)
        return _quantize(real, shift)

    # ARM: mu near the context's level, log-scale near log(latent_range / 3).
    arm_weights, in_channels = [], arm_inputs
    for index, layer in enumerate(arm_layers):
        shape = (layer.out_channels, in_channels)
        real_w = rng.normal(0, 0.5 / np.sqrt(in_channels), size=shape)
        real_b = rng.normal(0, 0.1, size=layer.out_channels)
        if index == len(arm_layers) - 1:
            real_b[1] = np.log(max(latent_range, 1) / 3) + rng.normal(0, 0.3)
        arm_weights.append(
            (
                parameters(shape, real_w, chosen["arm_w_shift"]),
                parameters((layer.out_channels,), real_b, chosen["arm_b_shift"]),
            )
        )
        in_channels = layer.out_channels

    ups = parameters((taps,), _ups_filter(rng, taps), chosen["ups_shift"])

    # Synthesis: unit-gain hidden layers; the last one maps inputs of about
    # latent_range / 2 to about +-0.25 around mid-grey (0.5).
    syn_weights, in_channels = [], n_grids
    for index, layer in enumerate(syn_layers):
        fan_in = in_channels * layer.kernel**2
        shape = (layer.out_channels, in_channels, layer.kernel, layer.kernel)
        last = index == len(syn_layers) - 1
        gain = 0.25 / max(1.0, latent_range / 2) if last else 1.0
        real_w = rng.normal(0, gain / np.sqrt(fan_in), size=shape)
        real_b = (
            rng.normal(0.5, 0.1, size=layer.out_channels)
            if last
            else rng.normal(0, 0.1, size=layer.out_channels)
        )
        syn_weights.append(
            (
                parameters(shape, real_w, chosen["syn_w_shift"]),
                parameters((layer.out_channels,), real_b, chosen["syn_b_shift"]),
            )
        )
        in_channels = layer.out_channels

    extreme_latents = extreme if extreme_latents is None else extreme_latents
    constant = set(constant_grids)
    latents = []
    for level in range(n_grids):
        shape = grid_shape(height, width, level)
        if extreme_latents:
            pick = rng.integers(0, 10, size=shape)
            uniform = rng.integers(INT16_MIN, INT16_MAX + 1, size=shape)
            grid = np.where(pick < 3, INT16_MAX, np.where(pick < 6, INT16_MIN, uniform))
        else:
            scale = max(latent_range, 1) / 3
            grid = np.clip(np.rint(rng.laplace(0, scale, size=shape)), -latent_range, latent_range)
        if level in constant:
            value = (
                int(rng.choice([INT16_MIN, INT16_MAX])) if extreme_latents else int(grid.flat[0])
            )
            grid = np.full(shape, value)
        latents.append(grid.astype(np.int64))

    return IntegerCodec(
        color_format=color_format,
        bit_depth=bit_depth,
        width=width,
        height=height,
        n_ctx_rowcol=n_ctx_rowcol,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_weights=arm_weights,
        ups_taps=ups,
        syn_weights=syn_weights,
        latents=latents,
        version=version,
        cross_grids=cross_grids,
        **chosen,
    )
