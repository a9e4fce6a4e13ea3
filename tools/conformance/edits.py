"""The edits named by the conformance cases (tools/conformance/cases.py).

Codec edits change an `IntegerCodec` drawn by `random_codec` before it is
written (designed weights and latents that drive the entropy model, the
accumulators and the samples to the bounds of the spec); stream edits change a
written stream. Header fields are found with the decoder's syntax table
(`reading.set_field`, `reading.stream_layout`).

The cases and the published v1 manifest's recipes name each edit with a leading
underscore (`_visible_output`); `CODEC_EDITS`, `STREAM_EDITS` and
`INVALID_EDITS` map those names to the functions here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import INT16_MAX, INT16_MIN, IntegerCodec, LayerDesc, egk_code
from coolchic_ref.encoder.format import LayerKind
from coolchic_ref.syntax import ARM_FRAC
from tools.conformance.reading import set_field, stream_layout

# ---------------------------------------------------------------------------
# Codec edits


def visible_output(codec: IntegerCodec) -> None:
    """The last synthesis layer redrawn for the scale of its actual input, so that the
    samples depend on the latents: an output spread of about 800 / 4096 around mid-grey.

    (`random_codec` scales the last layer for a latent range, not for what a deep stack
    or an int16-wide alphabet feeds it, and its weights can then all round to 0.)
    """
    rng = np.random.default_rng(codec.width * 1000 + codec.height)
    x = im.upsample_dense(codec)
    for layer, (w, b) in zip(codec.syn_layers[:-1], codec.syn_weights[:-1], strict=True):
        x = im.conv_layer(x, layer, w, b, codec.syn_w_shift, codec.syn_b_shift)
    assert not codec.syn_layers[-1].kind.adds_input
    w, b = codec.syn_weights[-1]
    # A robust input scale: a few int16-extreme latents must not set it.
    scale = max(1.0, float(np.percentile(np.abs(x), 90)))
    std = 800 / (scale * np.sqrt(w[0].size)) * (1 << codec.syn_w_shift)
    w[:] = np.clip(np.rint(rng.normal(0, std, size=w.shape)), INT16_MIN, INT16_MAX)
    b[:] = min(INT16_MAX, (1 << codec.syn_b_shift) >> 1)  # 0.5, mid-grey


def readable_synthesis(codec: IntegerCodec) -> None:
    """syn_w_shift 16 and syn_b_shift 12, and a 1x1 layer appended to the synthesis:
    2048 + x / 8. With w_shift 16 every layer's (wrapped) accumulator comes out within
    +-2^15, so the appended layer puts about half the samples inside the sample range,
    where they show the wrapped values exactly rather than clipped."""
    n = codec.n_channels
    eye = np.eye(n, dtype=np.int64).reshape(n, n, 1, 1)
    codec.syn_layers.append(LayerDesc(n, 1, LayerKind.LINEAR, "none"))
    codec.syn_weights.append((eye * 8192, np.full(n, 2048, dtype=np.int64)))
    codec.syn_w_shift, codec.syn_b_shift = 16, im.SYN_FRAC


def zero_grids_0_and_3(codec: IntegerCodec) -> None:
    """Grids 0 and 3 all zero (K = 1, latent 0), grid 2 constant at -5."""
    codec.latents[0] = np.zeros_like(codec.latents[0])
    codec.latents[2] = np.full_like(codec.latents[2], -5)
    codec.latents[3] = np.zeros_like(codec.latents[3])


def constant_grids_zero_and_extremes(codec: IntegerCodec) -> None:
    """Every grid constant: grid 0 at 0, grid 1 at -32768, grid 2 at 32767."""
    for level, value in enumerate((0, INT16_MIN, INT16_MAX)):
        codec.latents[level] = np.full_like(codec.latents[level], value)


def grid1_constant_latent_min(codec: IntegerCodec) -> None:
    """Grid 1 constant at -3 (the stream edit then declares latent_max = 4 for it)."""
    codec.latents[1] = np.full_like(codec.latents[1], -3)


def full_int16_alphabet(codec: IntegerCodec) -> None:
    """Grid 0 holds both int16 extremes, so its alphabet is all 65536 values."""
    codec.latents[0][0, 0] = INT16_MIN
    codec.latents[0][-1, -1] = INT16_MAX


def binary_latents(codec: IntegerCodec) -> None:
    """Grid 0 latents in {0, 1} (alphabet of 2)."""
    codec.latents[0] = (codec.latents[0] > 0).astype(np.int64)


def flat_laplace(codec: IntegerCodec) -> None:
    """ARM = biases only: mu = 32767 / 256 latents above every latent, log_scale = -32768
    (clipped to -1536): every boundary is past EXP_NEG, G(0) = G(K), uniform cdf."""
    ((w, b),) = codec.arm_weights
    w[:] = 0
    b[:] = (INT16_MAX, INT16_MIN)
    codec.arm_w_shift, codec.arm_b_shift = 0, im.ARM_FRAC


def clipped_laplace(codec: IntegerCodec) -> None:
    """Two ARM layers of biases and a diagonal: mu = 2 * (32767 << 8), beyond 2^23 (clipped),
    and log_scale = 32767 << 8 (clipped to 2048): a nearly flat Laplace far from the latents."""
    (w0, b0), (w1, b1) = codec.arm_weights
    w0[:] = 0
    b0[:] = INT16_MAX
    w1[:] = ((2, 0), (0, 1))
    b1[:] = 0
    codec.arm_w_shift, codec.arm_b_shift = 0, 0


def negative_mu_laplace(codec: IntegerCodec) -> None:
    """Latents made non-negative; one ARM layer: mu = -32768 * (sum of contexts << 8) / 16,
    beyond -2^23 (clipped) wherever the contexts add up to 17 or more; log_scale = 256."""
    codec.latents = [np.abs(latent) for latent in codec.latents]
    ((w, b),) = codec.arm_weights
    w[0, :] = INT16_MIN
    w[1, :] = 0
    b[:] = (0, 16)
    codec.arm_w_shift, codec.arm_b_shift = 4, 4


def chroma_sum_wraps(codec: IntegerCodec) -> None:
    """One grid, one 1x1 synthesis layer with shifts 0 / 12: Y = 2048 (mid-grey),
    U = 16 * (latent << 12), V = -16 * (latent << 12). Latents at the int16 extremes make
    U and V about +-2^31, so the 2x2 sums of the 4:2:0 reduction wrap (spec 8.1)."""
    latent = codec.latents[0]
    codec.latents[0] = np.where(latent > 0, INT16_MAX, np.where(latent < 0, INT16_MIN, latent))
    codec.syn_weights = [
        (np.array([0, 16, -16]).reshape(3, 1, 1, 1), np.array([2048, 0, 0])),
    ]
    codec.syn_w_shift, codec.syn_b_shift = 0, im.SYN_FRAC


# ---------------------------------------------------------------------------
# Stream edits that keep the samples


def declare_grid1_alphabet(data: bytes) -> bytes:
    """Grid 1: latent_max 4 instead of -3, still no substream (valid, spec 5.5)."""
    grid = stream_layout(data).grids[1]
    assert grid["latent_min"] == grid["latent_max"] == -3 and grid["substream_bytes"] == 0
    return set_field(data, "grid1.latent_max", 4)


# ---------------------------------------------------------------------------
# Edits that make a stream invalid (spec section 9)


def with_weights(data: bytes, section: bytes, **quant: int) -> bytes:
    """`data` with a new weights section (weights_bytes updated) and quantization fields."""
    layout = stream_layout(data)
    for name, value in quant.items():
        data = set_field(data, name, value)
    data = set_field(data, "weights_bytes", len(section))
    start, end = layout.weights
    return data[:start] + section + data[end:]


def weights_section(data: bytes) -> bytes:
    start, end = stream_layout(data).weights
    return data[start:end]


def first_coded_grid(data: bytes) -> int:
    """The first grid with a substream."""
    return next(g for g, grid in enumerate(stream_layout(data).grids) if grid["substream_bytes"])


def bad_magic(data: bytes) -> bytes:
    return set_field(data, "magic", b"CCRG")


def version_3(data: bytes) -> bytes:
    # Version 2 was the first unknown version until the decoder learnt to read it; the
    # stream keeps its number, 202, and tests the first version no decoder reads.
    return set_field(data, "version", 3)


def cut_in_header(data: bytes) -> bytes:
    return data[:20]


def eight_grids(data: bytes) -> bytes:
    return set_field(data, "n_grids", 8)  # > 7


def syn_mac_over_limit(data: bytes) -> bytes:
    """Synthesis layer 2 (6-3-linear-none of the largest architecture) gets kernel 5:
    16384 + 9 * 64 * 6 * (25 - 9) / 9 MAC per pixel (the weights section no longer
    matches, but the header rules come first)."""
    assert stream_layout(data).values["syn"][2]["kernel"] == 3
    return set_field(data, "syn2.kernel", 5)


def arm_mac_over_limit(data: bytes) -> bytes:
    """ARM layer 2 (30-1-linear-none of the largest architecture) gets 31 outputs:
    8192 + 64 + 20 = 8276 MAC per latent."""
    assert stream_layout(data).values["arm"][2]["out"] == 30
    return set_field(data, "arm2.out", 31)


def bias_shift_too_large(data: bytes) -> bytes:
    """arm_b_shift = ARM_FRAC + arm_w_shift + 1 (spec 3.4)."""
    return set_field(data, "arm_b_shift", ARM_FRAC + stream_layout(data).values["arm_w_shift"] + 1)


def drop_last_byte(data: bytes) -> bytes:
    return data[:-1]


def trailing_byte(data: bytes) -> bytes:
    return data + b"\x00"


def weight_code_too_long(data: bytes) -> bytes:
    """arm_w_egk 0 and a section starting with 18 zero bits: z + k reaches 18."""
    return with_weights(data, b"\x00\x00\x00" + weights_section(data)[3:], arm_w_egk=0)


def weight_out_of_range(data: bytes) -> bytes:
    """The first ARM weight coded as 32768 (order 0): a valid code, an invalid value."""
    section = weights_section(data)
    bits = egk_code(32768, 0)
    bits += "1" * (-len(bits) % 8)
    head = int(bits, 2).to_bytes(len(bits) // 8, "big")
    assert len(head) <= len(section)
    return with_weights(data, head + section[len(head) :], arm_w_egk=0)


def weights_end_in_zero_run(data: bytes) -> bytes:
    """A 1-byte weights section of zeros with arm_w_egk 0: the section ends inside the
    first code's run of zeros."""
    return with_weights(data, b"\x00", arm_w_egk=0)


