"""What a conformance stream exercises: the `features` of its manifest entry.

Syntax elements and value classes of the header, weights and latents
(`syntax_classes`), and the bounds of the decoding process its intermediates
reach in the encoder's integer simulation (`value_classes`). The generator
refuses a suite that lost one of `REQUIRED_FEATURES`.
"""

from __future__ import annotations

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import ACTIVATIONS, INT16_MAX, INT16_MIN, IntegerCodec
from coolchic_ref.syntax import ColorFormat
from tools.conformance.reading import StreamLayout, code_bits


def value_classes(codec: IntegerCodec) -> set[str]:
    """Bounds of the decoding process that the codec's intermediates reach (encoder model)."""
    found: set[str] = set()
    wrapped: set[str] = set()
    stage = "arm"

    def record_wrap(x: np.ndarray) -> None:
        if x.size and (int(x.min()) < -(1 << 31) or int(x.max()) >= 1 << 31):
            wrapped.add(stage)

    with im.observing_wrap32(record_wrap):
        for level, latent in enumerate(codec.latents):
            low, high = int(np.min(latent)), int(np.max(latent))
            if low == high:
                continue
            mu, log_scale = im.arm_mu_log_scale(codec, level)
            if (np.abs(mu) > im.MU_LIMIT).any():
                found.add("laplace:mu-clipped")
            if (log_scale < im.LOG_SCALE_MIN).any():
                found.add("laplace:log-scale-clipped-low")
            if (log_scale > im.LOG_SCALE_MAX).any():
                found.add("laplace:log-scale-clipped-high")
            ends = {}
            for i in (0, high - low + 1):  # the largest |b - mu| is at an end of the alphabet
                t, ends[i] = im.laplace_at_boundary(((low + i) << 8) - 128, mu, log_scale)
                if (t >= im.EXP_NEG_SIZE).any():
                    found.add("laplace:tail-mass-zero")
            if (ends[high - low + 1] == ends[0]).any():
                found.add("laplace:flat-uniform-fallback")
        stage = "upsampling"
        dense = im.upsample_dense(codec)
        stage = "synthesis"
        out = im.synthesis_output(codec, dense)
        stage = "samples"
        for channel, c in enumerate(out):
            if ColorFormat(codec.color_format).chroma_420 and channel > 0:
                c = im.subsample_chroma(c)
            if (c < 0).any():
                found.add("samples:clipped-low")
            if (c > 1 << im.SYN_FRAC).any():
                found.add("samples:clipped-high")
    found |= {f"{name}:int32-wrap" for name in wrapped}
    return found


def syntax_classes(codec: IntegerCodec, layout: StreamLayout) -> set[str]:
    """Syntax elements and value classes of the header, weights and latents."""
    found = {
        f"color:{ColorFormat(codec.color_format).label}-{codec.bit_depth}bit",
        f"bit-depth:{codec.bit_depth}",
        f"grids:{codec.n_grids}",
        f"context:r{codec.n_ctx_rowcol}",
        f"upsampling:T{len(codec.ups_taps)}",
        f"arm:{len(codec.arm_layers)}-layers",
        f"synthesis:{len(codec.syn_layers)}-layers",
    }
    w, h = codec.width, codec.height
    if w == 1 and h == 1:
        found.add("picture:1x1")
    elif w == 1:
        found.add("picture:width-1")
    elif h == 1:
        found.add("picture:height-1")
    if w % 2 and h % 2 and w > 1 and h > 1:
        found.add("picture:odd-width-and-height")
    if w <= codec.n_ctx_rowcol:
        found.add("picture:narrower-than-arm-context")
    for module, layers in (("arm", codec.arm_layers), ("synthesis", codec.syn_layers)):
        for layer in layers:
            found.add(f"{module}:{layer.kind.label}-{layer.activation}")
            if layer.out_channels == 64:
                found.add(f"{module}:width-64")
        if module == "synthesis":
            found |= {f"synthesis:kernel-{layer.kernel}" for layer in layers}
    mac_arm, c_in = 0, codec.arm_inputs
    for layer in codec.arm_layers:
        mac_arm, c_in = mac_arm + c_in * layer.out_channels, layer.out_channels
    mac_syn, c_in = 0, codec.n_grids
    for layer in codec.syn_layers:
        mac_syn += layer.kernel**2 * c_in * layer.out_channels
        c_in = layer.out_channels
    if mac_arm == 8192:
        found.add("arm:mac-8192")
    if mac_syn == 16384:
        found.add("synthesis:mac-16384")
    for level in range(codec.n_grids):
        low, high = layout.grids[level]["latent_min"], layout.grids[level]["latent_max"]
        if low == high:
            found.add("grid:constant" if low else "grid:all-zero")
        elif level in layout.empty_coded_grids:
            found.add("grid:coded-without-substream")
        elif high - low == 1:
            found.add("grid:alphabet-2")
        if low == INT16_MIN:
            found.add("latent:-32768")
        if high == INT16_MAX:
            found.add("latent:32767")
        if high - low + 1 == 1 << 16:
            found.add("grid:alphabet-65536")
    if all(grid["latent_min"] == grid["latent_max"] for grid in layout.grids):
        found.add("grid:no-substream-at-all")
    parameters = [codec.ups_taps]
    for w, b in codec.arm_weights + codec.syn_weights:
        parameters += [w, b]
    values = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parameters])
    if (values == INT16_MIN).any():
        found.add("weight:-32768")
    if (values == INT16_MAX).any():
        found.add("weight:32767")
    orders = set(layout.orders.values())
    found |= {f"exp-golomb:k{k}" for k in orders & {0, 16}}
    if max_code_bits(codec, layout.orders) == 17:
        found.add("exp-golomb:z+k-17")
    shifts = (
        codec.arm_w_shift,
        codec.arm_b_shift,
        codec.ups_shift,
        codec.syn_w_shift,
        codec.syn_b_shift,
    )
    if shifts == (16, 24, 16, 16, 28):
        found.add("shifts:all-maximum")
    if shifts == (0, 0, 0, 0, 0):
        found.add("shifts:all-zero")
    if codec.ups_shift == 0:
        found.add("shifts:ups-0")
    if codec.arm_b_shift == im.ARM_FRAC + codec.arm_w_shift:
        found.add("shifts:arm-bias-unshifted")
    if codec.syn_b_shift == im.SYN_FRAC + codec.syn_w_shift:
        found.add("shifts:synthesis-bias-unshifted")
    return found


