"""Fuzzing harness of the coolchic-ref decoder (spec bitstream-v1.md, section 9).

Every input must end in exactly one of two outcomes: a decoded picture, or
`StreamError` with a one-line message; never another exception, a crash, a
time beyond `time_bound` (derived from the declared work, i.e. the MAC budget
of the declared picture) or memory beyond `memory_bound` (derived from the
declared picture size and the limits of spec 3.4). That is what section 9 of
the spec requires and what the oracle (`Oracle.run`) checks, nothing more.

Commands:

    python tools/fuzz.py run --seconds 3600 --mode mutate --corpus DIR --crashes DIR
    python tools/fuzz.py run --seconds 600 --mode atheris --corpus DIR --crashes DIR
    python tools/fuzz.py run --seconds 600 --mode mutate --nojit ...   # NUMBA_DISABLE_JIT=1
    python tools/fuzz.py replay FILE...          # outcome of each file under the oracle
    python tools/fuzz.py make-seeds DIR          # small valid seed streams (needs the encoder)

(`run` may be omitted: `python tools/fuzz.py --seconds 60 ...`.)

Design:
- Inputs are mutations of small valid seed streams (tests/fuzz_seeds/, 1x1 to
  24x16 pictures, 1 to 7 grids), so one decode takes about a millisecond with the
  warm Numba kernels. Mutators know the header layout (`header_fields`, built
  from spec 3.2 and `coolchic_ref.syntax`'s limits): boundary and out-of-range
  field values, inflated sizes and counts, section lengths changed together
  with the sections so that mutations reach the weights reader and the entropy
  decoder, flips/inserts/deletions/truncations, and model-level rewrites
  (hostile weights, architectures, alphabets, zero-length substreams) that
  re-encode a valid stream around them.
- Decoding runs in a worker subprocess (`_worker`), with NUMBA_NUM_THREADS=1
  by default. Before each decode the worker copies the input and its deadline
  into a shared file mapping; the supervisor (`run`) polls it, kills a worker
  that passes its deadline (a hang) and restarts a worker that dies (a Numba
  kernel that indexes out of bounds may segfault), saving the input either way.
- Memory: before each decode the worker sets its address-space limit
  (RLIMIT_AS) to its current virtual size plus `memory_bound(input)`; any
  larger allocation fails (MemoryError, also inside Numba kernels) and is a
  finding. This bounds every allocation (NumPy, Numba's NRT, Python, thread
  stacks), touched or not; glibc's per-thread malloc arenas, address space
  reserved but not allocated, are kept out (`_single_malloc_arena`). The CLI
  sample check measures the real peak RSS of a `coolchic-ref decode`
  subprocess (its own VmHWM at exit) against the peak of the CLI decoding the
  1x1 seed plus the same bound (`cli_baseline_rss`); `measure_decode`
  measures the peak growth during one decode.
- Every `--cli-every` seconds the worker runs the `coolchic-ref decode` CLI on a
  recent input in a subprocess (default thread count): exit code 0 with the
  in-process result's exact raw samples, or 2 with one line on stderr; no file
  other than the requested output, no output at all on rejection.
- With `--nojit` the kernels run as Python (NUMBA_DISABLE_JIT=1), where an
  out-of-bounds index raises IndexError instead of reading garbage: any
  exception other than StreamError is a finding. Slow: tiny seeds only.
- `--mode atheris` runs libFuzzer (atheris) with Python coverage of the parser,
  the weights reader and the pipeline (with --nojit, of the kernels too), and
  these structure-aware mutations as its custom mutator.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import mmap
import os
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SEEDS = ROOT / "tests" / "fuzz_seeds"
MAX_INPUT = 1 << 20  # longest input the fuzzer makes (bytes)

# ---------------------------------------------------------------------------
# Header layout (spec 3.2, 3.3), with the allowed range of every field.
# The limits come from coolchic_ref.syntax; the shift ranges are spec 3.2's.


def _syntax():
    from coolchic_ref import syntax

    return syntax


@dataclass(frozen=True)
class Field:
    """One header field: where it is, how it is packed, and its allowed values."""

    name: str
    offset: int
    fmt: str  # struct format: <B, <H, <I, <h
    low: int
    high: int

    @property
    def size(self) -> int:
        return struct.calcsize(self.fmt)

    @property
    def type_range(self) -> tuple[int, int]:
        bits = 8 * self.size
        if self.fmt == "<h":
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1


QUANT_FIELDS = (
    ("arm_w_shift", 0, 16),
    ("arm_b_shift", 0, 24),
    ("arm_w_egk", 0, 16),
    ("arm_b_egk", 0, 16),
    ("ups_shift", 0, 16),
    ("ups_egk", 0, 16),
    ("syn_w_shift", 0, 16),
    ("syn_b_shift", 0, 28),
    ("syn_w_egk", 0, 16),
    ("syn_b_egk", 0, 16),
)
OFF_N_GRIDS, OFF_N_ARM, OFF_N_SYN = 11, 14, 15


def header_fields(data: bytes) -> list[Field]:
    """The header fields of `data`, laid out from its own count fields (spec 3.2).

    Works on any bytes: counts are taken as they are (not validated) and fields
    beyond the end of `data` are omitted.
    """
    s = _syntax()
    fields = [
        Field("version", 4, "<B", 1, 1),
        Field("color_format", 5, "<B", 0, 3),
        Field("bit_depth", 6, "<B", 8, 16),
        Field("width", 7, "<H", 1, s.MAX_SIDE),
        Field("height", 9, "<H", 1, s.MAX_SIDE),
        Field("n_grids", OFF_N_GRIDS, "<B", 1, s.MAX_GRIDS),
        Field("n_ctx_rowcol", 12, "<B", 1, 3),
        Field("ups_half_taps", 13, "<B", 1, 8),
        Field("n_arm_layers", OFF_N_ARM, "<B", 1, s.MAX_ARM_LAYERS),
        Field("n_syn_layers", OFF_N_SYN, "<B", 1, s.MAX_SYN_LAYERS),
    ]
    if len(data) < 16:
        return [f for f in fields if f.offset + f.size <= len(data)]
    n_grids, n_arm, n_syn = data[OFF_N_GRIDS], data[OFF_N_ARM], data[OFF_N_SYN]
    pos = 16
    for index in range(n_arm):
        for name, low, high in (("out", 1, s.MAX_LAYER_WIDTH), ("type", 0, 1), ("act", 0, 2)):
            fields.append(Field(f"arm{index}.{name}", pos, "<B", low, high))
            pos += 1
    for index in range(n_syn):
        for name, low, high in (
            ("out", 1, s.MAX_LAYER_WIDTH),
            ("kernel", 1, max(s.SYN_KERNELS)),
            ("type", 0, 1),
            ("act", 0, 2),
        ):
            fields.append(Field(f"syn{index}.{name}", pos, "<B", low, high))
            pos += 1
    for name, low, high in QUANT_FIELDS:
        fields.append(Field(name, pos, "<B", low, high))
        pos += 1
    fields.append(Field("weights_bytes", pos, "<I", 1, s.MAX_WEIGHTS_BYTES))
    pos += 4
    for g in range(n_grids):
        fields.append(Field(f"grid{g}.latent_min", pos, "<h", -32768, 32767))
        fields.append(Field(f"grid{g}.latent_max", pos + 2, "<h", -32768, 32767))
        fields.append(Field(f"grid{g}.substream_bytes", pos + 4, "<I", 0, (1 << 32) - 4))
        pos += 8
    return [f for f in fields if f.offset + f.size <= len(data)]


def header_size(data: bytes) -> int:
    """header_bytes of spec 3.2 from the raw count fields (0 if they are not there)."""
    if len(data) < 16:
        return 0
    return 30 + 3 * data[OFF_N_ARM] + 4 * data[OFF_N_SYN] + 8 * data[OFF_N_GRIDS]


@dataclass
class Sections:
    """Byte ranges of the sections of a stream, from its raw header fields."""

    header_end: int
    weights: tuple[int, int]
    substreams: list[tuple[int, int]]
    length_fields: list[Field]  # weights_bytes, then substream_bytes of each grid


def sections(data: bytes) -> Sections | None:
    """Section ranges if the header is complete (the lengths need not add up)."""
    end = header_size(data)
    if end == 0 or len(data) < end:
        return None
    by_name = {f.name: f for f in header_fields(data)}
    weights_field = by_name["weights_bytes"]
    pos = end + read_field(data, weights_field)
    weights = (end, pos)
    subs, length_fields = [], [weights_field]
    for g in range(data[OFF_N_GRIDS]):
        f = by_name[f"grid{g}.substream_bytes"]
        length_fields.append(f)
        size = read_field(data, f)
        subs.append((pos, pos + size))
        pos += size
    return Sections(end, weights, subs, length_fields)


def read_field(data: bytes, f: Field) -> int:
    return struct.unpack_from(f.fmt, data, f.offset)[0]


def write_field(data: bytearray, f: Field, value: int) -> None:
    low, high = f.type_range
    struct.pack_into(f.fmt, data, f.offset, min(max(value, low), high))


# ---------------------------------------------------------------------------
# A parsed stream that can be rewritten (model-level mutations)


def egk_code(value: int, k: int) -> str:
    """Order-k signed exp-Golomb code of `value` (spec 4.2) as '0'/'1' characters."""
    u = 2 * value - 1 if value > 0 else -2 * value
    x = u + (1 << k)
    return "0" * (x.bit_length() - 1 - k) + format(x, "b")


@dataclass
class Model:
    """Everything in a stream, as plain integers, rewritable by `to_bytes`.

    arm / syn: per layer [out, type, act] / [out, kernel, type, act] with their
    weights and biases as flat lists; grids: [latent_min, latent_max] with the
    substream bytes kept as they are.
    """

    scalars: dict[str, int]
    arm: list[list[int]]
    syn: list[list[int]]
    arm_w: list[tuple[list[int], list[int]]]
    taps: list[int]
    syn_w: list[tuple[list[int], list[int]]]
    grids: list[list[int]]
    substreams: list[bytes]

    @classmethod
    def parse(cls, data: bytes) -> Model | None:
        """The model of a stream whose header and weights section are valid, else None."""
        from coolchic_ref.errors import StreamError
        from coolchic_ref.syntax import parse_header
        from coolchic_ref.weights import read_weights

        try:
            h = parse_header(data)
            w = read_weights(h, memoryview(data)[h.header_bytes : h.header_bytes + h.weights_bytes])
        except StreamError:
            return None
        fields = {f.name: read_field(data, f) for f in header_fields(data)}
        scalars = {name: fields[name] for name in ("version", "color_format", "bit_depth")}
        scalars.update(
            {n: fields[n] for n in ("width", "height", "n_ctx_rowcol")}
            | {name: fields[name] for name, _, _ in QUANT_FIELDS}
        )
        offsets = h.substream_offsets
        return cls(
            scalars=scalars,
            arm=[[la.out_channels, int(la.residual), la.activation] for la in h.arm_layers],
            syn=[
                [la.out_channels, la.kernel, int(la.residual), la.activation] for la in h.syn_layers
            ],
            arm_w=[(wt.ravel().tolist(), b.tolist()) for wt, b in w.arm],
            taps=w.ups_taps.tolist(),
            syn_w=[(wt.ravel().tolist(), b.tolist()) for wt, b in w.synthesis],
            grids=[[g.latent_min, g.latent_max] for g in h.grids],
            substreams=[
                bytes(data[o : o + g.substream_bytes])
                for o, g in zip(offsets, h.grids, strict=True)
            ],
        )

    def copy(self) -> Model:
        return Model(
            dict(self.scalars),
            [list(x) for x in self.arm],
            [list(x) for x in self.syn],
            [(list(a), list(b)) for a, b in self.arm_w],
            list(self.taps),
            [(list(a), list(b)) for a, b in self.syn_w],
            [list(x) for x in self.grids],
            list(self.substreams),
        )

    def dim_arm(self) -> int:
        r = self.scalars["n_ctx_rowcol"]
        return 2 * r * (r + 1)

    def n_channels(self) -> int:
        return 1 if self.scalars["color_format"] == 0 else 3

    def weights_section(self) -> bytes:
        s = self.scalars
        parts: list[str] = []
        for w, b in self.arm_w:
            parts += [egk_code(v, s["arm_w_egk"]) for v in w]
            parts += [egk_code(v, s["arm_b_egk"]) for v in b]
        parts += [egk_code(v, s["ups_egk"]) for v in self.taps]
        for w, b in self.syn_w:
            parts += [egk_code(v, s["syn_w_egk"]) for v in w]
            parts += [egk_code(v, s["syn_b_egk"]) for v in b]
        bits = "".join(parts)
        bits += "0" * (-len(bits) % 8)
        return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b"\x00"

    def to_bytes(self) -> bytes:
        """The stream (spec 3.1); lengths follow the sections, nothing is validated."""
        s = self.scalars
        weights = self.weights_section()
        out = bytearray(b"CCRF")
        out += struct.pack(
            "<BBBHHBBBBB",
            s["version"] & 0xFF,
            s["color_format"] & 0xFF,
            s["bit_depth"] & 0xFF,
            s["width"] & 0xFFFF,
            s["height"] & 0xFFFF,
            len(self.grids) & 0xFF,
            s["n_ctx_rowcol"] & 0xFF,
            len(self.taps) & 0xFF,
            len(self.arm) & 0xFF,
            len(self.syn) & 0xFF,
        )
        for layer in self.arm + self.syn:
            out += bytes(v & 0xFF for v in layer)
        out += bytes(s[name] & 0xFF for name, _, _ in QUANT_FIELDS)
        out += struct.pack("<I", len(weights))
        for (lo, hi), sub in zip(self.grids, self.substreams, strict=True):
            out += struct.pack("<hhI", lo, hi, len(sub))
        return bytes(out) + weights + b"".join(self.substreams)


def parse_arch(text: str, arm: bool) -> list[list[int]]:
    """Layers in Cool-chic's notation ('16-1-linear-relu,...') as header descriptors."""
    layers = []
    for item in text.split(","):
        out, kernel, kind, act = item.strip().split("-")
        fields = [int(out), int(kind == "residual"), ("none", "relu", "leakyrelu").index(act)]
        layers.append(fields if arm else [fields[0], int(kernel), *fields[1:]])
    return layers