def weights_end_in_code(data: bytes) -> bytes:
    """A 1-byte section 0b00010000 with arm_w_egk 4: the code needs 3 + 4 bits after its
    leading 1, the section has 4."""
    return with_weights(data, b"\x10", arm_w_egk=4)


def weights_section_longer(data: bytes) -> bytes:
    """Four zero bytes appended to the weights section (weights_bytes updated)."""
    return with_weights(data, weights_section(data) + b"\x00" * 4)


def first_word_zero(data: bytes) -> bytes:
    offset = stream_layout(data).substream_offsets[first_coded_grid(data)]
    return data[:offset] + b"\x00" * 4 + data[offset + 4 :]


def extra_substream_word(data: bytes) -> bytes:
    """A word 0x12345678 appended to the first coded grid's substream (size updated)."""
    layout = stream_layout(data)
    level = first_coded_grid(data)
    size = layout.grids[level]["substream_bytes"]
    end = layout.substream_offsets[level] + size
    data = set_field(data, f"grid{level}.substream_bytes", size + 4)
    return data[:end] + struct.pack("<I", 0x12345678) + data[end:]


# ---------------------------------------------------------------------------
# The names the cases use


def _by_recipe_name(*functions: Callable) -> dict[str, Callable]:
    return {f"_{function.__name__}": function for function in functions}


CODEC_EDITS: dict[str, Callable[[IntegerCodec], None]] = _by_recipe_name(
    visible_output,
    readable_synthesis,
    zero_grids_0_and_3,
    constant_grids_zero_and_extremes,
    grid1_constant_latent_min,
    full_int16_alphabet,
    binary_latents,
    flat_laplace,
    clipped_laplace,
    negative_mu_laplace,
    chroma_sum_wraps,
)
STREAM_EDITS: dict[str, Callable[[bytes], bytes]] = _by_recipe_name(declare_grid1_alphabet)
INVALID_EDITS: dict[str, Callable[[bytes], bytes]] = _by_recipe_name(
    bad_magic,
    version_3,
    cut_in_header,
    eight_grids,
    syn_mac_over_limit,
    arm_mac_over_limit,
    bias_shift_too_large,
    drop_last_byte,
    trailing_byte,
    weight_code_too_long,
    weight_out_of_range,
    weights_end_in_zero_run,
    weights_end_in_code,
    weights_section_longer,
    first_word_zero,
    extra_substream_word,
)
