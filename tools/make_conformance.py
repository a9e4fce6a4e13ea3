"""Regenerate the conformance suite in tests/conformance/ (spec/conformance.md).

    python tools/make_conformance.py --reason "why the suite changes"
    python tools/make_conformance.py --check          # rebuild in memory, compare, write nothing

The suite is committed: run this only when the suite must change, and say why
(`--reason` is recorded in the manifest). Three groups of streams:

- generator-made (`GENERATOR_CASES`): integer codecs drawn by
  `coolchic_ref.encoder.random_codec.random_codec` from a fixed seed, some edited
  by hand (designed weights and latents that drive the entropy model, the
  accumulators and the samples to the bounds of the spec); streams written by
  the encoder's writer `write_stream`;
- encoder-made (`ENCODER_CASES`): small crops of Kodak photographs encoded by
  the real encoder (`coolchic_ref.encoder.api.encode`). Training depends on the
  torch build, so committed encoder-made streams are kept as they are unless
  named by `--reencode` (or their recipe changed, which is an error);
- invalid (`INVALID_CASES`): streams that spec section 9 rejects, made by
  editing a valid stream; the manifest records the rule.

The expected samples of every valid stream come from the ENCODER's integer
simulation (`integer_model.simulate_decode`) of the stream's integer codec,
never from the reference decoder; for a stream that is kept rather than
rebuilt, the codec is re-read from the stream by `parse_stream`, which uses
constriction for the rANS substreams and the encoder's integer ARM, not the
reference decoder. Then the reference decoder must reproduce every hash and
reject every invalid stream for the stated reason: if it does not, nothing is
written. Needs NumPy and constriction; torch only for (re)encoding photographs.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import struct
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np

from coolchic_ref.encoder import integer_model as im
from coolchic_ref.encoder.bitstream import (
    ACTIVATIONS,
    INT16_MAX,
    INT16_MIN,
    IntegerCodec,
    LayerDesc,
    context_size,
    egk_code,
    grid_shape,
    wavefront_order,
    write_stream,
)
from coolchic_ref.encoder.random_codec import random_codec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conformance_gap_cases import GAP_GENERATOR_CASES, GAP_INVALID_CASES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "tests" / "conformance"
KODAK = ROOT.parent / "shared" / "data" / "kodak"
MANIFEST_FORMAT = 1
COLOR_NAMES = ("grey", "rgb", "yuv444", "yuv420")
PRECISION = 24


# ---------------------------------------------------------------------------
# Reading a stream back into an IntegerCodec, independently of the decoder


@dataclass
class StreamInfo:
    """Header fields and byte offsets of a stream (spec 3.2), as `parse_stream` found them."""

    fields: dict[str, int]
    quant_offset: int  # offset of arm_w_shift (10 quantization bytes follow)
    weights_bytes_offset: int  # offset of the u32 weights_bytes
    grids_offset: int  # offset of grid 0's latent_min
    weights_offset: int  # first byte of the weights section
    latent_min: list[int]
    latent_max: list[int]
    substream_bytes: list[int]
    substream_offsets: list[int]
    orders: dict[str, int]  # exp-Golomb orders arm_w, arm_b, ups, syn_w, syn_b
    max_code_bits: int  # largest z + k of any weight code (spec 4.2)
    empty_coded_grids: list[int] = field(default_factory=list)  # K > 1 with no substream


class _Bits:
    """MSB-first bits of a byte string (spec 4.1)."""

    def __init__(self, data: bytes) -> None:
        self.bits = "".join(format(byte, "08b") for byte in data)
        self.pos = 0
        self.max_code_bits = 0

    def read(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("weights section truncated")
        value = int(self.bits[self.pos : self.pos + n], 2) if n else 0
        self.pos += n
        return value

    def egk(self, k: int) -> int:
        zeros = 0
        while self.read(1) == 0:
            zeros += 1
        self.max_code_bits = max(self.max_code_bits, zeros + k)
        u = ((1 << (zeros + k)) | self.read(zeros + k)) - (1 << k)
        return (u + 1) // 2 if u % 2 else -(u // 2)


def _decode_grid_constriction(
    codec: IntegerCodec, level: int, words: np.ndarray, latent_min: int, alphabet: int
) -> np.ndarray:
    """Grid `level`'s latents from its substream, with constriction's rANS decoder.

    Diagonal by diagonal in wavefront order (spec 5.2): the ARM (the encoder's
    integer model) runs on the contexts of a whole diagonal, then constriction
    decodes the diagonal's symbols with the spec's integer frequencies.
    """
    import constriction

    height, width = grid_shape(codec.height, codec.width, level)
    latent = np.zeros((height, width), dtype=np.int64)
    if words.size == 0:  # spec 5.5: state 0, every symbol decodes to s = 0
        return latent + latent_min
    # The stream stores constriction's compressed words in reverse order.
    coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words[::-1], dtype=np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    r = codec.n_ctx_rowcol
    order = wavefront_order(height, width, r)
    y_all, x_all = np.divmod(order, width)
    diagonal = x_all + (r + 1) * y_all
    bounds = np.flatnonzero(np.diff(diagonal)) + 1
    offsets = im.context_offsets(r)
    for ys, xs in zip(np.split(y_all, bounds), np.split(x_all, bounds), strict=True):
        contexts = np.zeros((len(offsets), ys.size), dtype=np.int64)
        for j, (dy, dx) in enumerate(offsets):
            yy, xx = ys + dy, xs + dx
            inside = (yy >= 0) & (xx >= 0) & (xx < width)
            contexts[j, inside] = latent[yy[inside], xx[inside]]
        mu, log_scale = im.run_arm(codec, contexts)
        cdf = im.laplace_cdf_table(mu, log_scale, latent_min, alphabet)
        probabilities = (np.diff(cdf, axis=1) - 1).astype(np.float64)
        latent[ys, xs] = np.asarray(coder.decode(family, probabilities)) + latent_min
    if not coder.is_empty():
        raise ValueError(f"grid {level}: substream not fully consumed")
    return latent


def parse_stream(data: bytes) -> tuple[IntegerCodec, StreamInfo]:
    """The integer codec a valid stream codes, and its layout.

    Written from the spec with the encoder's tools only (struct, the encoder's
    integer ARM and Laplace tables, constriction for rANS): the reference
    decoder is not used. A grid whose header declares K > 1 but has no
    substream decodes to latent_min everywhere (spec 5.5); such grids are listed
    in `StreamInfo.empty_coded_grids`, and `write_stream` of the codec then writes
    them as constant grids (a different but equivalent stream).
    """
    if data[:4] != b"CCRF":
        raise ValueError("not a coolchic-ref stream")
    names = (
        "version",
        "color_format",
        "bit_depth",
        "width",
        "height",
        "n_grids",
        "n_ctx_rowcol",
        "ups_half_taps",
        "n_arm_layers",
        "n_syn_layers",
    )
    fields = dict(zip(names, struct.unpack_from("<BBBHHBBBBB", data, 4), strict=True))
    pos = 16
    arm_layers, syn_layers = [], []
    for _ in range(fields["n_arm_layers"]):
        out, kind, act = data[pos : pos + 3]
        arm_layers.append(LayerDesc(out, 1, kind == 1, ACTIVATIONS[act]))
        pos += 3
    for _ in range(fields["n_syn_layers"]):
        out, kernel, kind, act = data[pos : pos + 4]
        syn_layers.append(LayerDesc(out, kernel, kind == 1, ACTIVATIONS[act]))
        pos += 4
    quant_offset = pos
    quant_names = (
        "arm_w_shift",
        "arm_b_shift",
        "arm_w_egk",
        "arm_b_egk",
        "ups_shift",
        "ups_egk",
        "syn_w_shift",
        "syn_b_shift",
        "syn_w_egk",
        "syn_b_egk",
    )
    quant = dict(zip(quant_names, data[pos : pos + 10], strict=True))
    fields.update(quant)
    pos += 10
    weights_bytes_offset = pos
    (weights_bytes,) = struct.unpack_from("<I", data, pos)
    fields["weights_bytes"] = weights_bytes
    pos += 4
    grids_offset = pos
    latent_min, latent_max, substream_bytes = [], [], []
    for _ in range(fields["n_grids"]):
        low, high, size = struct.unpack_from("<hhI", data, pos)
        latent_min.append(low)
        latent_max.append(high)
        substream_bytes.append(size)
        pos += 8
    weights_offset = pos

    bits = _Bits(data[pos : pos + weights_bytes])

    def layers_weights(layers, first_in, w_k, b_k, conv):
        out, c_in = [], first_in
        for layer in layers:
            shape = (layer.out_channels, c_in) + ((layer.kernel,) * 2 if conv else ())
            w = np.array([bits.egk(w_k) for _ in range(int(np.prod(shape)))], dtype=np.int64)
            b = np.array([bits.egk(b_k) for _ in range(layer.out_channels)], dtype=np.int64)
            out.append((w.reshape(shape), b))
            c_in = layer.out_channels
        return out

    r = fields["n_ctx_rowcol"]
    arm_weights = layers_weights(
        arm_layers, context_size(r), quant["arm_w_egk"], quant["arm_b_egk"], False
    )
    taps = np.array([bits.egk(quant["ups_egk"]) for _ in range(fields["ups_half_taps"])])
    syn_weights = layers_weights(
        syn_layers, fields["n_grids"], quant["syn_w_egk"], quant["syn_b_egk"], True
    )
    if -(-bits.pos // 8) != weights_bytes or bits.read(8 * weights_bytes - bits.pos) != 0:
        raise ValueError("weights section size mismatch")

    codec = IntegerCodec(
        color_format=fields["color_format"],
        bit_depth=fields["bit_depth"],
        width=fields["width"],
        height=fields["height"],
        n_ctx_rowcol=r,
        arm_layers=arm_layers,
        syn_layers=syn_layers,
        arm_weights=arm_weights,
        ups_taps=taps.astype(np.int64),
        syn_weights=syn_weights,
        arm_w_shift=quant["arm_w_shift"],
        arm_b_shift=quant["arm_b_shift"],
        ups_shift=quant["ups_shift"],
        syn_w_shift=quant["syn_w_shift"],
        syn_b_shift=quant["syn_b_shift"],
        latents=[],
    )
    offset = weights_offset + weights_bytes
    substream_offsets, empty = [], []
    for level in range(fields["n_grids"]):
        substream_offsets.append(offset)
        size = substream_bytes[level]
        words = np.frombuffer(data[offset : offset + size], dtype="<u4")
        offset += size
        alphabet = latent_max[level] - latent_min[level] + 1
        if alphabet == 1:
            codec.latents.append(
                np.full(grid_shape(codec.height, codec.width, level), latent_min[level])
            )
            continue
        if size == 0:
            empty.append(level)
        codec.latents.append(
            _decode_grid_constriction(codec, level, words, latent_min[level], alphabet)
        )
    if offset != len(data):
        raise ValueError("stream length differs from the sum of its sections")
    info = StreamInfo(
        fields=fields,
        quant_offset=quant_offset,
        weights_bytes_offset=weights_bytes_offset,
        grids_offset=grids_offset,
        weights_offset=weights_offset,
        latent_min=latent_min,
        latent_max=latent_max,
        substream_bytes=substream_bytes,
        substream_offsets=substream_offsets,
        orders={name[:-4]: quant[name] for name in quant_names if name.endswith("_egk")},
        max_code_bits=bits.max_code_bits,
        empty_coded_grids=empty,
    )
    return codec, info


# ---------------------------------------------------------------------------
# What a stream exercises (recorded in the manifest as `features`)


@contextmanager
def _wrap_recorder(seen: set[str], stage: list[str]):
    """Record in `seen` the stages (stage[0]) where the integer model's wrap32 changes a value."""
    original = im.wrap32

    def recording(x):
        x = np.asarray(x, dtype=np.int64)
        if x.size and (int(x.min()) < -(1 << 31) or int(x.max()) >= 1 << 31):
            seen.add(stage[0])
        return original(x)

    with mock.patch.object(im, "wrap32", recording):
        yield