def max_code_bits(codec: IntegerCodec, orders: dict[str, int]) -> int:
    """Largest z + k of the exp-Golomb codes of the codec's parameters (spec 4.2)."""
    coded = [(codec.ups_taps, orders["ups"])]
    for prefix, weights in (("arm", codec.arm_weights), ("syn", codec.syn_weights)):
        for w, b in weights:
            coded += [(w, orders[f"{prefix}_w"]), (b, orders[f"{prefix}_b"])]
    return max(code_bits(int(v), k) for values, k in coded for v in np.asarray(values).reshape(-1))


def latent_sensitivity(codec: IntegerCodec, trials: int = 12) -> tuple[int, int]:
    """(changed, tried): of `trials` latents of the coded grids, each moved by 1 alone,
    how many change the samples (encoder model).

    A stream whose samples ignore its latents would let a decoder with a broken
    entropy decoder pass; the tool refuses a suite with such a stream.
    """
    coded = [g for g, latent in enumerate(codec.latents) if np.min(latent) != np.max(latent)]
    if not coded:
        return 0, 0
    rng = np.random.default_rng(0)
    reference = im.simulate_decode(codec)
    changed = 0
    for trial in range(trials):
        level = coded[trial % len(coded)]
        latent = codec.latents[level]
        y, x = (int(rng.integers(n)) for n in latent.shape)
        original = int(latent[y, x])
        latent[y, x] = original + 1 if original < INT16_MAX else original - 1
        try:
            planes = im.simulate_decode(codec)
        finally:
            latent[y, x] = original
        changed += any(not np.array_equal(a, b) for a, b in zip(planes, reference, strict=True))
    return changed, trials


# Every class the suite as a whole must exercise: the tool refuses to write a
# suite that lost one (the list: every syntax element and value class).
REQUIRED_FEATURES = (
    {f"color:{c}-{d}bit" for c in ("rgb", "yuv444", "yuv420") for d in (8, 10)}
    | {"color:grey-8bit"}
    | {f"bit-depth:{d}" for d in range(8, 17)}
    | {f"grids:{n}" for n in range(1, 8)}
    | {f"context:r{r}" for r in (1, 2, 3)}
    | {f"upsampling:T{t}" for t in range(1, 9)}
    | {f"arm:{n}-layers" for n in range(1, 6)}
    | {f"synthesis:{n}-layers" for n in range(1, 9)}
    | {
        f"{m}:{k}-{a}"
        for m in ("arm", "synthesis")
        for k in ("linear", "residual")
        for a in ACTIVATIONS
    }
    | {f"synthesis:kernel-{k}" for k in (1, 3, 5, 7)}
    | {"arm:width-64", "synthesis:width-64", "arm:mac-8192", "synthesis:mac-16384"}
    | {
        "picture:1x1",
        "picture:width-1",
        "picture:height-1",
        "picture:odd-width-and-height",
        "picture:narrower-than-arm-context",
    }
    | {
        "grid:constant",
        "grid:all-zero",
        "grid:coded-without-substream",
        "grid:alphabet-2",
        "grid:alphabet-65536",
        "grid:no-substream-at-all",
        "latent:-32768",
        "latent:32767",
    }
    | {"weight:-32768", "weight:32767", "exp-golomb:k0", "exp-golomb:k16", "exp-golomb:z+k-17"}
    | {
        "shifts:all-maximum",
        "shifts:all-zero",
        "shifts:ups-0",
        "shifts:arm-bias-unshifted",
        "shifts:synthesis-bias-unshifted",
    }
    | {
        "laplace:mu-clipped",
        "laplace:log-scale-clipped-low",
        "laplace:log-scale-clipped-high",
        "laplace:tail-mass-zero",
        "laplace:flat-uniform-fallback",
    }
    | {f"{s}:int32-wrap" for s in ("arm", "upsampling", "synthesis", "samples")}
    | {"samples:clipped-low", "samples:clipped-high"}
)
