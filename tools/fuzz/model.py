"""A stream as plain integers that can be rewritten (model-level mutations).

`Model.parse` reads a valid stream through the reference decoder's parser;
`Model.to_bytes` writes it again (the header with the syntax table's `pack`,
the weights per spec 4.2) without validating anything, so that mutations can
produce any header, architecture or weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.fuzz.layout import decoder_syntax, header_table

# Header fields that follow from the model's lists rather than being stored in `scalars`.
DERIVED_FIELDS = ("magic", "n_grids", "ups_half_taps", "n_arm_layers", "n_syn_layers")


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
        values = header_table().read(data)
        scalars = {
            name: value
            for name, value in values.items()
            if not isinstance(value, list) and name not in (*DERIVED_FIELDS, "weights_bytes")
        }
        offsets = h.substream_offsets
        return cls(
            scalars=scalars,
            arm=[list(item.values()) for item in values["arm"]],
            syn=[list(item.values()) for item in values["syn"]],
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
        return decoder_syntax().context_size(self.scalars["n_ctx_rowcol"])

    def n_channels(self) -> int:
        return decoder_syntax().ColorFormat(self.scalars["color_format"]).n_channels

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
        """The stream (spec 3.1); lengths follow the sections, nothing is validated.

        Header values are reduced into their fields' types (`Field.wrap`), so any
        model can be written.
        """
        table = header_table()
        weights = self.weights_section()

        def items(group: str, rows: list) -> list[list[int]]:
            fields = table.group(group).fields
            return [[f.wrap(v) for f, v in zip(fields, row, strict=True)] for row in rows]

        grids = [(lo, hi, len(s)) for (lo, hi), s in zip(self.grids, self.substreams, strict=True)]
        header = table.pack(
            {name: table.field(name).wrap(value) for name, value in self.scalars.items()}
            | {
                "magic": decoder_syntax().MAGIC,
                "ups_half_taps": table.field("ups_half_taps").wrap(len(self.taps)),
                "weights_bytes": len(weights),
                "arm": items("arm", self.arm),
                "syn": items("syn", self.syn),
                "grid": items("grid", grids),
            }
        )
        return header + weights + b"".join(self.substreams)


def parse_arch(text: str, arm: bool) -> list[list[int]]:
    """Layers in Cool-chic's notation ('16-1-linear-relu,...') as header descriptors."""
    s = decoder_syntax()
    kinds = {k.label: int(k) for k in s.LayerKind}
    activations = {a.label: int(a) for a in s.Activation}
    layers = []
    for item in text.split(","):
        out, kernel, kind, act = item.strip().split("-")
        fields = [int(out), kinds[kind], activations[act]]
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
        "version": header_table().version, "color_format": color_format, "bit_depth": bit_depth,
        "width": width, "height": height, "n_ctx_rowcol": n_ctx_rowcol,
        "arm_w_shift": 8, "arm_b_shift": 8, "arm_w_egk": 3, "arm_b_egk": 3,
        "ups_shift": 4, "ups_egk": 2, "syn_w_shift": 8, "syn_b_shift": 8,
        "syn_w_egk": 3, "syn_b_egk": 3,
    }  # fmt: skip
    m = Model(scalars, parse_arch(arm, True), parse_arch(syn, False), [], [], [], [], [])

    def values(n: int) -> list[int]:
        return [int(v) for v in rng.integers(-weight_range, weight_range + 1, size=n)]

    c_in = m.dim_arm()
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