def value_classes(codec: IntegerCodec) -> set[str]:
    """Bounds of the decoding process that the codec's intermediates reach (encoder model)."""
    found: set[str] = set()
    wrapped: set[str] = set()
    stage = ["arm"]
    exp_neg_size = im.EXP_NEG_SIZE
    with _wrap_recorder(wrapped, stage):
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
            m, inv = im._clipped_params(mu, log_scale)
            ends = {}
            for i in (0, high - low + 1):  # the largest |b - mu| is at an end of the alphabet
                b = ((low + i) << 8) - 128
                t = (np.abs(b - m) * inv) >> 20
                if (t >= exp_neg_size).any():
                    found.add("laplace:tail-mass-zero")
                ends[i] = im._laplace_g(np.full_like(m, b), m, inv)
            if (ends[high - low + 1] == ends[0]).any():
                found.add("laplace:flat-uniform-fallback")
        stage[0] = "upsampling"
        dense = im.upsample_dense(codec)
        stage[0] = "synthesis"
        out = im.synthesis_output(codec, dense)
        stage[0] = "samples"
        for channel, c in enumerate(out):
            if codec.color_format == 3 and channel > 0:
                c = im.subsample_chroma(c)
            if (c < 0).any():
                found.add("samples:clipped-low")
            if (c > 1 << im.SYN_FRAC).any():
                found.add("samples:clipped-high")
    found |= {f"{name}:int32-wrap" for name in wrapped}
    return found


def syntax_classes(codec: IntegerCodec, info: StreamInfo) -> set[str]:
    """Syntax elements and value classes of the header, weights and latents."""
    found = {
        f"color:{COLOR_NAMES[codec.color_format]}-{codec.bit_depth}bit",
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
            kind = "residual" if layer.residual else "linear"
            found.add(f"{module}:{kind}-{layer.activation}")
            if layer.out_channels == 64:
                found.add(f"{module}:width-64")
        if module == "synthesis":
            found |= {f"synthesis:kernel-{layer.kernel}" for layer in layers}
    mac_arm, c_in = 0, codec.dim_arm
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
        low, high = info.latent_min[level], info.latent_max[level]
        if low == high:
            found.add("grid:constant" if low else "grid:all-zero")
        elif level in info.empty_coded_grids:
            found.add("grid:coded-without-substream")
        elif high - low == 1:
            found.add("grid:alphabet-2")
        if low == INT16_MIN:
            found.add("latent:-32768")
        if high == INT16_MAX:
            found.add("latent:32767")
        if high - low + 1 == 1 << 16:
            found.add("grid:alphabet-65536")
    if all(low == high for low, high in zip(info.latent_min, info.latent_max, strict=True)):
        found.add("grid:no-substream-at-all")
    parameters = [codec.ups_taps]
    for w, b in codec.arm_weights + codec.syn_weights:
        parameters += [w, b]
    values = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in parameters])
    if (values == INT16_MIN).any():
        found.add("weight:-32768")
    if (values == INT16_MAX).any():
        found.add("weight:32767")
    orders = set(info.orders.values())
    found |= {f"exp-golomb:k{k}" for k in orders & {0, 16}}
    if info.max_code_bits == 17:
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


# ---------------------------------------------------------------------------
# Generator-made streams