def synthetic_stream(
    rng: np.random.Generator,
    *,
    width: int,
    height: int,
    n_grids: int,
    arm: str,
    syn: str,
    n_ctx_rowcol: int = 1,
    taps: int = 2,
    color_format: int = 1,
    bit_depth: int = 8,
    latent_range: tuple[int, int] = (-8, 8),
    weight_range: int = 64,
) -> bytes:
    """A valid stream without an encoder: random weights, every substream empty.

    An empty substream with K > 1 is valid (spec 5.5: every symbol decodes to 0),
    so the whole pipeline runs (the ARM at every latent) at any declared size.
    """
    scalars = {
        "version": 1, "color_format": color_format, "bit_depth": bit_depth, "width": width,
        "height": height, "n_ctx_rowcol": n_ctx_rowcol,
        "arm_w_shift": 8, "arm_b_shift": 8, "arm_w_egk": 3, "arm_b_egk": 3,
        "ups_shift": 4, "ups_egk": 2, "syn_w_shift": 8, "syn_b_shift": 8,
        "syn_w_egk": 3, "syn_b_egk": 3,
    }  # fmt: skip
    m = Model(scalars, parse_arch(arm, True), parse_arch(syn, False), [], [], [], [], [])

    def values(n: int) -> list[int]:
        return [int(v) for v in rng.integers(-weight_range, weight_range + 1, size=n)]

    c_in = 2 * n_ctx_rowcol * (n_ctx_rowcol + 1)
    for layer in m.arm:
        m.arm_w.append((values(layer[0] * c_in), values(layer[0])))
        c_in = layer[0]
    m.taps = [4] * taps
    c_in = n_grids
    for layer in m.syn:
        m.syn_w.append((values(layer[0] * c_in * layer[1] ** 2), values(layer[0])))
        c_in = layer[0]
    m.grids = [list(latent_range) for _ in range(n_grids)]
    m.substreams = [b""] * n_grids
    return m.to_bytes()


# Largest decoder budget of spec 3.4: mac_arm = 8192 (r = 3) and mac_syn = 16384 (N = 7).
MAX_MAC_ARM_ARCH = "64-1-linear-relu,62-1-linear-relu,42-1-linear-relu,2-1-linear-none"
MAX_MAC_SYN_ARCH = "16-1-linear-relu,48-3-linear-relu,48-1-linear-relu,3-7-linear-none"


# ---------------------------------------------------------------------------
# Mutators


