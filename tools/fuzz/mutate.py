"""Structure-aware mutations of streams: bytes, header fields, sections, models."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from tools.fuzz.layout import (
    MAX_INPUT,
    Sections,
    decoder_syntax,
    header_fields,
    header_size,
    quant_fields,
    read_field,
    sections,
    write_field,
)
from tools.fuzz.model import Model

if TYPE_CHECKING:
    from coolchic_ref.syntax import Located

INT16_EXTREMES = (-32768, 32767, -32767, 0, 1, -1, 16384, -16384)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def boundary_values(f: Located, current: int) -> list[int]:
    """Values worth trying in a field: its limits, just outside them, type extremes."""
    low, high = f.field.limits
    t_low, t_high = f.field.type_range
    values = {low, high, low - 1, high + 1, t_low, t_high, 0, 1, current - 1, current + 1}
    values |= {2 * high, high // 2}
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
        table = decoder_syntax().HEADER_V1
        fixed = [table.offset("version"), table.offset("color_format"), table.fixed_bytes]
        cuts = [0, *fixed, header_size(data), len(data) - 1, int(self.rng.integers(len(data)))]
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
        low, high = f.field.limits
        write_field(out, f, int(self.rng.integers(low, high + 1)))
        return bytes(out)

    def inflate(self, data: bytes) -> bytes:
        """Declare a huge picture, weights section or substream, with or without the bytes."""
        by_name = {f.name: f for f in header_fields(data)}
        out = bytearray(data)
        choice = int(self.rng.integers(4))
        s = decoder_syntax()
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
                    limit = by_name[name].field.high
                    write_field(out, by_name[name], _pick(self.rng, (255, limit)))
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
        f = _pick(self.rng, quant_fields())
        low, high = f.limits
        m.scalars[f.name] = int(_pick(self.rng, (low, high, int(self.rng.integers(low, high + 1)))))
        if self.rng.random() < 0.7:  # keep b_shift <= frac + w_shift (spec 3.4)
            s, syntax = m.scalars, decoder_syntax()
            s["arm_b_shift"] = min(s["arm_b_shift"], syntax.ARM_FRAC + s["arm_w_shift"])
            s["syn_b_shift"] = min(s["syn_b_shift"], syntax.SYN_FRAC + s["syn_w_shift"])

    def op_layer(self, m: Model) -> None:
        """Change, add or remove a layer; mostly within the rules of spec 3.3."""
        s = decoder_syntax()
        n_activations = len(s.Activation)
        what = "arm" if self.rng.random() < 0.5 else "syn"
        layers = m.arm if what == "arm" else m.syn
        index = int(self.rng.integers(len(layers)))
        action = int(self.rng.integers(4))
        width = int(_pick(self.rng, (1, 2, 2, 3, 3, 4, 8, 16, int(self.rng.integers(1, 65)))))
        new = (
            [width, 0, int(self.rng.integers(n_activations))] if what == "arm" else [width, 1, 0, 0]
        )
        if what == "syn":
            new[1] = int(_pick(self.rng, s.SYN_KERNELS))
            new[3] = int(self.rng.integers(n_activations))
        if action == 0 and len(layers) < (s.MAX_ARM_LAYERS if what == "arm" else s.MAX_SYN_LAYERS):
            layers.insert(index, new)
        elif action == 1 and len(layers) > 1:
            del layers[index]
        elif action == 2:
            layers[index][-1] = int(self.rng.integers(n_activations))
            if what == "syn":
                layers[index][1] = int(_pick(self.rng, s.SYN_KERNELS))
        else:
            layers[index][0] = width
        if self.rng.random() < 0.8:
            layers[-1][0] = s.ARM_OUTPUTS if what == "arm" else m.n_channels()
        # A residual layer is valid only with out == in; clear the others mostly.
        c_in = m.dim_arm() if what == "arm" else len(m.grids)
        for layer in layers:
            type_at = 1 if what == "arm" else 2
            if layer[0] == c_in and self.rng.random() < 0.2:
                layer[type_at] = s.LayerKind.RESIDUAL
            elif layer[0] != c_in and self.rng.random() < 0.9:
                layer[type_at] = s.LayerKind.LINEAR
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
        if action == 0 and len(m.grids) < decoder_syntax().MAX_GRIDS:
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
        s, syntax = m.scalars, decoder_syntax()
        action = int(self.rng.integers(4))
        if action == 0:
            s["color_format"] = int(self.rng.integers(len(syntax.ColorFormat)))
            m.syn[-1][0] = m.n_channels()
            if m.syn[-1][2] == syntax.LayerKind.RESIDUAL:
                m.syn[-1][2] = syntax.LayerKind.LINEAR
            self._rebuild(m, "syn", len(m.syn) - 1)
        elif action == 1:
            s["bit_depth"] = int(_pick(self.rng, (8, 9, 10, 12, 15, 16)))
        elif action == 2:
            s["n_ctx_rowcol"] = int(self.rng.integers(1, syntax.MAX_CTX_ROWCOL + 1))
            if m.arm[0][1] == syntax.LayerKind.RESIDUAL:
                m.arm[0][1] = syntax.LayerKind.LINEAR
            self._rebuild(m, "arm", 0)
            m.substreams = [b"" if self.rng.random() < 0.5 else sub for sub in m.substreams]
        else:
            m.taps = self._fresh_weights(int(self.rng.integers(1, syntax.MAX_UPS_HALF_TAPS + 1)))

    def op_egk(self, m: Model) -> None:
        """Re-encode with other exp-Golomb orders (the stream stays valid)."""
        top = decoder_syntax().MAX_EGK
        for f in quant_fields():
            if f.name.endswith("_egk") and self.rng.random() < 0.5:
                m.scalars[f.name] = int(
                    _pick(self.rng, (0, 1, top, int(self.rng.integers(top + 1))))
                )

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