@dataclass(frozen=True)
class GeneratorCase:
    """A stream drawn by `random_codec(default_rng(seed), **options)`, then edited by
    each function of `edit` in turn (a function or a tuple of them).

    `stream_edit` turns the written stream into another valid stream that
    decodes to the same samples (used where the writer cannot express the case).
    """

    slug: str
    description: str
    seed: int
    options: dict
    edit: Callable[[IntegerCodec], None] | tuple[Callable[[IntegerCodec], None], ...] = ()
    stream_edit: Callable[[bytes], bytes] | None = None

    @property
    def edits(self) -> tuple[Callable[[IntegerCodec], None], ...]:
        return self.edit if isinstance(self.edit, tuple) else (self.edit,)

    def build_codec(self) -> IntegerCodec:
        codec = random_codec(np.random.default_rng(self.seed), **self.options)
        for edit in self.edits:
            edit(codec)
        return codec

    def build(self) -> tuple[bytes, IntegerCodec]:
        """(stream, the codec whose simulation gives the expected samples)."""
        codec = self.build_codec()
        data = write_stream(codec)
        if self.stream_edit is not None:
            data = self.stream_edit(data)
        return data, codec

    def recipe(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        text = f"random_codec(default_rng({self.seed}), {options})"
        if self.edits:
            text += ", then " + ", ".join(edit.__name__ for edit in self.edits)
        if self.stream_edit is not None:
            text += f", stream edited by {self.stream_edit.__name__}"
        return text


def _visible_output(codec: IntegerCodec) -> None:
    """The last synthesis layer redrawn for the scale of its actual input, so that the
    samples depend on the latents: an output spread of about 800 / 4096 around mid-grey.

    (`random_codec` scales the last layer for a latent range, not for what a deep stack
    or an int16-wide alphabet feeds it, and its weights can then all round to 0.)
    """
    rng = np.random.default_rng(codec.width * 1000 + codec.height)
    x = im.upsample_dense(codec)
    for layer, (w, b) in zip(codec.syn_layers[:-1], codec.syn_weights[:-1], strict=True):
        x = im.conv_layer(x, layer, w, b, codec.syn_w_shift, codec.syn_b_shift)
    assert not codec.syn_layers[-1].residual
    w, b = codec.syn_weights[-1]
    # A robust input scale: a few int16-extreme latents must not set it.
    scale = max(1.0, float(np.percentile(np.abs(x), 90)))
    std = 800 / (scale * np.sqrt(w[0].size)) * (1 << codec.syn_w_shift)
    w[:] = np.clip(np.rint(rng.normal(0, std, size=w.shape)), INT16_MIN, INT16_MAX)
    b[:] = min(INT16_MAX, (1 << codec.syn_b_shift) >> 1)  # 0.5, mid-grey


def _readable_synthesis(codec: IntegerCodec) -> None:
    """syn_w_shift 16 and syn_b_shift 12, and a 1x1 layer appended to the synthesis:
    2048 + x / 8. With w_shift 16 every layer's (wrapped) accumulator comes out within
    +-2^15, so the appended layer puts about half the samples inside the sample range,
    where they show the wrapped values exactly rather than clipped."""
    n = codec.n_channels
    eye = np.eye(n, dtype=np.int64).reshape(n, n, 1, 1)
    codec.syn_layers.append(LayerDesc(n, 1, False, "none"))
    codec.syn_weights.append((eye * 8192, np.full(n, 2048, dtype=np.int64)))
    codec.syn_w_shift, codec.syn_b_shift = 16, im.SYN_FRAC


def _zero_grids_0_and_3(codec: IntegerCodec) -> None:
    """Grids 0 and 3 all zero (K = 1, latent 0), grid 2 constant at -5."""
    codec.latents[0] = np.zeros_like(codec.latents[0])
    codec.latents[2] = np.full_like(codec.latents[2], -5)
    codec.latents[3] = np.zeros_like(codec.latents[3])


def _constant_grids_zero_and_extremes(codec: IntegerCodec) -> None:
    """Every grid constant: grid 0 at 0, grid 1 at -32768, grid 2 at 32767."""
    for level, value in enumerate((0, INT16_MIN, INT16_MAX)):
        codec.latents[level] = np.full_like(codec.latents[level], value)


def _grid1_constant_latent_min(codec: IntegerCodec) -> None:
    """Grid 1 constant at -3 (the stream edit then declares latent_max = 4 for it)."""
    codec.latents[1] = np.full_like(codec.latents[1], -3)


def _declare_grid1_alphabet(data: bytes) -> bytes:
    """Grid 1: latent_max 4 instead of -3, still no substream (valid, spec 5.5)."""
    _, info = parse_stream(data)
    offset = info.grids_offset + 8 * 1 + 2  # grid 1's latent_max
    assert info.latent_min[1] == info.latent_max[1] == -3 and info.substream_bytes[1] == 0
    return data[:offset] + struct.pack("<h", 4) + data[offset + 2 :]


def _full_int16_alphabet(codec: IntegerCodec) -> None:
    """Grid 0 holds both int16 extremes, so its alphabet is all 65536 values."""
    codec.latents[0][0, 0] = INT16_MIN
    codec.latents[0][-1, -1] = INT16_MAX


def _binary_latents(codec: IntegerCodec) -> None:
    """Grid 0 latents in {0, 1} (alphabet of 2)."""
    codec.latents[0] = (codec.latents[0] > 0).astype(np.int64)


def _flat_laplace(codec: IntegerCodec) -> None:
    """ARM = biases only: mu = 32767 / 256 latents above every latent, log_scale = -32768
    (clipped to -1536): every boundary is past EXP_NEG, G(0) = G(K), uniform cdf."""
    ((w, b),) = codec.arm_weights
    w[:] = 0
    b[:] = (INT16_MAX, INT16_MIN)
    codec.arm_w_shift, codec.arm_b_shift = 0, im.ARM_FRAC


def _clipped_laplace(codec: IntegerCodec) -> None:
    """Two ARM layers of biases and a diagonal: mu = 2 * (32767 << 8), beyond 2^23 (clipped),
    and log_scale = 32767 << 8 (clipped to 2048): a nearly flat Laplace far from the latents."""
    (w0, b0), (w1, b1) = codec.arm_weights
    w0[:] = 0
    b0[:] = INT16_MAX
    w1[:] = ((2, 0), (0, 1))
    b1[:] = 0
    codec.arm_w_shift, codec.arm_b_shift = 0, 0


def _negative_mu_laplace(codec: IntegerCodec) -> None:
    """Latents made non-negative; one ARM layer: mu = -32768 * (sum of contexts << 8) / 16,
    beyond -2^23 (clipped) wherever the contexts add up to 17 or more; log_scale = 256."""
    codec.latents = [np.abs(latent) for latent in codec.latents]
    ((w, b),) = codec.arm_weights
    w[0, :] = INT16_MIN
    w[1, :] = 0
    b[:] = (0, 16)
    codec.arm_w_shift, codec.arm_b_shift = 4, 4


def _chroma_sum_wraps(codec: IntegerCodec) -> None:
    """One grid, one 1x1 synthesis layer with shifts 0 / 12: Y = 2048 (mid-grey),
    U = 16 * (latent << 12), V = -16 * (latent << 12). Latents at the int16 extremes make
    U and V about +-2^31, so the 2x2 sums of the 4:2:0 reduction wrap (spec 8.1)."""
    latent = codec.latents[0]
    codec.latents[0] = np.where(latent > 0, INT16_MAX, np.where(latent < 0, INT16_MIN, latent))
    codec.syn_weights = [
        (np.array([0, 16, -16]).reshape(3, 1, 1, 1), np.array([2048, 0, 0])),
    ]
    codec.syn_w_shift, codec.syn_b_shift = 0, im.SYN_FRAC


BENCH_ARM = "16-1-linear-relu,16-1-linear-relu,2-1-linear-none"
OP1000_SYN = "16-1-linear-relu,3-1-linear-none,3-3-residual-relu,3-3-residual-none"
LARGEST_ARM = (  # 24*64 + 64*64 + 64*30 + 30*20 + 20*2 = 8192 MAC per latent
    "64-1-linear-relu,64-1-residual-leakyrelu,30-1-linear-none,20-1-linear-relu,2-1-linear-none"
)
LARGEST_SYN = (  # 7*64 + 64*64 + 9*64*6 + 49*6*6 + 6*13 + 25*13*8 + 9*8*18 + 49*18*3 = 16384
    "64-1-linear-relu,64-1-residual-leakyrelu,6-3-linear-none,6-7-residual-relu,"
    "13-1-linear-leakyrelu,8-5-linear-relu,18-3-linear-leakyrelu,3-7-linear-none"
)

GENERATOR_CASES: list[GeneratorCase] = [
    GeneratorCase(
        "smallest-1x1-grey",
        "Smallest picture and architecture: 1x1 grey 8-bit, 1 grid (one latent, so "
        "constant: no substream), r = 1, T = 1, ARM 2-1-linear-none, synthesis 1-1-linear-none.",
        1,
        dict(
            width=1,
            height=1,
            n_grids=1,
            color_format=0,
            bit_depth=8,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            syn="1-1-linear-none",
            ups_taps=1,
        ),
    ),
    GeneratorCase(
        "smallest-arch-coded-grey-9bit",
        "Smallest architecture with a coded grid: 9x7 grey 9-bit, 1 grid of alphabet 2, "
        "r = 1, T = 1, ARM 2-1-linear-none, synthesis 1-1-linear-none.",
        2,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=0,
            bit_depth=9,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            syn="1-1-linear-none",
            ups_taps=1,
            latent_range=3,
        ),
        edit=_binary_latents,
    ),
    GeneratorCase(
        "1x1-rgb-7grids",
        "1x1 RGB 8-bit with the maximum of 7 grids, every grid 1x1 (constant), r = 2, T = 8.",
        3,
        dict(width=1, height=1, n_grids=7, color_format=1, bit_depth=8, n_ctx_rowcol=2, ups_taps=8),
    ),
    GeneratorCase(
        "1x37-yuv420-10bit",
        "One column: 1x37 YUV 4:2:0 10-bit (1x19 chroma), 5 grids, r = 3 (picture narrower "
        "than the ARM context), T = 6.",
        4,
        dict(
            width=1, height=37, n_grids=5, color_format=3, bit_depth=10, n_ctx_rowcol=3, ups_taps=6
        ),
    ),
    GeneratorCase(
        "41x1-yuv444-10bit",
        "One row: 41x1 YUV 4:4:4 10-bit, 6 grids, r = 2, T = 7.",
        5,
        dict(
            width=41, height=1, n_grids=6, color_format=2, bit_depth=10, n_ctx_rowcol=2, ups_taps=7
        ),
    ),
    GeneratorCase(
        "2x9-grey-12bit-narrow",
        "2x9 grey 12-bit with r = 3: the picture is narrower than the ARM context, 2 grids, T = 2.",
        6,
        dict(
            width=2, height=9, n_grids=2, color_format=0, bit_depth=12, n_ctx_rowcol=3, ups_taps=2
        ),
    ),
    GeneratorCase(
        "33x17-yuv420-8bit",
        "Odd width and height in YUV 4:2:0 8-bit (17x9 chroma, edge rows and columns of the "
        "2x2 reduction), 4 grids, r = 2, T = 3.",
        7,
        dict(
            width=33, height=17, n_grids=4, color_format=3, bit_depth=8, n_ctx_rowcol=2, ups_taps=3
        ),
    ),
    GeneratorCase(
        "23x19-rgb-10bit-r1",
        "RGB 10-bit 23x19, 3 grids, r = 1, T = 2, an ARM whose output layer is relu, "
        "7 synthesis layers.",
        8,
        dict(
            width=23,
            height=19,
            n_grids=3,
            color_format=1,
            bit_depth=10,
            n_ctx_rowcol=1,
            ups_taps=2,
            arm="6-1-linear-none,2-1-linear-relu",
            syn=(
                "8-1-linear-relu,8-3-residual-relu,8-1-linear-leakyrelu,4-3-linear-relu,"
                "4-1-residual-none,4-5-linear-relu,3-1-linear-none"
            ),
        ),
    ),
    GeneratorCase(
        "19x14-yuv444-8bit-r3",
        "YUV 4:4:4 8-bit 19x14, 4 grids, r = 3, T = 5, 4 ARM and 5 synthesis layers.",
        9,
        dict(
            width=19,
            height=14,
            n_grids=4,
            color_format=2,
            bit_depth=8,
            n_ctx_rowcol=3,
            ups_taps=5,
            arm="24-1-linear-relu,16-1-linear-relu,8-1-linear-relu,2-1-linear-none",
            syn=(
                "12-1-linear-relu,12-1-residual-relu,6-3-linear-relu,3-3-linear-none,"
                "3-1-residual-none"
            ),
        ),
    ),
    GeneratorCase(
        "67x45-rgb-7grids",
        "67x45 RGB 8-bit with all 7 grids (the smallest grid 2x1), r = 2, T = 4, a "
        "Cool-chic-like architecture (ARM 16-16-2, synthesis 16-1, 3-1, two 3x3 residual).",
        10,
        dict(
            width=67,
            height=45,
            n_grids=7,
            color_format=1,
            bit_depth=8,
            n_ctx_rowcol=2,
            ups_taps=4,
            arm=BENCH_ARM,
            syn=OP1000_SYN,
        ),
    ),
    GeneratorCase(
        "synthesis-all-kernels-types",
        "Synthesis with every kernel size (7, 5, 3, 1) and every layer type and activation "
        "(linear / residual x none / relu / leakyrelu); RGB 14-bit 23x11, 3 grids.",
        11,
        dict(
            width=23,
            height=11,
            n_grids=3,
            color_format=1,
            bit_depth=14,
            syn=(
                "6-7-linear-relu,6-5-residual-leakyrelu,4-3-linear-none,4-1-residual-relu,"
                "3-3-linear-leakyrelu,3-7-residual-none"
            ),
        ),
    ),
    GeneratorCase(
        "arm-all-types",
        "ARM with 5 layers of every type and activation (residual leakyrelu / none / relu, "
        "linear relu, a leakyrelu output layer); grey 15-bit 17x12, r = 2.",
        12,
        dict(
            width=17,
            height=12,
            n_grids=2,
            color_format=0,
            bit_depth=15,
            n_ctx_rowcol=2,
            arm=(
                "12-1-residual-leakyrelu,8-1-linear-relu,8-1-residual-none,"
                "8-1-residual-relu,2-1-linear-leakyrelu"
            ),
        ),
    ),
    GeneratorCase(
        "largest-architecture",
        "Largest architecture: ARM of 5 layers, width 64, 8192 MAC per latent with r = 3; "
        "synthesis of 8 layers, width 64, kernels up to 7, 16384 MAC per pixel; 7 grids, "
        "T = 8; RGB 16-bit 13x11 (last layer scaled so that the samples show the latents).",
        13,
        dict(
            width=13,
            height=11,
            n_grids=7,
            color_format=1,
            bit_depth=16,
            n_ctx_rowcol=3,
            ups_taps=8,
            arm=LARGEST_ARM,
            syn=LARGEST_SYN,
        ),
        edit=_visible_output,
    ),
    GeneratorCase(
        "zero-and-constant-grids",
        "All-zero grids 0 and 3 and a constant grid 2 (no substreams) among 5 grids; "
        "RGB 12-bit 16x11.",
        14,
        dict(width=16, height=11, n_grids=5, color_format=1, bit_depth=12),
        edit=_zero_grids_0_and_3,
    ),
    GeneratorCase(
        "all-grids-constant",
        "Every grid constant (at 0, -32768 and 32767): no substream at all, upsampling of "
        "extreme constants; grey 13-bit 9x6.",
        15,
        dict(width=9, height=6, n_grids=3, color_format=0, bit_depth=13),
        edit=_constant_grids_zero_and_extremes,
    ),
    GeneratorCase(
        "coded-grid-without-substream",
        "Grid 1 declares latent_min -3, latent_max 4 and a 0-byte substream: the rANS state "
        "stays 0 and every latent decodes to latent_min (spec 5.5); grey 8-bit 10x8.",
        16,
        dict(width=10, height=8, n_grids=2, color_format=0, bit_depth=8),
        edit=(_grid1_constant_latent_min, _visible_output),
        stream_edit=_declare_grid1_alphabet,
    ),
    GeneratorCase(
        "full-int16-alphabet",
        "Latents over the whole int16 range: grid 0 has alphabet 65536 (one latent at "
        "-32768, one at 32767, the others within +-60 so that the samples show each of "
        "them); YUV 4:4:4 8-bit 10x7, 2 grids.",
        17,
        dict(
            width=10,
            height=7,
            n_grids=2,
            color_format=2,
            bit_depth=8,
            latent_range=60,
            shifts=dict(syn_w_shift=14),
        ),
        edit=(_full_int16_alphabet, _visible_output),
    ),
    GeneratorCase(
        "full-range-weights",
        "Every weight, bias and tap uniform over the whole int16 range (int32 wrap-around "
        "in every module), synthesis shift 16 and a last 1x1 layer that brings the wrapped "
        "values near the sample range; RGB 8-bit 13x9.",
        18,
        dict(width=13, height=9, color_format=1, bit_depth=8, weight_range=32767),
        edit=_readable_synthesis,
    ),
    GeneratorCase(
        "extreme-r1-grey",
        "int16-extreme weights and latents (mostly -32768 / 32767), shifts anywhere in range; "
        "grey 8-bit 7x6, r = 1.",
        19,
        dict(width=7, height=6, n_ctx_rowcol=1, color_format=0, bit_depth=8, extreme=True),
    ),
    GeneratorCase(
        "extreme-r2-yuv420-11bit",
        "int16-extreme weights and latents; YUV 4:2:0 11-bit 6x5, r = 2.",
        20,
        dict(width=6, height=5, n_ctx_rowcol=2, color_format=3, bit_depth=11, extreme=True),
    ),
    GeneratorCase(
        "extreme-r3-rgb-16bit",
        "int16-extreme weights and latents, synthesis shift 16 and a last 1x1 layer that "
        "brings the wrapped values near the sample range; RGB 16-bit 5x7, r = 3.",
        21,
        dict(width=5, height=7, n_ctx_rowcol=3, color_format=1, bit_depth=16, extreme=True),
        edit=_readable_synthesis,
    ),
    GeneratorCase(
        "extreme-max-shifts",
        "int16-extreme weights and latents with every shift at its maximum (arm 16/24, "
        "ups 16, synthesis 16/28); YUV 4:2:0 8-bit 5x3.",
        22,
        dict(
            width=5,
            height=3,
            n_grids=2,
            color_format=3,
            bit_depth=8,
            extreme=True,
            shifts=dict(
                arm_w_shift=16, arm_b_shift=24, ups_shift=16, syn_w_shift=16, syn_b_shift=28
            ),
        ),
    ),
    GeneratorCase(
        "extreme-zero-shifts",
        "int16-extreme weights and latents with every shift 0 (round_shift by 0); grey 10-bit 5x3.",
        23,
        dict(
            width=5,
            height=3,
            n_grids=2,
            color_format=0,
            bit_depth=10,
            extreme=True,
            shifts=dict(arm_w_shift=0, arm_b_shift=0, ups_shift=0, syn_w_shift=0, syn_b_shift=0),
        ),
    ),
    GeneratorCase(
        "laplace-flat-fallback",
        "Designed ARM: mu far above every latent and log_scale clipped low, so every "
        "boundary's tail mass is 0, D = 0 and the cdf is the uniform fallback (spec 5.4); "
        "grey 8-bit 12x8.",
        24,
        dict(
            width=12,
            height=8,
            n_grids=2,
            color_format=0,
            bit_depth=8,
            arm="2-1-linear-none",
            latent_range=3,
        ),
        edit=_flat_laplace,
    ),
    GeneratorCase(
        "laplace-mu-and-scale-clipped",
        "Designed ARM: mu beyond +2^23 and log_scale beyond 2048, both clipped (spec 5.4): "
        "a nearly flat distribution over a wide alphabet; RGB 8-bit 11x9.",
        25,
        dict(
            width=11,
            height=9,
            n_grids=2,
            color_format=1,
            bit_depth=8,
            arm="2-1-linear-none,2-1-linear-none",
            latent_range=200,
            shifts=dict(syn_w_shift=14),
        ),
        edit=(_clipped_laplace, _visible_output),
    ),
    GeneratorCase(
        "laplace-negative-mu",
        "Designed ARM: mu driven by the contexts below -2^23 (clipped) away from the top-left "
        "corner, so the tail masses vanish on the upper side of mu; grey 16-bit 12x10, r = 1.",
        26,
        dict(
            width=12,
            height=10,
            n_grids=2,
            color_format=0,
            bit_depth=16,
            n_ctx_rowcol=1,
            arm="2-1-linear-none",
            latent_range=40,
        ),
        edit=_negative_mu_laplace,
    ),
    GeneratorCase(
        "yuv420-chroma-sum-wraps",
        "Designed synthesis: chroma values near +-2^31 whose 2x2 sums wrap in the 4:2:0 "
        "reduction (spec 8.1), latents at -32768 / 0 / 32767; YUV 4:2:0 10-bit 9x7.",
        27,
        dict(
            width=9,
            height=7,
            n_grids=1,
            color_format=3,
            bit_depth=10,
            arm="2-1-linear-none",
            syn="3-1-linear-none",
            latent_range=2,
        ),
        edit=_chroma_sum_wraps,
    ),
]
GENERATOR_CASES += GAP_GENERATOR_CASES  # numbered from 050 (their `number`)