INT16_EXTREMES = (-32768, 32767, -32767, 0, 1, -1, 16384, -16384)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def boundary_values(f: Field, current: int) -> list[int]:
    """Values worth trying in a field: its limits, just outside them, type extremes."""
    t_low, t_high = f.type_range
    values = {f.low, f.high, f.low - 1, f.high + 1, t_low, t_high, 0, 1, current - 1, current + 1}
    values |= {2 * f.high, f.high // 2}
    return sorted(v for v in values if t_low <= v <= t_high)


def _random_weight(rng: np.random.Generator) -> int:
    r = rng.random()
    if r < 0.4:
        return int(_pick(rng, INT16_EXTREMES))
    if r < 0.7:
        return int(rng.integers(-64, 65))
    return int(rng.integers(-32768, 32768))


class Mutator:
    """Structure-aware mutations of streams. `mutate` returns (new bytes, names applied)."""

    def __init__(self, rng: np.random.Generator, corpus: list[bytes] | None = None) -> None:
        self.rng = rng
        self.corpus = corpus if corpus is not None else []
        self._models: dict[bytes, Model | None] = {}
        self.byte_ops: list[tuple[str, Callable[[bytes], bytes], float]] = [
            ("flip_bits", self.flip_bits, 3),
            ("set_bytes", self.set_bytes, 2),
            ("insert_bytes", self.insert_bytes, 1),
            ("delete_bytes", self.delete_bytes, 1),
            ("truncate", self.truncate, 2),
            ("append", self.append, 0.5),
            ("field_boundary", self.field_boundary, 4),
            ("field_random", self.field_random, 2),
            ("inflate", self.inflate, 1.5),
            ("resize_section", self.resize_section, 3),
            ("section_flip", self.section_flip, 4),
            ("section_words", self.section_words, 2),
            ("splice", self.splice, 1),
            ("model", self.model_mutation, 6),
        ]
        weights = np.array([w for _, _, w in self.byte_ops], dtype=float)
        self._op_p = weights / weights.sum()

    # -- byte level ----------------------------------------------------------

    def flip_bits(self, data: bytes) -> bytes:
        if not data:
            return bytes([int(self.rng.integers(256))])
        out = bytearray(data)
        for _ in range(int(self.rng.integers(1, 9))):
            pos = int(self.rng.integers(len(out)))
            out[pos] ^= 1 << int(self.rng.integers(8))
        return bytes(out)

    def set_bytes(self, data: bytes) -> bytes:
        if not data:
            return b"\x00"
        out = bytearray(data)
        for _ in range(int(self.rng.integers(1, 5))):
            pos = int(self.rng.integers(len(out)))
            out[pos] = _pick(self.rng, (0, 0xFF, 0x7F, 0x80, 1, int(self.rng.integers(256))))
        return bytes(out)

    def insert_bytes(self, data: bytes) -> bytes:
        pos = int(self.rng.integers(len(data) + 1))
        size = int(_pick(self.rng, (1, 2, 4, 8, int(self.rng.integers(1, 65)))))
        fill = _pick(self.rng, ("zero", "ones", "random"))
        block = (
            bytes(size)
            if fill == "zero"
            else b"\xff" * size
            if fill == "ones"
            else self.rng.bytes(size)
        )
        return data[:pos] + block + data[pos:]

    def delete_bytes(self, data: bytes) -> bytes:
        if not data:
            return data
        pos = int(self.rng.integers(len(data)))
        size = int(_pick(self.rng, (1, 2, 4, 8, int(self.rng.integers(1, 65)))))
        return data[:pos] + data[pos + size :]

    def truncate(self, data: bytes) -> bytes:
        if not data:
            return data
        cuts = [0, 4, 5, 16, header_size(data), len(data) - 1, int(self.rng.integers(len(data)))]
        sec = sections(data)
        if sec is not None:
            cuts += [sec.weights[0], sec.weights[1]] + [a for a, _ in sec.substreams]
            cuts += [f.offset + 1 for f in header_fields(data)]
        cut = int(_pick(self.rng, [c for c in cuts if 0 <= c < len(data)] or [0]))
        return data[:cut]

    def append(self, data: bytes) -> bytes:
        size = int(_pick(self.rng, (1, 4, 8, int(self.rng.integers(1, 256)))))
        return data + self.rng.bytes(size)

    # -- header fields -------------------------------------------------------

    def field_boundary(self, data: bytes) -> bytes:
        fields = header_fields(data)
        if not fields:
            return self.flip_bits(data)
        f = _pick(self.rng, fields)
        out = bytearray(data)
        write_field(out, f, int(_pick(self.rng, boundary_values(f, read_field(data, f)))))
        return bytes(out)

    def field_random(self, data: bytes) -> bytes:
        fields = header_fields(data)
        if not fields:
            return self.flip_bits(data)
        f = _pick(self.rng, fields)
        out = bytearray(data)
        write_field(out, f, int(self.rng.integers(f.low, f.high + 1)))
        return bytes(out)

    def inflate(self, data: bytes) -> bytes:
        """Declare a huge picture, weights section or substream, with or without the bytes."""
        by_name = {f.name: f for f in header_fields(data)}
        out = bytearray(data)
        choice = int(self.rng.integers(4))
        s = _syntax()
        if choice == 0 and "height" in by_name:
            width = _pick(self.rng, (s.MAX_SIDE, s.MAX_SIDE, 4096, 1))
            write_field(out, by_name["width"], width)
            write_field(out, by_name["height"], min(s.MAX_SIDE, s.MAX_PIXELS // width))
        elif choice == 1 and "weights_bytes" in by_name:
            write_field(
                out, by_name["weights_bytes"], _pick(self.rng, (s.MAX_WEIGHTS_BYTES, 1 << 20))
            )
        elif choice == 2:
            subs = [f for name, f in by_name.items() if name.endswith("substream_bytes")]
            if subs:
                write_field(out, _pick(self.rng, subs), _pick(self.rng, ((1 << 32) - 4, 1 << 24)))
        else:
            for name in ("n_grids", "n_arm_layers", "n_syn_layers"):
                if name in by_name and self.rng.random() < 0.5:
                    write_field(out, by_name[name], _pick(self.rng, (255, by_name[name].high)))
        if self.rng.random() < 0.5:  # keep only the header
            end = header_size(bytes(out))
            return bytes(out[: end or len(out)])
        return bytes(out)

    # -- sections, with consistent lengths ----------------------------------

    def _section_choice(self, data: bytes) -> tuple[Sections, int] | None:
        sec = sections(data)
        if sec is None or sec.substreams and sec.substreams[-1][1] > len(data):
            return None
        if sec.weights[1] > len(data):
            return None
        return sec, int(self.rng.integers(1 + len(sec.substreams)))

    def resize_section(self, data: bytes) -> bytes:
        """Grow or shrink one section and its length field together (the total stays right)."""
        choice = self._section_choice(data)
        if choice is None:
            return self.field_boundary(data)
        sec, index = choice
        start, end = sec.weights if index == 0 else sec.substreams[index - 1]
        unit = 1 if index == 0 else 4
        delta = unit * int(_pick(self.rng, (-1, 1, -2, 2, int(self.rng.integers(-16, 17)))))
        if index > 0 and self.rng.random() < 0.2:
            delta = -(end - start)  # empty substream: every symbol decodes to 0
        delta = max(delta, -(end - start))
        out = bytearray(data)
        write_field(
            out, sec.length_fields[index], read_field(data, sec.length_fields[index]) + delta
        )
        if delta >= 0:
            pos = int(self.rng.integers(start, end + 1)) if self.rng.random() < 0.5 else end
            block = bytes(delta) if self.rng.random() < 0.5 else self.rng.bytes(delta)
            return bytes(out[:pos]) + block + bytes(out[pos:])
        pos = (
            end + delta
            if self.rng.random() < 0.6
            else int(self.rng.integers(start, end + delta + 1))
        )
        return bytes(out[:pos]) + bytes(out[pos - delta :])

    def section_flip(self, data: bytes) -> bytes:
        """Flip bits inside the weights section or one substream (lengths unchanged)."""
        choice = self._section_choice(data)
        if choice is None:
            return self.flip_bits(data)
        sec, index = choice
        start, end = sec.weights if index == 0 else sec.substreams[index - 1]
        if end <= start:
            return self.resize_section(data)
        out = bytearray(data)
        for _ in range(int(self.rng.integers(1, 4))):
            # The end of a section (last weights, first words of the rANS state) matters most.
            pos = start + int(self.rng.integers(end - start))
            if self.rng.random() < 0.3:
                pos = _pick(self.rng, (start, end - 1))
            out[pos] ^= 1 << int(self.rng.integers(8))
        return bytes(out)

    def section_words(self, data: bytes) -> bytes:
        """Overwrite 32-bit words of a substream with special values."""
        choice = self._section_choice(data)
        if choice is None or not choice[0].substreams:
            return self.set_bytes(data)
        sec = choice[0]
        start, end = _pick(self.rng, sec.substreams)
        if end - start < 4:
            return self.resize_section(data)
        out = bytearray(data)
        word = int(self.rng.integers((end - start) // 4))
        value = _pick(
            self.rng, (0, 1, 0xFFFFFFFF, 0x80000000, 0xFFFFFF, int(self.rng.integers(1 << 32)))
        )
        struct.pack_into("<I", out, start + 4 * word, value)
        return bytes(out)

    def splice(self, data: bytes) -> bytes:
        """Header and weights of `data`, substreams of another corpus entry (lengths fixed)."""
        if not self.corpus:
            return self.flip_bits(data)
        other = _pick(self.rng, self.corpus)
        a, b = sections(data), sections(other)
        if a is None or b is None or not a.substreams or not b.substreams:
            return (
                data[: int(self.rng.integers(len(data) + 1))]
                + other[int(self.rng.integers(len(other) + 1)) :]
            )
        if a.substreams[-1][1] > len(data) or b.substreams[-1][1] > len(other):
            return data
        out = bytearray(data[: a.weights[1]])
        body = b""
        for g, f in enumerate(a.length_fields[1:]):
            start, end = b.substreams[g % len(b.substreams)]
            write_field(out, f, end - start)
            body += other[start:end]
        return bytes(out) + body

    # -- model level ---------------------------------------------------------

    def model_of(self, data: bytes) -> Model | None:
        if data not in self._models:
            if len(self._models) > 4096:
                self._models.clear()
            self._models[data] = Model.parse(data)
        return self._models[data]

    def model_mutation(self, data: bytes) -> bytes:
        model = self.model_of(data)
        if model is None:
            model = self.model_of(_pick(self.rng, self.corpus)) if self.corpus else None
        if model is None:
            return self.field_boundary(data)
        m = model.copy()
        for _ in range(int(self.rng.integers(1, 3))):
            op = _pick(self.rng, MODEL_OPS)
            op(self, m)
        return m.to_bytes()

    def _fresh_weights(self, n: int) -> list[int]:
        if self.rng.random() < 0.5:
            return [int(v) for v in self.rng.integers(-40, 41, size=n)]
        return [_random_weight(self.rng) for _ in range(n)]

    def _rebuild(self, m: Model, what: str, start: int) -> None:
        """Regenerate the weights of layers start.. of `what` after a shape change."""
        layers, weights = (m.arm, m.arm_w) if what == "arm" else (m.syn, m.syn_w)
        c_in = m.dim_arm() if what == "arm" else len(m.grids)
        for index, layer in enumerate(layers):
            k = 1 if what == "arm" else layer[1]
            n = layer[0] * c_in * k * k
            if index >= start or index >= len(weights) or len(weights[index][0]) != n:
                pair = (self._fresh_weights(n), self._fresh_weights(layer[0]))
                if index < len(weights):
                    weights[index] = pair
                else:
                    weights.append(pair)
            c_in = layer[0]
        del weights[len(layers) :]

    def op_weights_extreme(self, m: Model) -> None:
        pools = [w for pair in m.arm_w + m.syn_w for w in pair] + [m.taps]
        pool = _pick(self.rng, pools)
        if self.rng.random() < 0.3:
            value = int(_pick(self.rng, (-32768, 32767)))
            pool[:] = [value] * len(pool)
        else:
            for _ in range(int(self.rng.integers(1, 1 + len(pool)))):
                pool[int(self.rng.integers(len(pool)))] = _random_weight(self.rng)

    def op_shifts(self, m: Model) -> None:
        name, low, high = _pick(self.rng, QUANT_FIELDS)
        m.scalars[name] = int(_pick(self.rng, (low, high, int(self.rng.integers(low, high + 1)))))
        if self.rng.random() < 0.7:  # keep b_shift <= frac + w_shift (spec 3.4)
            s = m.scalars
            s["arm_b_shift"] = min(s["arm_b_shift"], 8 + s["arm_w_shift"])
            s["syn_b_shift"] = min(s["syn_b_shift"], 12 + s["syn_w_shift"])

    def op_layer(self, m: Model) -> None:
        """Change, add or remove a layer; mostly within the rules of spec 3.3."""
        what = "arm" if self.rng.random() < 0.5 else "syn"
        layers = m.arm if what == "arm" else m.syn
        index = int(self.rng.integers(len(layers)))
        action = int(self.rng.integers(4))
        width = int(_pick(self.rng, (1, 2, 2, 3, 3, 4, 8, 16, int(self.rng.integers(1, 65)))))
        new = [width, 0, int(self.rng.integers(3))] if what == "arm" else [width, 1, 0, 0]
        if what == "syn":
            new[1] = int(_pick(self.rng, (1, 3, 5, 7)))
            new[3] = int(self.rng.integers(3))
        if action == 0 and len(layers) < (5 if what == "arm" else 8):
            layers.insert(index, new)
        elif action == 1 and len(layers) > 1:
            del layers[index]
        elif action == 2:
            layers[index][-1] = int(self.rng.integers(3))  # activation
            if what == "syn":
                layers[index][1] = int(_pick(self.rng, (1, 3, 5, 7)))
        else:
            layers[index][0] = width
        if self.rng.random() < 0.8:
            layers[-1][0] = 2 if what == "arm" else m.n_channels()
        # A residual layer is valid only with out == in; clear the others mostly.
        c_in = m.dim_arm() if what == "arm" else len(m.grids)
        for layer in layers:
            type_at = 1 if what == "arm" else 2
            if layer[0] == c_in and self.rng.random() < 0.2:
                layer[type_at] = 1
            elif layer[0] != c_in and self.rng.random() < 0.9:
                layer[type_at] = 0
            c_in = layer[0]
        self._rebuild(m, what, index)

    def op_geometry(self, m: Model) -> None:
        """New picture size; usually with empty substreams, so the stream stays valid."""
        s = m.scalars
        for name in ("width", "height"):
            if self.rng.random() < 0.6:
                s[name] = int(
                    _pick(self.rng, (1, 2, 3, 5, 16, 17, 33, int(self.rng.integers(1, 65))))
                )
        if self.rng.random() < 0.7:
            m.substreams = [b""] * len(m.grids)

    def op_grids(self, m: Model) -> None:
        """Add or drop a latent grid (first synthesis layer follows), or change an alphabet."""
        action = int(self.rng.integers(3))
        if action == 0 and len(m.grids) < 7:
            lo = int(_pick(self.rng, (-32768, -5, 0, 3)))
            hi = int(_pick(self.rng, (lo, lo + 1, lo + 9, 32767)))
            m.grids.append([lo, max(lo, hi)])
            m.substreams.append(b"")
            self._rebuild(m, "syn", 0)
        elif action == 1 and len(m.grids) > 1:
            m.grids.pop()
            m.substreams.pop()
            self._rebuild(m, "syn", 0)
        else:
            g = int(self.rng.integers(len(m.grids)))
            lo = int(_pick(self.rng, (-32768, -1000, -3, 0, m.grids[g][0])))
            hi = int(_pick(self.rng, (32767, lo, lo + 1, 1000, m.grids[g][1])))
            m.grids[g] = [lo, max(lo, hi)] if self.rng.random() < 0.9 else [lo, hi]
            if self.rng.random() < 0.6 or m.grids[g][0] == m.grids[g][1]:
                m.substreams[g] = b""

    def op_substream(self, m: Model) -> None:
        """Empty, random or boundary-valued substream of the right length type."""
        g = int(self.rng.integers(len(m.grids)))
        action = int(self.rng.integers(3))
        if action == 0:
            m.substreams[g] = b""
        elif action == 1:
            m.substreams[g] = self.rng.bytes(4 * int(self.rng.integers(1, 9)))
        else:
            word = _pick(self.rng, (b"\x00\x00\x00\x01", b"\xff\xff\xff\xff", b"\x01\x00\x00\x00"))
            m.substreams[g] = word * int(self.rng.integers(1, 5))

    def op_format(self, m: Model) -> None:
        """Colour format, bit depth, context radius or tap count (weights follow)."""
        s = m.scalars
        action = int(self.rng.integers(4))
        if action == 0:
            s["color_format"] = int(self.rng.integers(4))
            m.syn[-1][0] = m.n_channels()
            if m.syn[-1][2] == 1:
                m.syn[-1][2] = 0
            self._rebuild(m, "syn", len(m.syn) - 1)
        elif action == 1:
            s["bit_depth"] = int(_pick(self.rng, (8, 9, 10, 12, 15, 16)))
        elif action == 2:
            s["n_ctx_rowcol"] = int(self.rng.integers(1, 4))
            if m.arm[0][1] == 1:
                m.arm[0][1] = 0
            self._rebuild(m, "arm", 0)
            m.substreams = [b"" if self.rng.random() < 0.5 else sub for sub in m.substreams]
        else:
            m.taps = self._fresh_weights(int(self.rng.integers(1, 9)))

    def op_egk(self, m: Model) -> None:
        """Re-encode with other exp-Golomb orders (the stream stays valid)."""
        for name in ("arm_w_egk", "arm_b_egk", "ups_egk", "syn_w_egk", "syn_b_egk"):
            if self.rng.random() < 0.5:
                m.scalars[name] = int(_pick(self.rng, (0, 1, 16, int(self.rng.integers(17)))))

    # -- driver --------------------------------------------------------------

    def mutate(self, data: bytes, max_ops: int = 3) -> tuple[bytes, list[str]]:
        names = []
        for _ in range(int(self.rng.integers(1, max_ops + 1))):
            index = int(self.rng.choice(len(self.byte_ops), p=self._op_p))
            name, op, _ = self.byte_ops[index]
            data = op(data)[:MAX_INPUT]
            names.append(name)
        return data, names


MODEL_OPS = (
    Mutator.op_weights_extreme,
    Mutator.op_weights_extreme,
    Mutator.op_shifts,
    Mutator.op_layer,
    Mutator.op_layer,
    Mutator.op_geometry,
    Mutator.op_grids,
    Mutator.op_substream,
    Mutator.op_format,
    Mutator.op_egk,
)


# ---------------------------------------------------------------------------
# The rejection rules 1-6 and 7a of spec section 9, written again from the spec
# (not from coolchic_ref.syntax / weights): the oracle compares the decoder's
# decision with this one.


class _Invalid(Exception):
    def __init__(self, rule: int, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule


def spec_verdict(data: bytes) -> tuple[int, str] | None:
    """(rule, reason) of the first rule of spec 9 among 1-6 and 7a ("first word zero")
    that `data` breaks, or None if it breaks none of them (it may still break rule 7's
    end condition, which only an entropy decoder can tell)."""
    try:
        _spec_check(data)
    except _Invalid as e:
        return e.rule, str(e)
    return None


def _spec_check(data: bytes) -> None:
    if len(data) < 5 or data[:4] != b"CCRF":
        raise _Invalid(1, "magic")
    if data[4] != 1:
        raise _Invalid(2, "version")
    pos = 5

    def take(fmt: str) -> int:
        nonlocal pos
        if pos + struct.calcsize(fmt) > len(data):
            raise _Invalid(3, "truncated header")
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def need(ok: bool, reason: str) -> None:
        if not ok:
            raise _Invalid(4, reason)

    color_format, bit_depth, width, height = take("<B"), take("<B"), take("<H"), take("<H")
    n_grids, r, taps, n_arm, n_syn = (take("<B") for _ in range(5))
    need(color_format <= 3 and 8 <= bit_depth <= 16, "format")
    need(1 <= width <= 16384 and 1 <= height <= 16384 and width * height <= 1 << 24, "size")
    need(1 <= n_grids <= 7 and 1 <= r <= 3 and 1 <= taps <= 8, "counts")
    need(1 <= n_arm <= 5 and 1 <= n_syn <= 8, "layer counts")
    n_params = taps
    macs = []
    for count, c_in, kernels in ((n_arm, 2 * r * (r + 1), (1,)), (n_syn, n_grids, (1, 3, 5, 7))):
        mac = 0
        for _ in range(count):
            out = take("<B")
            kernel = take("<B") if len(kernels) > 1 else 1
            kind, act = take("<B"), take("<B")
            need(1 <= out <= 64 and kernel in kernels and kind <= 1 and act <= 2, "layer")
            need(kind == 0 or out == c_in, "residual")
            mac += kernel * kernel * c_in * out
            n_params += kernel * kernel * c_in * out + out
            c_in = out
        need(c_in == (2 if len(kernels) == 1 else 1 if color_format == 0 else 3), "last layer")
        macs.append(mac)
    need(macs[0] <= 8192 and macs[1] <= 16384, "MAC")
    q = [take("<B") for _ in range(10)]
    arm_w, arm_b, arm_wk, arm_bk, ups_shift, ups_k, syn_w, syn_b, syn_wk, syn_bk = q
    need(arm_w <= 16 and arm_b <= 24 and arm_b <= 8 + arm_w, "ARM shifts")
    need(syn_w <= 16 and syn_b <= 28 and syn_b <= 12 + syn_w and ups_shift <= 16, "shifts")
    need(max(arm_wk, arm_bk, ups_k, syn_wk, syn_bk) <= 16, "exp-Golomb orders")
    weights_bytes = take("<I")
    need(1 <= weights_bytes <= 1 << 24, "weights_bytes")
    grids = []
    for _ in range(n_grids):
        lo, hi, size = take("<h"), take("<h"), take("<I")
        need(lo <= hi and size % 4 == 0 and (lo < hi or size == 0), "grid")
        grids.append(size)
    total = pos + weights_bytes + sum(grids)
    if len(data) != total:
        raise _Invalid(5, "length")
    # Rule 6: spec 4.2 / 4.3 read bit by bit (a string of '0'/'1' for speed).
    section = data[pos : pos + weights_bytes]
    limit = min(len(section), (35 * n_params + 7) // 8)  # longer sections cannot be used up
    bits = bin(int.from_bytes(section[:limit], "big") | (1 << (8 * limit)))[3:]
    at = 0
    layer_pos = 16
    shapes: list[tuple[int, int]] = []  # (number of values, k)
    c_in = 2 * r * (r + 1)
    for _ in range(n_arm):
        out = data[layer_pos]
        shapes += [(c_in * out, arm_wk), (out, arm_bk)]
        c_in, layer_pos = out, layer_pos + 3
    shapes.append((taps, ups_k))
    c_in = n_grids
    for _ in range(n_syn):
        out, kernel = data[layer_pos], data[layer_pos + 1]
        shapes += [(kernel * kernel * c_in * out, syn_wk), (out, syn_bk)]
        c_in, layer_pos = out, layer_pos + 4
    for count, k in shapes:
        for _ in range(count):
            # z zeros then a 1; the (18 - k)-th zero rejects (spec 4.2).
            one = bits.find("1", at, at + 18 - k)
            if one < 0:
                raise _Invalid(6, "weight code too long or section truncated")
            z = one - at
            at = one + 1
            if at + z + k > len(bits):
                raise _Invalid(6, "weights section truncated")
            x = (1 << (z + k)) | (int(bits[at : at + z + k], 2) if z + k else 0)
            at += z + k
            u = x - (1 << k)
            v = (u + 1) // 2 if u & 1 else -(u // 2)
            if not -32768 <= v <= 32767:
                raise _Invalid(6, "weight out of range")
    if (at + 7) // 8 != weights_bytes or bits[at : 8 * ((at + 7) // 8)].strip("0"):
        raise _Invalid(6, "weights section size mismatch")
    # Rule 7a: a non-empty substream must not start with a zero word.
    start = pos + weights_bytes
    for size in grids:
        if size and data[start : start + 4] == b"\x00\x00\x00\x00":
            raise _Invalid(7, "invalid substream start")
        start += size


SUBSTREAM_MESSAGES = ("invalid substream start", "substream size mismatch")


# ---------------------------------------------------------------------------
# Bounds (spec section 9) and the oracle

# Memory: the reference decoder holds at most PLANES int32 planes of H x (W + 6)
# (spec 9): two synthesis stages of at most C_max channels, the dense latent
# and its padded copy (2 N), and 16 planes for latents, upsampling and sample
# conversion; plus copies of the stream and a constant.
#
# The constant (spec 9.3) is what no input is responsible for, derived from
# measurements of 2026-11-22 (tools/fuzz-log.md):
# - thread stacks: a decode runs the grid decoder on at most min(threads, N) <= 7
#   Python threads, each mapping an 8 MiB stack (glibc's default, RLIMIT_STACK):
#   at most 56 MiB of address space (less when glibc reuses cached stacks of
#   finished threads). Measured in process after the warm-up, 3000 mutated
#   inputs: a slack of 0 passes with 1 thread; with 2 threads 4 MiB passes and 0
#   does not (a thread that cannot start leaves Thread.start() waiting forever).
# - small arrays and Python objects: at most 10 MiB (peak RSS of the CLI over
#   its peak on the 1x1 seed, less the picture terms, on the conformance
#   streams, the seeds and the regression streams: 3.6 MiB writing .raw, as the
#   CLI check does; 9.4 MiB writing PNG).
# Together at most 66 MiB: 128 MiB leaves a factor of 2. This was 256 MiB from
# b07a1e9 to here, raised after the 1-hour run's 17 "CLI peak RSS" findings; those
# were measurement artefacts (see cli_baseline_rss), not allocations, and the
# address space of glibc's malloc arenas that the 256 MiB covered is now kept out
# of the in-process limit (`_single_malloc_arena`).
FIXED_MEMORY = 128 << 20
STREAM_COPIES = 16  # bytes per stream byte: copies, word arrays, the weights bit string


def planes_bound(c_max: int, n_grids: int) -> int:
    """Number of W x H int32 planes the decoder may hold at once (spec 9)."""
    return 2 * max(c_max, n_grids) + 2 * n_grids + 16


def memory_bound(header, stream_bytes: int) -> int:
    """Bytes a decode of this (header-valid) stream may allocate beyond its start (spec 9)."""
    c_max = max(layer.out_channels for layer in header.syn_layers)
    planes = planes_bound(c_max, header.n_grids)
    return (
        4 * header.height * (header.width + 6) * planes
        + STREAM_COPIES * stream_bytes
        + FIXED_MEMORY
    )


def declared_work(header) -> int:
    """Work units the header declares (spec 9): MAC of the ARM, upsampling and synthesis,
    entropy decoding (log2 K per latent), sample conversion, weights and bytes."""
    from coolchic_ref.info import parameter_counts, upsampled_samples

    pixels = header.width * header.height
    coded = [g for g in header.grids if not g.is_constant]
    latents = sum(g.height * g.width for g in coded)
    entropy = sum(g.height * g.width * g.alphabet_size.bit_length() for g in coded)
    return (
        header.mac_arm * latents
        + 64 * entropy
        + header.ups_half_taps * upsampled_samples(header)
        + header.mac_syn * pixels
        + 64 * pixels * header.n_channels
        + 256 * parameter_counts(header)["total"]
        + header.total_bytes
    )


# Time bound: FIXED seconds + work / RATE. The jitted decoder does about 1e10 work
# units per second on one core of the project's machines; RATE leaves 100x of slack
# for a loaded machine. Without JIT the kernels are Python (about 1e5 units/s).
TIME_FIXED = {True: 1.0, False: 30.0}
TIME_RATE = {True: 1e8, False: 2e4}


def time_bound(header, jit: bool = True) -> float:
    """Seconds a decode of this header-valid stream may take (spec 9: linear in the work)."""
    return TIME_FIXED[jit] + declared_work(header) / TIME_RATE[jit]


_NUMBER = re.compile(r"-?\d+")


def outcome_key(kind: str, detail: str) -> str:
    """Outcome class: numbers replaced by N, so messages differing only in values merge."""
    return f"{kind}:{_NUMBER.sub('N', detail)}" if detail else kind


@dataclass
class Result:
    """The oracle's verdict on one input."""

    key: str  # outcome class: "ok", "reject:<message>", "skip:..." or "finding:..."
    finding: str | None = None  # kind of problem, None when the outcome is allowed
    detail: str = ""
    seconds: float = 0.0
    raw_sha256: str | None = None  # of the canonical raw samples, when decoded


class SharedSlot:
    """The input being decoded and its deadline, in a file mapping the supervisor reads.

    Layout: u64 executions, f64 start (time.monotonic), f64 deadline, u32 length,
    u32 busy, then the input bytes.
    """

    HEAD = struct.Struct("<QddII")

    def __init__(self, path: str | os.PathLike, create: bool = False) -> None:
        size = self.HEAD.size + MAX_INPUT
        if create:
            with open(path, "wb") as f:
                f.truncate(size)
        self._file = open(path, "r+b")  # noqa: SIM115 - kept open for the mapping
        self.map = mmap.mmap(self._file.fileno(), size)

    def begin(self, count: int, data: bytes, deadline_s: float) -> None:
        now = time.monotonic()
        self.map[self.HEAD.size : self.HEAD.size + len(data)] = data
        self.HEAD.pack_into(self.map, 0, count, now, now + deadline_s, len(data), 1)

    def end(self, count: int) -> None:
        self.HEAD.pack_into(self.map, 0, count, 0.0, 0.0, 0, 0)

    def read(self) -> tuple[int, float, float, bytes | None]:
        count, start, deadline, length, busy = self.HEAD.unpack_from(self.map, 0)
        data = bytes(self.map[self.HEAD.size : self.HEAD.size + length]) if busy else None
        return count, start, deadline, data


def _single_malloc_arena() -> None:
    """Stop glibc from creating malloc arenas (mallopt M_ARENA_MAX = 1), if it is glibc.

    RLIMIT_AS counts address space, and glibc reserves 64 MiB of it (128 MiB while
    it aligns the mapping) for each new per-thread arena, touching only what it
    hands out: reserved, not allocated, so outside the bound of spec 9.3. Measured:
    the first 2-thread decodes of the seeds grow the address space by 146 MiB
    without this, 18 MiB with it (two 8 MiB thread stacks). Threads then share the
    arenas that already exist; what the decoder allocates is unchanged. The CLI
    check, on a process with the default allocator, measures resident memory,
    where untouched reservations do not show.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(-8, 1)  # M_ARENA_MAX (malloc.h)


class Oracle:
    """Decodes inputs and judges each outcome against spec section 9."""

    def __init__(
        self,
        *,
        jit: bool = True,
        max_pixels: int = 1 << 20,
        limit_memory: bool = True,
        check_decision: bool = True,
        slot: SharedSlot | None = None,
        hang_seconds: float = 10.0,
    ) -> None:
        from coolchic_ref import StreamError, decode
        from coolchic_ref.syntax import parse_header

        self.decode = decode
        self.parse_header = parse_header
        self.StreamError = StreamError
        self.jit = jit
        self.max_pixels = max_pixels
        self.limit_memory = limit_memory and sys.platform.startswith("linux")
        self.slot = slot
        self.check_decision = check_decision
        self.hang_seconds = hang_seconds
        self.count = 0
        self._statm = os.open("/proc/self/statm", os.O_RDONLY) if self.limit_memory else None
        self._page = os.sysconf("SC_PAGE_SIZE") if self.limit_memory else 0
        self._warm = False
        if self.limit_memory:
            _single_malloc_arena()

    def warm_up(self, streams: list[bytes]) -> None:
        """Import and compile (or load) the kernels by decoding `streams`, without limits.

        The memory limit applies only after this: loading Numba and LLVM maps
        hundreds of MiB that no input is responsible for.
        """
        for data in streams[:50]:
            with contextlib.suppress(self.StreamError):
                self.decode(data)
        self._warm = True

    def _virtual_size(self) -> int:
        return int(os.pread(self._statm, 128, 0).split()[0]) * self._page

    @contextlib.contextmanager
    def _memory_limit(self, limit: int) -> Iterator[None]:
        if not self.limit_memory or not self._warm:
            yield
            return
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (self._virtual_size() + limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

    def bounds(self, data: bytes) -> tuple[object | None, float, int]:
        """(header or None, time bound, memory bound) of an input."""
        try:
            header = self.parse_header(data)
        except self.StreamError:
            return None, TIME_FIXED[self.jit], FIXED_MEMORY + STREAM_COPIES * len(data)
        except Exception:  # reported by run()
            return None, TIME_FIXED[self.jit], FIXED_MEMORY + STREAM_COPIES * len(data)
        return header, time_bound(header, self.jit), memory_bound(header, len(data))

    def run(self, data: bytes) -> Result:
        """Decode `data` and judge the outcome."""
        header, t_bound, m_bound = self.bounds(data)
        if header is not None and header.width * header.height > self.max_pixels:
            return Result("skip:large-picture")
        self.count += 1
        if self.slot is not None:
            # The supervisor kills the worker at 3x the bound (plus hang_seconds): a hang.
            self.slot.begin(self.count, data, 3 * t_bound + self.hang_seconds)
        start = time.perf_counter()
        image = error = None
        try:
            with self._memory_limit(m_bound):
                if SELFTEST and self.count == 50:
                    _selftest_failure()
                image = self.decode(data)
        except self.StreamError as e:
            error = e
        except MemoryError as e:
            return self._finish(
                Result(outcome_key("finding:memory", type(e).__name__), "memory", _trace()), start
            )
        except BaseException as e:  # noqa: BLE001 - every other exception is a finding
            if isinstance(e, KeyboardInterrupt):
                raise
            kind = "memory" if "MemoryError" in repr(e) else "exception"
            key = outcome_key(f"finding:{kind}", type(e).__name__)
            return self._finish(Result(key, kind, _trace()), start)
        result = self._judge(header, image, error)
        self._finish(result, start)
        if result.finding is None and self.check_decision:
            result = self._check_decision(data, result, error)
        if result.finding is None and result.seconds > t_bound:
            result = Result(
                outcome_key("finding:slow", ""),
                "slow",
                f"{result.seconds:.3f} s > bound {t_bound:.3f} s ({result.key})",
                result.seconds,
            )
        return result

    def _check_decision(self, data: bytes, result: Result, error) -> Result:
        """Compare the decoder's decision with `spec_verdict` (rules 1-6 and 7a)."""
        verdict = spec_verdict(data)
        if result.key == "ok":
            if verdict is not None:
                return Result("finding:accepted-invalid", "accepted-invalid", f"rule {verdict}")
            return result
        substream_rule = any(m in result.detail for m in SUBSTREAM_MESSAGES)
        if verdict is None and not substream_rule:
            return Result(
                outcome_key("finding:rejected-valid", result.detail),
                "rejected-valid",
                f"decoder: {result.detail}; spec rules 1-6 and 7a hold",
            )
        if verdict is not None and verdict[0] < 7 and substream_rule:
            return Result(
                outcome_key("finding:wrong-rule", result.detail),
                "wrong-rule",
                f"decoder: {result.detail}; but rule {verdict} comes first",
            )
        return result

    def _finish(self, result: Result, start: float) -> Result:
        result.seconds = time.perf_counter() - start
        if self.slot is not None:
            self.slot.end(self.count)
        return result

    def _judge(self, header, image, error) -> Result:
        if error is not None:
            message = error.args[0] if error.args else ""
            if (
                not isinstance(message, str)
                or not message
                or "\n" in message
                or "\r" in message
                or len(message) > 300
            ):
                return Result("finding:message", "message", repr(message))
            return Result(outcome_key("reject", message), detail=message)
        problem = _image_problem(header, image)
        if problem:
            return Result("finding:bad-image", "bad-image", problem)
        return Result("ok", raw_sha256=image.sha256())


# Supervisor self-test (tests/test_fuzz.py): the 50th decode of a worker segfaults
# ("crash") or never returns ("hang").
SELFTEST = os.environ.get("COOLCHIC_FUZZ_SELFTEST", "")


def _selftest_failure() -> None:
    if SELFTEST == "crash":
        import ctypes

        ctypes.string_at(0)
    while SELFTEST == "hang":
        time.sleep(1)


def _trace() -> str:
    return "".join(traceback.format_exc(limit=20))[-4000:]


def _image_problem(header, image) -> str:
    """Why a decoded image does not match its header (spec 8.3), or ''."""
    if header is None:
        return "decoded a stream whose header does not parse"
    h, w = header.height, header.width
    shapes = [(h, w)] * header.n_channels
    if header.color_format == 3:
        shapes[1:] = [((h + 1) // 2, (w + 1) // 2)] * 2
    dtype = np.uint8 if header.bit_depth == 8 else np.uint16
    got = [(p.shape, p.dtype) for p in image.planes]
    if got != [(s, np.dtype(dtype)) for s in shapes]:
        return f"planes {got}, expected shapes {shapes} of {np.dtype(dtype)}"
    top = (1 << header.bit_depth) - 1
    if any(int(p.max(initial=0)) > top for p in image.planes):
        return f"sample above {top}"
    return ""


# ---------------------------------------------------------------------------
# Seeds


def load_corpus(directory: Path | None, limit: int = 5000) -> list[bytes]:
    """Streams (*.cool and extension-less files) of a directory, smallest first."""
    if directory is None or not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix in (".cool", "")]
    files.sort(key=lambda p: (p.stat().st_size, p.name))
    return [p.read_bytes()[:MAX_INPUT] for p in files[:limit]]


A1 = "2-1-linear-none"
A2 = "4-1-linear-relu,2-1-linear-none"
SEED_SPECS: list[dict] = [
    # Small pictures and small networks (at most a few hundred parameters, whose
    # reading is Python): a decode takes about a millisecond.
    dict(width=1, height=1, n_grids=1, arm=A1, syn="1-1-linear-none", color_format=0),
    dict(width=1, height=7, n_grids=2, arm=A1, syn="3-3-linear-none", color_format=1),
    dict(width=7, height=1, n_grids=3, arm=A2, syn="3-5-linear-none", color_format=2),
    dict(width=2, height=2, n_grids=2, arm=A1, syn="3-1-linear-none", color_format=3, bit_depth=10),
    dict(
        width=3,
        height=5,
        n_grids=1,
        n_ctx_rowcol=3,
        arm=A1,
        syn="1-3-linear-none",
        color_format=0,
        bit_depth=16,
    ),
    dict(
        width=8, height=8, n_grids=3, n_ctx_rowcol=1, arm=A2, syn="3-3-linear-none", color_format=1
    ),
    dict(
        width=13,
        height=9,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A2,
        syn="4-3-linear-leakyrelu,3-1-linear-none",
        color_format=3,
    ),
    dict(
        width=24,
        height=16,
        n_grids=3,
        n_ctx_rowcol=2,
        arm=A1,
        syn="4-1-linear-relu,3-3-linear-none",
        color_format=1,
    ),
    dict(
        width=24,
        height=16,
        n_grids=3,
        n_ctx_rowcol=1,
        arm="3-1-linear-leakyrelu,2-1-linear-none",
        syn="3-3-linear-none",
        color_format=3,
        bit_depth=12,
    ),
    dict(
        width=17,
        height=3,
        n_grids=2,
        n_ctx_rowcol=2,
        arm=A1,
        syn="1-1-linear-none",
        color_format=0,
        ups_taps=8,
    ),
    dict(
        width=16, height=8, n_grids=7, n_ctx_rowcol=1, arm=A1, syn="3-1-linear-none", color_format=1
    ),
    dict(
        width=5,
        height=6,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A2,
        syn="3-3-linear-none",
        color_format=1,
        extreme=True,
    ),
    dict(
        width=9,
        height=4,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A1,
        syn="2-1-linear-relu,1-3-linear-none",
        color_format=0,
        extreme=True,
        extreme_latents=False,
    ),
    dict(
        width=4,
        height=4,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A1,
        syn="3-3-linear-none",
        color_format=2,
        extreme=True,
    ),
    dict(
        width=11,
        height=7,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A1,
        syn="3-1-linear-none",
        color_format=1,
        constant_grids=(1,),
    ),
    dict(
        width=6,
        height=5,
        n_grids=2,
        n_ctx_rowcol=1,
        arm=A1,
        syn="1-3-linear-none",
        color_format=0,
        latent_range=300,
    ),
    dict(
        width=12,
        height=12,
        n_grids=2,
        color_format=1,
        n_ctx_rowcol=1,
        arm="4-1-residual-relu,3-1-linear-leakyrelu,2-1-linear-none",
        syn="3-3-linear-relu,3-3-residual-leakyrelu,3-1-residual-relu,3-7-linear-none",
    ),
    dict(
        width=10,
        height=10,
        n_grids=3,
        n_ctx_rowcol=1,
        arm=A2,
        syn="3-3-linear-none",
        color_format=1,
        weight_range=32767,
    ),
    dict(
        width=3,
        height=3,
        n_grids=1,
        color_format=0,
        n_ctx_rowcol=3,
        arm="24-1-residual-leakyrelu,2-1-linear-none",
        syn="1-7-linear-none",
    ),
    dict(
        width=20,
        height=2,
        n_grids=3,
        color_format=3,
        bit_depth=9,
        n_ctx_rowcol=1,
        arm=A1,
        syn="2-5-linear-relu,3-1-linear-none",
    ),
]


def make_seeds(directory: Path, seed: int = 20240) -> list[Path]:
    """Write the seed streams of SEED_SPECS (needs the encoder's stream writer)."""
    from coolchic_ref.encoder.bitstream import write_stream
    from coolchic_ref.encoder.random_codec import random_codec

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index, spec in enumerate(SEED_SPECS):
        data = write_stream(random_codec(rng, **spec))
        path = directory / f"seed{index:02d}-{spec['width']}x{spec['height']}.cool"
        path.write_bytes(data)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------
# Findings


def save_finding(crashes: Path, data: bytes, kind: str, info: dict) -> Path | None:
    """Write `data` and a JSON description under `crashes` (once per input)."""
    crashes.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = crashes / f"{kind}-{digest}.cool"
    if path.exists():
        return None
    path.write_bytes(data)
    path.with_suffix(".json").write_text(json.dumps({"kind": kind, **info}, indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------
# CLI sample check (subprocess): exit code, one line, files, peak memory


# Runs `coolchic-ref` exactly as its console script does (cli.main) and writes the
# process's resident high-water mark (VmHWM, KiB) to a file at exit. A child's
# ru_maxrss (os.wait4) is no use here: Linux folds the parent's resident size at
# fork time into it, and the fuzz worker is large.
_CLI_WRAPPER = """
import atexit, sys
hwm_path = sys.argv.pop(1)
def report():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(hwm_path, 'w').write(line.split()[1])
atexit.register(report)
sys.argv[0] = 'coolchic-ref'
from coolchic_ref.cli import main
main(prog_name='coolchic-ref')
"""


def run_cli(args: list[str], cwd: Path, timeout: float) -> tuple[int | None, bytes, bytes, int]:
    """Run `coolchic-ref ARGS` in a subprocess with the default thread count.

    Returns (exit status or None on timeout, stdout, stderr, peak RSS in bytes,
    -1 if unknown, e.g. after a signal).
    """
    drop = ("NUMBA_NUM_THREADS", "NUMBA_DISABLE_JIT", "COOLCHIC_FUZZ_SELFTEST")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    with tempfile.TemporaryDirectory(prefix="fuzz-hwm-") as tmp:
        hwm = Path(tmp) / "hwm"
        cmd = [sys.executable, "-c", _CLI_WRAPPER, str(hwm), *args]
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, capture_output=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return None, b"", b"", -1
        peak = 1024 * int(hwm.read_text()) if hwm.exists() else -1
        return proc.returncode, proc.stdout, proc.stderr, peak


def run_cli_check(data: bytes, expected: Result, oracle: Oracle, baseline_rss: int) -> str:
    """Decode `data` with the CLI in a subprocess; '' if all is well, else the problem.

    Checks: exit 0 with the in-process raw samples, or 2 with one line on stderr;
    the output exists only on success and nothing else appears in the directory;
    peak RSS (VmHWM) of the CLI at most `baseline_rss` + the memory bound.
    """
    _, t_bound, m_bound = oracle.bounds(data)
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as tmp:
        folder = Path(tmp)
        stream = folder / "in.cool"
        stream.write_bytes(data)
        out = folder / "out.raw"
        args = ["decode", str(stream), "-o", str(out), "--quiet"]
        code, stdout, stderr, rss = run_cli(args, folder, 60 + 3 * t_bound)
        if code is None:
            return "CLI timed out"
        files = sorted(p.name for p in folder.iterdir())
        text = stderr.decode(errors="replace")
        if expected.key == "ok":
            if code != 0:
                return f"CLI exit {code} on a valid stream: {text.strip()[:200]}"
            if hashlib.sha256(out.read_bytes()).hexdigest() != expected.raw_sha256:
                return "CLI raw samples differ from the in-process decode (threads?)"
            if files != ["in.cool", "out.raw"]:
                return f"unexpected files {files}"
        elif expected.key.startswith("reject"):
            lines = text.strip().splitlines()
            if code != 2:
                return f"CLI exit {code} on an invalid stream: {text.strip()[:200]}"
            if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in text:
                return f"CLI stderr is not one error line: {text[:300]!r}"
            if files != ["in.cool"]:
                return f"unexpected files after a rejection: {files}"
        if stdout:
            return f"CLI printed on stdout with --quiet: {stdout[:100]!r}"
        if rss > baseline_rss + m_bound:
            return (
                f"CLI peak RSS {rss >> 20} MiB > baseline {baseline_rss >> 20} MiB "
                f"+ bound {m_bound >> 20} MiB"
            )
    return ""


# The stream of `cli_baseline_rss`: the smallest valid picture (1x1, one grid).
BASELINE_SEED = DEFAULT_SEEDS / "seed00-1x1.cool"


def cli_baseline_rss() -> int:
    """Peak RSS (bytes) of the CLI decoding the 1x1 seed to .raw, as the CLI check does.

    The CLI check compares an input's peak with this plus the bound of spec 9.3,
    so the baseline must be a process that has done everything no input is
    responsible for: started Python, imported Numba (decode() imports it on its
    first call, after the header checks), loaded the kernels, started the
    threads, written a .raw file. Two earlier baselines were wrong:
    - os.wait4's ru_maxrss of the child: Linux folds the parent's resident
      high-water mark into it at exec (vfork/fork + exec), so every check
      reported the fuzz worker's own peak (the 17 findings of the 1-hour run,
      tools/fuzz-log.md: all "337 MiB", the worker's VmHWM, against "207 MiB",
      its VmHWM at the first check; the CLI's own peaks were 35 to 169 MiB);
    - the CLI's VmHWM on the first input sampled: if that input fails rules 1-5
      the CLI never imports Numba (35 MiB), and every valid input after it
      (165 to 169 MiB) was 130 MiB over the baseline.
    """
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as tmp:
        args = ["decode", str(BASELINE_SEED), "-o", str(Path(tmp) / "o.raw"), "-q"]
        code, _, stderr, peak = run_cli(args, Path(tmp), 120)
        if code != 0 or peak <= 0:
            raise RuntimeError(f"CLI baseline decode failed ({code}): {stderr[-300:]!r}")
        return peak


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def _measure_main(path: str) -> None:
    """Child side of `measure_decode`: warm up, reset the RSS high-water mark, decode."""
    from coolchic_ref import StreamError, decode

    seeds = load_corpus(DEFAULT_SEEDS)[:1]
    for seed in seeds:
        decode(seed)
    data = Path(path).read_bytes()
    exact = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
        before = _status_kib("VmRSS")
    except OSError:
        exact = False
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        decode(data)
        key = "ok"
    except StreamError as error:
        key = outcome_key("reject", str(error))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth = 1024 * (peak - before)
    print(json.dumps({"key": key, "seconds": seconds, "growth": growth, "exact": exact}))


def measure_decode(path: Path, timeout: float = 600) -> dict:
    """Decode `path` in a fresh process; its key, seconds and peak RSS growth (bytes).

    The growth is the resident high-water mark during the decode minus the
    resident size just before it (the mark is reset through
    /proc/self/clear_refs), so imports and kernel loading do not count.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "_measure", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# The worker: mutation loop (or atheris) with the oracle


@dataclass
class Stats:
    execs: int = 0
    decodes: int = 0  # oracle runs, confirmations of slow inputs included
    skipped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: int = 0
    cli_checks: int = 0

    def to_json(self, corpus: int) -> str:
        return json.dumps(
            {
                "execs": self.execs,
                "decodes": self.decodes,
                "skipped": self.skipped,
                "findings": self.findings,
                "cli_checks": self.cli_checks,
                "corpus": corpus,
                "outcomes": dict(self.outcomes),
            }
        )


class Campaign:
    """Shared by the mutate loop and the atheris callback: run, record, report."""

    def __init__(self, args: argparse.Namespace, slot: SharedSlot | None) -> None:
        self.args = args
        self.jit = not args.nojit
        self.oracle = Oracle(
            jit=self.jit, max_pixels=args.max_pixels, slot=slot, hang_seconds=args.hang_seconds
        )
        self.crashes = Path(args.crashes)
        self.corpus_dir = Path(args.corpus) if args.corpus else None
        self.stats = Stats()
        self.seen_findings: Counter = Counter()
        self.last_report = time.monotonic()
        self.last_cli = time.monotonic()
        self.recent: list[tuple[bytes, Result]] = []
        self.cli_baseline = 0

    def warm_up(self, seeds: list[bytes]) -> None:
        """Compile the kernels by decoding the seeds (no clock, no memory limit)."""
        self.oracle.warm_up(seeds)

    def record(self, data: bytes, result: Result, trail: list[str]) -> bool:
        """Count an outcome; save a finding; True if the outcome class is new."""
        if result.key.startswith("skip"):
            self.stats.skipped += 1
            return False
        self.stats.execs += 1
        new = result.key not in self.stats.outcomes
        self.stats.outcomes[result.key] += 1
        if result.finding == "slow":
            # Confirm on a second run: the machine is shared.
            again = self.oracle.run(data)
            if again.finding != "slow":
                return new
        if result.finding is not None:
            self.stats.findings += 1
            self.seen_findings[result.key] += 1
            if self.seen_findings[result.key] <= 20:
                save_finding(
                    self.crashes,
                    data,
                    result.finding,
                    {
                        "outcome": result.key,
                        "detail": result.detail,
                        "mutations": trail,
                        "jit": self.jit,
                        "seconds": result.seconds,
                    },
                )
        if len(self.recent) < 64 or self.oracle.count % 97 == 0:
            if len(self.recent) >= 64:
                self.recent.pop(0)
            self.recent.append((data, result))
        return new

    def periodic(self, corpus_size: int) -> None:
        self.stats.decodes = self.oracle.count
        now = time.monotonic()
        if self.args.cli_every > 0 and now - self.last_cli > self.args.cli_every and self.recent:
            self.last_cli = now
            self.cli_sample()
        if now - self.last_report > 1.0:
            self.last_report = now
            print(self.stats.to_json(corpus_size), flush=True)

    def cli_sample(self) -> None:
        """One CLI check on a recent input (outside the memory limit and the slot)."""
        rng = np.random.default_rng(self.stats.execs)
        data, result = self.recent[int(rng.integers(len(self.recent)))]
        if result.finding is not None:
            return
        if not self.cli_baseline:
            self.cli_baseline = cli_baseline_rss()
        problem = run_cli_check(data, result, self.oracle, self.cli_baseline)
        self.stats.cli_checks += 1
        if problem:
            self.stats.findings += 1
            self.stats.outcomes[outcome_key("finding:cli", problem[:40])] += 1
            save_finding(self.crashes, data, "cli", {"outcome": result.key, "detail": problem})


def worker_mutate(args: argparse.Namespace, slot: SharedSlot | None) -> None:
    campaign = Campaign(args, slot)
    seeds = load_corpus(Path(args.seeds)) if args.seeds else []
    extra = load_corpus(campaign.corpus_dir)
    if args.nojit:  # pure-Python kernels: tiny pictures only
        seeds = [s for s in seeds if _pixels(s) <= 64]
    corpus = seeds + extra
    if not corpus:
        raise SystemExit("no seed streams: give --seeds DIR or --corpus DIR with *.cool files")
    campaign.warm_up(corpus)
    rng = np.random.default_rng(args.seed)
    mutator = Mutator(rng, corpus)
    n_seeds = len(corpus)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        # Half the time a seed, else a corpus entry (new outcome classes, valid variants).
        if rng.random() < 0.5 or len(corpus) == n_seeds:
            parent = corpus[int(rng.integers(n_seeds))]
        else:
            parent = corpus[n_seeds + int(rng.integers(len(corpus) - n_seeds))]
        data, trail = mutator.mutate(parent)
        result = campaign.oracle.run(data)
        new = campaign.record(data, result, trail)
        keep = new or (result.key == "ok" and rng.random() < 0.02)
        if keep and result.finding is None and len(data) <= 1 << 16:
            if len(corpus) - n_seeds >= args.max_corpus:
                corpus.pop(n_seeds + int(rng.integers(len(corpus) - n_seeds)))
            corpus.append(data)
            if campaign.corpus_dir is not None and new:
                campaign.corpus_dir.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha256(data).hexdigest()[:16]
                (campaign.corpus_dir / f"{name}.cool").write_bytes(data)
        campaign.periodic(len(corpus))
    print(campaign.stats.to_json(len(corpus)), flush=True)


def _pixels(data: bytes) -> int:
    if len(data) < 11:
        return 0
    width, height = struct.unpack_from("<HH", data, 7)
    return width * height


def worker_atheris(args: argparse.Namespace, slot: SharedSlot | None) -> None:
    import atheris

    include = [
        "coolchic_ref.syntax",
        "coolchic_ref.weights",
        "coolchic_ref.decode",
        "coolchic_ref.samples",
    ]
    if args.nojit:  # the kernels are plain Python then: cover them too
        include += [
            "coolchic_ref.latents",
            "coolchic_ref.upsampling",
            "coolchic_ref.synthesis",
            "coolchic_ref.layer_kernels",
        ]
    with atheris.instrument_imports(include=include):
        import coolchic_ref  # noqa: F401
        import coolchic_ref.decode  # noqa: F401
        import coolchic_ref.syntax  # noqa: F401
        import coolchic_ref.weights  # noqa: F401

        if args.nojit:
            import coolchic_ref.latents  # noqa: F401
            import coolchic_ref.synthesis  # noqa: F401
            import coolchic_ref.upsampling  # noqa: F401

    campaign = Campaign(args, slot)
    seeds = load_corpus(Path(args.seeds)) if args.seeds else []
    if args.nojit:
        seeds = [s for s in seeds if _pixels(s) <= 64]
    campaign.warm_up(seeds)
    rng = np.random.default_rng(args.seed)
    mutator = Mutator(rng, list(seeds))
    corpus_dir = Path(args.corpus)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(seeds):  # libFuzzer starts from the corpus directory
        path = corpus_dir / f"seed-{index:03d}.cool"
        if not path.exists():
            path.write_bytes(data)

    def test_one_input(data: bytes) -> None:
        # Findings are saved by `record`; libFuzzer goes on (crashes and hangs are
        # caught by the supervisor through the slot).
        result = campaign.oracle.run(data)
        campaign.record(data, result, ["atheris"])
        campaign.periodic(0)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        mutator.rng = np.random.default_rng(seed)
        if mutator.rng.random() < 0.3:
            return atheris.Mutate(data, max_size)
        return mutator.mutate(data)[0][:max_size]

    argv = [
        sys.argv[0],
        str(corpus_dir),
        f"-max_total_time={max(1, int(args.seconds))}",
        f"-artifact_prefix={Path(args.crashes).resolve()}/",
        f"-max_len={1 << 16}",
        "-timeout=60",
        "-rss_limit_mb=8192",
        "-print_final_stats=1",
        f"-seed={args.seed & 0x7FFFFFFF}",
    ]
    Path(args.crashes).mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


# ---------------------------------------------------------------------------
# The supervisor


@dataclass
class Totals:
    execs: int = 0
    skipped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: int = 0
    cli_checks: int = 0
    crashes: int = 0
    hangs: int = 0
    restarts: int = 0
    worker_errors: int = 0

    def add(self, report: dict) -> None:
        self.execs += report["execs"]
        self.skipped += report["skipped"]
        self.findings += report["findings"]
        self.cli_checks += report["cli_checks"]
        self.outcomes.update(report["outcomes"])


def _worker_command(
    args: argparse.Namespace, seconds: float, seed: int, slot_path: str
) -> list[str]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "_worker",
        "--mode", args.mode, "--seconds", f"{seconds:.1f}", "--seed", str(seed),
        "--crashes", str(args.crashes), "--slot", slot_path,
        "--max-pixels", str(args.max_pixels), "--cli-every", str(args.cli_every),
        "--max-corpus", str(args.max_corpus), "--hang-seconds", str(args.hang_seconds),
    ]  # fmt: skip
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    if args.seeds:
        cmd += ["--seeds", args.seeds]
    if args.nojit:
        cmd.append("--nojit")
    return cmd


def supervise(args: argparse.Namespace) -> Totals:
    """Run workers until --seconds are spent; restart dead or hung ones.

    A worker that dies during a decode (signal, abort) is a crash and one that
    passes its input's deadline is killed as a hang: in both cases the input is
    read back from the shared slot and saved. Ctrl-C / SIGTERM stop the campaign
    (and the worker) and still print the summary.
    """
    crashes = Path(args.crashes)
    crashes.mkdir(parents=True, exist_ok=True)
    totals = Totals()
    end = time.monotonic() + args.seconds
    start_wall = time.monotonic()
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    tmp = tempfile.mkdtemp(prefix="fuzz-slot-", dir=shm)
    slot_path = os.path.join(tmp, "slot")
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args.nojit:
        env["NUMBA_DISABLE_JIT"] = "1"
    incarnation = 0
    stop = False
    try:
        while not stop and time.monotonic() < end - 5:
            slot = SharedSlot(slot_path, create=True)
            seed = args.seed + 1000 * incarnation
            cmd = _worker_command(args, end - time.monotonic(), seed, slot_path)
            with open(crashes / "worker.log", "ab") as log:
                proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
                last: dict = {}

                def reader(stream=proc.stdout, sink=last) -> None:
                    for line in stream:
                        with contextlib.suppress(ValueError):
                            sink.update(json.loads(line))

                thread = threading.Thread(target=reader, daemon=True)
                thread.start()
                try:
                    verdict = _watch(proc, slot, end, args, totals, last, start_wall)
                except KeyboardInterrupt:
                    proc.kill()
                    proc.wait()
                    verdict, stop = "done", True
                    print("[fuzz] interrupted", flush=True)
                thread.join(timeout=5)
            if last:
                totals.add(last)
            count, _, _, data = slot.read()
            if verdict in ("crash", "hang") and data is not None:
                # Executions since the worker's last report are counted from the slot.
                totals.execs += max(0, count - last.get("decodes", 0))
                info = {
                    "outcome": f"finding:{verdict}",
                    "detail": f"worker {verdict}, exit status {proc.returncode}",
                    "jit": not args.nojit,
                    "worker_seed": seed,
                }
                path = save_finding(crashes, data, verdict, info)
                totals.crashes += verdict == "crash"
                totals.hangs += verdict == "hang"
                totals.outcomes[f"finding:{verdict}"] += 1
                print(f"[fuzz] worker {verdict}: input saved to {path}", flush=True)
            elif verdict == "crash":
                totals.worker_errors += 1
                print(
                    f"[fuzz] worker exited with status {proc.returncode} outside a decode; "
                    f"see {crashes / 'worker.log'}",
                    flush=True,
                )
                time.sleep(1)
            slot.map.close()
            incarnation += 1
            totals.restarts = incarnation - 1
            if verdict == "done":
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return totals


def _watch(proc, slot, end, args, totals, last, start_wall) -> str:
    """Wait for a worker: 'done', 'crash' (died) or 'hang' (killed past its deadline)."""
    next_print = time.monotonic() + args.print_every
    while True:
        try:
            code = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            return "done" if code == 0 else "crash"
        _, started, deadline, data = slot.read()
        now = time.monotonic()
        if data is not None and started > 0 and now > deadline:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "hang"
        if now > end + 120:  # a worker past its own end (a long decode): stop it
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "done"
        if now >= next_print:
            next_print = now + args.print_every
            execs = totals.execs + last.get("execs", 0)
            elapsed = now - start_wall
            outcomes = len(set(totals.outcomes) | set(last.get("outcomes", {})))
            findings = totals.findings + last.get("findings", 0)
            print(
                f"[fuzz] {elapsed:7.0f} s  execs {execs:>10}  {execs / max(elapsed, 1e-9):8.1f}/s  "
                f"unique outcomes {outcomes:>4}  findings {findings}  crashes {totals.crashes}  "
                f"hangs {totals.hangs}",
                flush=True,
            )


def print_summary(totals: Totals, seconds: float, args: argparse.Namespace) -> dict:
    summary = {
        "mode": args.mode + (" nojit" if args.nojit else ""),
        "seconds": round(seconds, 1),
        "execs": totals.execs,
        "execs_per_s": round(totals.execs / max(seconds, 1e-9), 1),
        "skipped_large": totals.skipped,
        "unique_outcomes": len(totals.outcomes),
        "findings": totals.findings,
        "crashes": totals.crashes,
        "hangs": totals.hangs,
        "cli_checks": totals.cli_checks,
        "restarts": totals.restarts,
        "worker_errors": totals.worker_errors,
    }
    print("[fuzz] summary " + json.dumps(summary), flush=True)
    for key, count in sorted(totals.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>10}  {key}")
    return summary


# ---------------------------------------------------------------------------
# Command line


def _add_campaign_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="wall time of the campaign")
    p.add_argument("--mode", choices=("mutate", "atheris"), default="mutate")
    p.add_argument(
        "--corpus", default=None, help="corpus directory (read, and new entries written)"
    )
    p.add_argument(
        "--seeds", default=str(DEFAULT_SEEDS), help="seed streams (default tests/fuzz_seeds)"
    )
    p.add_argument("--crashes", default="fuzz-crashes", help="where failing inputs are written")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--nojit", action="store_true", help="NUMBA_DISABLE_JIT=1: IndexError detector")
    p.add_argument("--threads", type=int, default=1, help="NUMBA_NUM_THREADS of the worker")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="skip decoding header-valid inputs declaring more pixels, for speed "
        "(default 2^20, with --nojit 1024)",
    )
    p.add_argument(
        "--cli-every", type=float, default=60.0, help="seconds between CLI checks (0: off)"
    )
    p.add_argument("--max-corpus", type=int, default=2000)
    p.add_argument(
        "--hang-seconds",
        type=float,
        default=10.0,
        help="a decode is a hang after 3x its time bound plus this",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fuzz for --seconds with a supervised worker")
    _add_campaign_options(run)
    run.add_argument("--print-every", type=float, default=30.0)
    run.add_argument("--log", default=None, help="append the summary as JSON lines to this file")
    worker = sub.add_parser("_worker")
    _add_campaign_options(worker)
    worker.add_argument("--slot", default=None)
    replay = sub.add_parser("replay", help="run the oracle on files and print each outcome")
    replay.add_argument("files", nargs="+")
    replay.add_argument("--nojit", action="store_true")
    replay.add_argument("--json", action="store_true", help="one JSON object per file")
    replay.add_argument("--max-pixels", type=int, default=1 << 30)
    measure = sub.add_parser("_measure")
    measure.add_argument("file")
    seeds = sub.add_parser("make-seeds", help="write the seed streams (needs the encoder)")
    seeds.add_argument("directory", nargs="?", default=str(DEFAULT_SEEDS))
    args = parser.parse_args(argv)
    if getattr(args, "max_pixels", 0) is None and hasattr(args, "nojit"):
        args.max_pixels = 1024 if args.nojit else 1 << 20

    if args.command == "_measure":
        _measure_main(args.file)
        return 0
    if args.command == "make-seeds":
        for path in make_seeds(Path(args.directory)):
            print(f"{path}  {path.stat().st_size} bytes")
        return 0
    if args.command == "replay":
        oracle = Oracle(jit=not args.nojit, max_pixels=args.max_pixels)
        # Then the memory limit applies. Multi-grid seeds start the grid threads.
        oracle.warm_up([s for s in load_corpus(DEFAULT_SEEDS) if _pixels(s) <= 64][:8])
        status = 0
        for name in args.files:
            result = oracle.run(Path(name).read_bytes())
            if args.json:
                record = {
                    "file": name,
                    "key": result.key,
                    "sha256": result.raw_sha256,
                    "finding": result.finding,
                    "detail": result.detail[-2000:],
                }
                print(json.dumps(record), flush=True)
            else:
                print(f"{name}: {result.key}  {result.seconds:.3f} s  {result.detail[-500:]}")
            status |= result.finding is not None
        return status
    if args.command == "_worker":
        slot = SharedSlot(args.slot) if args.slot else None
        if args.mode == "atheris":
            worker_atheris(args, slot)
        else:
            worker_mutate(args, slot)
        return 0

    def terminate(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    start = time.monotonic()
    totals = supervise(args)
    summary = print_summary(totals, time.monotonic() - start, args)
    if args.log:
        summary["outcomes"] = dict(totals.outcomes)
        summary["command"] = "python tools/fuzz.py " + " ".join(argv[1:])
        with open(args.log, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return 1 if totals.findings or totals.crashes or totals.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