# ---------------------------------------------------------------------------
# Encoder-made streams (Kodak crops)


@dataclass(frozen=True)
class EncoderCase:
    """A crop (top, left, height, width) of a Kodak picture, converted, then encoded."""

    slug: str
    description: str
    image: str
    crop: tuple[int, int, int, int]
    convert: str  # "rgb", "grey", "yuv444-8", "yuv420-10"
    options: dict

    def recipe(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.options.items())
        top, left, height, width = self.crop
        return (
            f"encode({self.image}.png[{top}:{top + height}, {left}:{left + width}] as "
            f"{self.convert}, {options})"
        )

    def picture(self):
        """The picture to encode (an encoder `Picture`)."""
        import imageio.v3 as iio

        from coolchic_ref.encoder.image_io import Picture

        top, left, height, width = self.crop
        rgb = iio.imread(KODAK / f"{self.image}.png")[top : top + height, left : left + width]
        rgb = np.ascontiguousarray(rgb[..., :3])
        source = f"{self.image}-crop"
        if self.convert == "rgb":
            return Picture([rgb[..., c].copy() for c in range(3)], 1, 8, source)
        # BT.709 luma and colour differences of the gamma-coded RGB, limited range.
        x = rgb.astype(np.float64) / 255
        y = 0.2126 * x[..., 0] + 0.7152 * x[..., 1] + 0.0722 * x[..., 2]
        pb = (x[..., 2] - y) / 1.8556
        pr = (x[..., 0] - y) / 1.5748
        if self.convert == "grey":
            return Picture([np.rint(255 * y).astype(np.uint8)], 0, 8, source)
        bits = 8 if self.convert == "yuv444-8" else 10
        scale = 1 << (bits - 8)
        planes = [
            16 * scale + 219 * scale * y,
            128 * scale + 224 * scale * pb,
            128 * scale + 224 * scale * pr,
        ]
        if self.convert == "yuv420-10":
            for c in (1, 2):  # 2x2 means, the last row / column repeated for odd sizes
                p = np.pad(planes[c], ((0, height % 2), (0, width % 2)), mode="edge")
                planes[c] = (p[0::2, 0::2] + p[0::2, 1::2] + p[1::2, 0::2] + p[1::2, 1::2]) / 4
        dtype = np.uint8 if bits == 8 else np.uint16
        planes = [np.clip(np.rint(p), 0, (1 << bits) - 1).astype(dtype) for p in planes]
        return Picture(planes, 3 if self.convert == "yuv420-10" else 2, bits, source)


_TRAIN = dict(preset="instant", n_itr=800, device="cpu", seed=0)

ENCODER_CASES: list[EncoderCase] = [
    EncoderCase(
        "kodim23-64x48-rgb8",
        "Encoder-made: a 64x48 crop of kodim23 (parrot feathers), RGB 8-bit, operating "
        "point 1000 (7 grids, r = 2, T = 4).",
        "kodim23",
        (368, 272, 48, 64),
        "rgb",
        dict(lmbda=1e-3, op="1000", **_TRAIN),
    ),
    EncoderCase(
        "kodim08-96x64-rgb8",
        "Encoder-made: a 96x64 crop of kodim08 (house front), RGB 8-bit, operating point "
        "2000 (r = 3).",
        "kodim08",
        (288, 336, 64, 96),
        "rgb",
        dict(lmbda=2e-3, op="2000", **_TRAIN),
    ),
    EncoderCase(
        "kodim03-67x45-rgb8-7grids",
        "Encoder-made: a 67x45 crop of kodim03 (odd size, 7 grids down to 2x1), RGB 8-bit, "
        "operating point 500.",
        "kodim03",
        (240, 48, 45, 67),
        "rgb",
        dict(lmbda=1e-3, op="500", **_TRAIN),
    ),
    EncoderCase(
        "kodim19-64x48-yuv420-10bit",
        "Encoder-made: a 64x48 crop of kodim19 (lighthouse) converted to YUV 4:2:0 10-bit "
        "(BT.709, limited range), operating point 1000.",
        "kodim19",
        (128, 224, 48, 64),
        "yuv420-10",
        dict(lmbda=1e-3, op="1000", **{**_TRAIN, "n_itr": 1500}),
    ),
    EncoderCase(
        "kodim15-48x40-grey8",
        "Encoder-made: a 48x40 crop of kodim15 converted to grey (BT.709 luma) 8-bit, "
        "operating point 3000.",
        "kodim15",
        (112, 352, 40, 48),
        "grey",
        dict(lmbda=1e-3, op="3000", **_TRAIN),
    ),
    EncoderCase(
        "kodim20-40x32-yuv444-8bit",
        "Encoder-made: a 40x32 crop of kodim20 (aeroplane) converted to YUV 4:4:4 8-bit "
        "(BT.709, limited range), operating point 1000.",
        "kodim20",
        (352, 64, 32, 40),
        "yuv444-8",
        dict(lmbda=2e-3, op="1000", **_TRAIN),
    ),
]


def encode_case(case: EncoderCase) -> tuple[bytes, list[np.ndarray]]:
    """Encode one photograph crop with the real encoder: (stream, its predicted planes).

    The encoder verifies its stream against the reference decoder itself (closed
    loop); the planes are its integer simulation's.
    """
    from coolchic_ref.encoder.api import encode

    options = dict(case.options)
    lmbda = options.pop("lmbda")
    preset = options.pop("preset")
    result = encode(case.picture(), lmbda=lmbda, preset=preset, **options)
    return result.stream, result.planes


# ---------------------------------------------------------------------------
# Invalid streams (spec section 9)


@dataclass(frozen=True)
class InvalidCase:
    """An edit of valid stream `base` that spec section 9 rule `rule` rejects."""

    slug: str
    description: str
    base: str  # slug of a generator case
    mutate: Callable[[bytes], bytes]
    rule: int
    error: str  # a part of the reference decoder's message (informative)


def _put(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value) :]


def _with_weights(data: bytes, section: bytes, **quant: int) -> bytes:
    """`data` with a new weights section (weights_bytes updated) and quantization bytes."""
    _, info = parse_stream(data)
    names = (
        "arm_w_shift",
        "arm_b_shift",
        "arm_w_egk",
        "arm_b_egk",
        "ups_shift",
        "ups_egk",
        "syn_w_shift",
        "syn_b_shift",
        "syn_w_egk",
        "syn_b_egk",
    )
    for name, value in quant.items():
        data = _put(data, info.quant_offset + names.index(name), bytes([value]))
    data = _put(data, info.weights_bytes_offset, struct.pack("<I", len(section)))
    end = info.weights_offset + info.fields["weights_bytes"]
    return data[: info.weights_offset] + section + data[end:]


def _bad_magic(data: bytes) -> bytes:
    return b"CCRG" + data[4:]


def _version_2(data: bytes) -> bytes:
    return _put(data, 4, b"\x02")


def _cut_in_header(data: bytes) -> bytes:
    return data[:20]


def _eight_grids(data: bytes) -> bytes:
    return _put(data, 11, b"\x08")  # n_grids (offset 11) = 8 > 7


def _syn_mac_over_limit(data: bytes) -> bytes:
    """Synthesis layer 2 (6-3-linear-none of the largest architecture) gets kernel 5:
    16384 + 9 * 64 * 6 * (25 - 9) / 9 MAC per pixel (the weights section no longer
    matches, but the header rules come first)."""
    _, info = parse_stream(data)
    offset = 16 + 3 * info.fields["n_arm_layers"] + 4 * 2 + 1
    assert data[offset] == 3
    return _put(data, offset, b"\x05")


def _arm_mac_over_limit(data: bytes) -> bytes:
    """ARM layer 2 (30-1-linear-none of the largest architecture) gets 31 outputs:
    8192 + 64 + 20 = 8276 MAC per latent."""
    offset = 16 + 3 * 2
    assert data[offset] == 30
    return _put(data, offset, bytes([31]))


def _bias_shift_too_large(data: bytes) -> bytes:
    """arm_b_shift = ARM_FRAC + arm_w_shift + 1 (spec 3.4)."""
    _, info = parse_stream(data)
    value = im.ARM_FRAC + info.fields["arm_w_shift"] + 1
    return _put(data, info.quant_offset + 1, bytes([value]))


def _drop_last_byte(data: bytes) -> bytes:
    return data[:-1]


def _trailing_byte(data: bytes) -> bytes:
    return data + b"\x00"


def _weight_code_too_long(data: bytes) -> bytes:
    """arm_w_egk 0 and a section starting with 18 zero bits: z + k reaches 18."""
    _, info = parse_stream(data)
    section = data[info.weights_offset : info.weights_offset + info.fields["weights_bytes"]]
    return _with_weights(data, b"\x00\x00\x00" + section[3:], arm_w_egk=0)


def _weight_out_of_range(data: bytes) -> bytes:
    """The first ARM weight coded as 32768 (order 0): a valid code, an invalid value."""
    _, info = parse_stream(data)
    size = info.fields["weights_bytes"]
    bits = egk_code(32768, 0)
    bits += "1" * (-len(bits) % 8)
    head = int(bits, 2).to_bytes(len(bits) // 8, "big")
    section = data[info.weights_offset : info.weights_offset + size]
    assert len(head) <= size
    return _with_weights(data, head + section[len(head) :], arm_w_egk=0)


def _weights_end_in_zero_run(data: bytes) -> bytes:
    """A 1-byte weights section of zeros with arm_w_egk 0: the section ends inside the
    first code's run of zeros."""
    return _with_weights(data, b"\x00", arm_w_egk=0)


def _weights_end_in_code(data: bytes) -> bytes:
    """A 1-byte section 0b00010000 with arm_w_egk 4: the code needs 3 + 4 bits after its
    leading 1, the section has 4."""
    return _with_weights(data, b"\x10", arm_w_egk=4)


def _weights_section_longer(data: bytes) -> bytes:
    """Four zero bytes appended to the weights section (weights_bytes updated)."""
    _, info = parse_stream(data)
    section = data[info.weights_offset : info.weights_offset + info.fields["weights_bytes"]]
    return _with_weights(data, section + b"\x00" * 4)


def _first_word_zero(data: bytes) -> bytes:
    _, info = parse_stream(data)
    level = next(g for g, size in enumerate(info.substream_bytes) if size)
    return _put(data, info.substream_offsets[level], b"\x00" * 4)


def _extra_substream_word(data: bytes) -> bytes:
    """A word 0x12345678 appended to the first coded grid's substream (size updated)."""
    _, info = parse_stream(data)
    level = next(g for g, size in enumerate(info.substream_bytes) if size)
    size_offset = info.grids_offset + 8 * level + 4
    data = _put(data, size_offset, struct.pack("<I", info.substream_bytes[level] + 4))
    end = info.substream_offsets[level] + info.substream_bytes[level]
    return data[:end] + struct.pack("<I", 0x12345678) + data[end:]


_BASE = "33x17-yuv420-8bit"
INVALID_CASES: list[InvalidCase] = [
    InvalidCase(
        "reject-bad-magic",
        "Magic CCRG instead of CCRF.",
        _BASE,
        _bad_magic,
        1,
        "not a coolchic-ref stream",
    ),
    InvalidCase("reject-version-2", "Version 2.", _BASE, _version_2, 2, "unsupported version"),
    InvalidCase(
        "reject-truncated-header",
        "The stream ends inside the header (20 bytes).",
        _BASE,
        _cut_in_header,
        3,
        "truncated header",
    ),
    InvalidCase(
        "reject-eight-grids",
        "n_grids = 8, above the maximum of 7.",
        _BASE,
        _eight_grids,
        4,
        "n_grids",
    ),
    InvalidCase(
        "reject-synthesis-mac",
        "The largest architecture with one synthesis kernel 3 -> 5: over 16384 MAC per pixel.",
        "largest-architecture",
        _syn_mac_over_limit,
        4,
        "synthesis needs",
    ),
    InvalidCase(
        "reject-arm-mac",
        "The largest architecture with one ARM layer 30 -> 31 outputs: over 8192 MAC per latent.",
        "largest-architecture",
        _arm_mac_over_limit,
        4,
        "ARM needs",
    ),
    InvalidCase(
        "reject-bias-shift",
        "arm_b_shift = 8 + arm_w_shift + 1 (spec 3.4).",
        _BASE,
        _bias_shift_too_large,
        4,
        "arm_b_shift",
    ),
    InvalidCase(
        "reject-truncated-stream",
        "The last byte of the last substream missing.",
        _BASE,
        _drop_last_byte,
        5,
        "truncated stream",
    ),
    InvalidCase(
        "reject-trailing-data",
        "One byte after the last substream.",
        _BASE,
        _trailing_byte,
        5,
        "trailing data",
    ),
    InvalidCase(
        "reject-weight-code-too-long",
        "A weight code with 18 leading zeros (order 0).",
        _BASE,
        _weight_code_too_long,
        6,
        "weight code too long",
    ),
    InvalidCase(
        "reject-weight-out-of-range",
        "A weight coded as 32768.",
        _BASE,
        _weight_out_of_range,
        6,
        "weight out of range",
    ),
    InvalidCase(
        "reject-weights-truncated-zeros",
        "The weights section ends inside a code's run of zeros.",
        _BASE,
        _weights_end_in_zero_run,
        6,
        "weights section truncated",
    ),
    InvalidCase(
        "reject-weights-truncated-code",
        "The weights section ends inside a code's value bits.",
        _BASE,
        _weights_end_in_code,
        6,
        "weights section truncated",
    ),
    InvalidCase(
        "reject-weights-size-mismatch",
        "Four bytes more in the weights section than its parameters use.",
        _BASE,
        _weights_section_longer,
        6,
        "weights section size mismatch",
    ),
    InvalidCase(
        "reject-substream-start",
        "The first word of a substream is 0.",
        _BASE,
        _first_word_zero,
        7,
        "invalid substream start",
    ),
    InvalidCase(
        "reject-substream-size",
        "A word more in a substream than its latents use.",
        _BASE,
        _extra_substream_word,
        7,
        "substream size mismatch",
    ),
]
INVALID_CASES += GAP_INVALID_CASES


# ---------------------------------------------------------------------------
# Assembling, checking and writing the suite


@dataclass
class Built:
    """One stream of the suite, ready to write."""

    name: str
    data: bytes
    entry: dict
    raw: bytes | None  # canonical raw samples (None for a rejected stream)
    planes: list[np.ndarray] | None = None
    sensitivity: tuple[int, int] = (0, 0)  # see `latent_sensitivity`


def _valid_entry(
    name: str,
    description: str,
    origin: str,
    recipe: str,
    data: bytes,
    codec: IntegerCodec,
    info: StreamInfo,
    planes: list[np.ndarray],
) -> Built:
    raw = im.canonical_raw_bytes(planes, codec.bit_depth)
    features = sorted(syntax_classes(codec, info) | value_classes(codec))
    entry = {
        "stream": f"{name}.cool",
        "description": description,
        "origin": origin,
        "recipe": recipe,
        "width": codec.width,
        "height": codec.height,
        "color_format": codec.color_format,
        "bit_depth": codec.bit_depth,
        "bytes": len(data),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "expected": f"{name}.raw.gz",
        "features": features,
    }
    return Built(name, data, entry, raw, planes, latent_sensitivity(codec))


def build_generator(case: GeneratorCase, number: int) -> Built:
    data, codec = case.build()
    planes = im.simulate_decode(codec)
    _, info = parse_stream(data)
    name = f"{number:03d}-{case.slug}"
    return _valid_entry(
        name, case.description, "generator", case.recipe(), data, codec, info, planes
    )


def build_encoder(
    case: EncoderCase,
    number: int,
    existing: Path | None,
    committed_recipe: str | None,
    reencode: bool,
) -> Built:
    """Encode the crop; or, if a stream of that slug exists and not `reencode`, keep it
    (its committed recipe must still be the case's: otherwise re-encode it)."""
    name = f"{number:03d}-{case.slug}"
    predicted = None
    if existing is not None and existing.exists() and not reencode:
        if committed_recipe != case.recipe():
            raise RuntimeError(
                f"{name}: the recipe changed since the stream was made: use --reencode {case.slug}"
            )
        data = existing.read_bytes()
    else:
        data, predicted = encode_case(case)
    codec, info = parse_stream(data)
    if write_stream(codec) != data:
        raise RuntimeError(f"{name}: the stream does not round-trip through parse_stream")
    planes = im.simulate_decode(codec)
    if predicted is not None and any(
        not np.array_equal(a, b) for a, b in zip(planes, predicted, strict=True)
    ):
        raise RuntimeError(f"{name}: the encoder's own prediction differs from the simulation")
    return _valid_entry(name, case.description, "encoder", case.recipe(), data, codec, info, planes)


def build_invalid(case: InvalidCase, number: int, bases: dict[str, bytes]) -> Built:
    name = f"{number:03d}-{case.slug}"
    data = case.mutate(bases[case.base])
    entry = {
        "stream": f"{name}.cool",
        "description": f"Invalid: {case.description} Made from {case.base}.",
        "origin": "invalid",
        "recipe": f"{case.mutate.__name__}({case.base})",
        "bytes": len(data),
        "sha256": None,
        "expected": None,
        "reject": {"rule": case.rule, "error": case.error},
    }
    return Built(name, data, entry, None)


def _existing_streams(directory: Path) -> dict[str, tuple[Path, str | None]]:
    """slug -> (path, committed recipe) of the streams already in the suite."""
    try:
        entries = json.loads((directory / "manifest.json").read_text())["streams"]
        recipes = {entry["stream"]: entry.get("recipe") for entry in entries}
    except (OSError, ValueError, KeyError):
        recipes = {}
    found = {}
    for path in sorted((directory / "streams").glob("*.cool")):
        found[path.stem.split("-", 1)[1]] = (path, recipes.get(path.name))
    return found


def build_suite(
    directory: Path, reencode: Iterable[str] = (), encoder: bool = True, log=print
) -> list[Built]:
    """Every stream of the suite, in manifest order. `reencode`: slugs of the encoder-made
    streams to encode again although they exist ("all" for every one)."""
    reencode = set(reencode)
    built: list[Built] = []
    number = 1
    for case in GENERATOR_CASES:
        number = getattr(case, "number", number)
        start = time.perf_counter()
        built.append(build_generator(case, number))
        seconds = time.perf_counter() - start
        log(f"  {built[-1].name}: {len(built[-1].data)} bytes ({seconds:.1f} s)")
        number += 1
    existing = _existing_streams(directory)
    number = 101
    for case in ENCODER_CASES:
        path, recipe = existing.get(case.slug, (None, None))
        if not encoder and path is None:
            log(f"  {case.slug}: skipped (no committed stream and --no-encoder)")
            continue
        again = "all" in reencode or case.slug in reencode
        start = time.perf_counter()
        built.append(build_encoder(case, number, path, recipe, again))
        seconds = time.perf_counter() - start
        log(f"  {built[-1].name}: {len(built[-1].data)} bytes ({seconds:.1f} s)")
        number += 1
    bases = {b.name.split("-", 1)[1]: b.data for b in built}
    number = 201
    for case in INVALID_CASES:
        built.append(build_invalid(case, number, bases))
        number += 1
    return built


def check_with_reference(built: list[Built]) -> list[str]:
    """Problems found by decoding every stream with the reference decoder (empty: none)."""
    import coolchic_ref

    problems = []
    for item in built:
        reject = item.entry.get("reject")
        try:
            image = coolchic_ref.decode(item.data)
        except coolchic_ref.StreamError as error:
            if reject is None:
                problems.append(f"{item.name}: the reference decoder rejects it: {error}")
            elif reject["error"] not in str(error):
                problems.append(f"{item.name}: rejected for another reason: {error}")
            continue
        if reject is not None:
            problems.append(f"{item.name}: the reference decoder does not reject it")
        elif image.raw_bytes() != item.raw:
            problems.append(f"{item.name}: the reference decoder's samples differ")
    return problems


def missing_features(built: list[Built]) -> set[str]:
    covered = set()
    for item in built:
        covered |= set(item.entry.get("features", ()))
    return REQUIRED_FEATURES - covered


def manifest_text(built: list[Built], reason: str) -> str:
    manifest = {
        "suite": "coolchic-ref conformance suite",
        "bitstream_version": 1,
        "manifest_format": MANIFEST_FORMAT,
        "generated_by": "tools/make_conformance.py",
        "reason": reason,
        "streams": [item.entry for item in built],
    }
    return json.dumps(manifest, indent=2) + "\n"


def write_suite(built: list[Built], directory: Path, reason: str) -> None:
    """Replace the suite in `directory`: streams/, expected/, manifest.json."""
    streams, expected = directory / "streams", directory / "expected"
    streams.mkdir(parents=True, exist_ok=True)
    expected.mkdir(parents=True, exist_ok=True)
    keep_streams = {item.entry["stream"] for item in built}
    keep_expected = {item.entry["expected"] for item in built if item.entry["expected"]}
    for path in streams.glob("*.cool"):
        if path.name not in keep_streams:
            path.unlink()
    for path in expected.glob("*.raw.gz"):
        if path.name not in keep_expected:
            path.unlink()
    for item in built:
        (streams / item.entry["stream"]).write_bytes(item.data)
        if item.raw is not None:
            # mtime 0 and no file name: the .gz depends only on the samples (and zlib).
            compressed = gzip.compress(item.raw, compresslevel=9, mtime=0)
            (expected / item.entry["expected"]).write_bytes(compressed)
    (directory / "manifest.json").write_text(manifest_text(built, reason))


def compare_with_committed(built: list[Built], directory: Path) -> list[str]:
    """Differences between the rebuilt suite and the committed one."""
    differences = []
    try:
        committed = json.loads((directory / "manifest.json").read_text())["streams"]
    except (OSError, ValueError, KeyError) as error:
        return [f"cannot read the committed manifest: {error}"]
    by_stream = {entry["stream"]: entry for entry in committed}
    for item in built:
        old = by_stream.pop(item.entry["stream"], None)
        if old is None:
            differences.append(f"{item.name}: not in the committed suite")
            continue
        path = directory / "streams" / item.entry["stream"]
        if not path.exists() or path.read_bytes() != item.data:
            differences.append(f"{item.name}: stream bytes differ")
        if old != item.entry:
            keys = sorted(k for k in set(old) | set(item.entry) if old.get(k) != item.entry.get(k))
            differences.append(f"{item.name}: manifest entry differs in {', '.join(keys)}")
    differences += [f"{name}: in the committed suite only" for name in by_stream]
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SUITE, help="suite directory")
    parser.add_argument("--reason", help="why the suite is regenerated (recorded)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in memory and compare with the committed suite",
    )
    parser.add_argument(
        "--reencode",
        nargs="+",
        default=[],
        metavar="SLUG",
        help="re-encode these photographs (slugs, or 'all') although their streams exist",
    )
    parser.add_argument(
        "--no-encoder", action="store_true", help="leave out encoder-made streams not committed yet"
    )
    args = parser.parse_args(argv)
    if not args.check and not args.reason:
        parser.error("--reason is required: say why the committed suite changes")

    print("building the suite:")
    built = build_suite(args.out, reencode=args.reencode, encoder=not args.no_encoder)
    problems = check_with_reference(built)
    lost = missing_features(built)
    if lost:
        problems.append(f"no stream exercises: {', '.join(sorted(lost))}")
    for item in built:
        changed, tried = item.sensitivity
        if tried and not changed:
            problems.append(f"{item.name}: its samples do not depend on its latents")
    valid = sum(item.raw is not None for item in built)
    print(f"{len(built)} streams ({valid} valid, {len(built) - valid} to reject)")
    if problems:
        print("refusing to write the suite:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.check:
        differences = compare_with_committed(built, args.out)
        for difference in differences:
            print(f"  {difference}")
        print("the committed suite is up to date" if not differences else "the suite differs")
        return 1 if differences else 0
    write_suite(built, args.out, args.reason)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
