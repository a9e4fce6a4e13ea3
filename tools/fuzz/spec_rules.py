"""The rejection rules 1-6 and 7a of spec section 9, checked in stream order.

The header is walked with the decoder's syntax table (field order, formats and
per-field allowed values, spec 3.2 / 3.3); the rules that relate fields
(picture size, residual widths, last layers, MAC limits, shift relations, grid
rules), the weights section (rule 6, spec 4.2) and the substream start (7a) are
written again here from the spec, not taken from the decoder's parser or
weights reader: the oracle compares the decoder's decision with this one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from tools.fuzz.layout import decoder_syntax

INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1


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


# Per table field: (the field, its struct, whether a value is allowed). The same test as
# `Field.violation`, prepared once: the oracle runs it on every field of every input.
_READERS: dict[int, tuple] = {}


def _reader(f) -> tuple[struct.Struct, Callable[[int], bool]]:
    entry = _READERS.get(id(f))
    if entry is None:
        multiple = f.multiple_of
        if f.allowed is not None:
            allowed = frozenset(f.allowed)

            def ok(value: int) -> bool:
                return value in allowed and value % multiple == 0
        else:
            low, high = f.limits

            def ok(value: int) -> bool:
                return low <= value <= high and value % multiple == 0

        entry = _READERS[id(f)] = (f, struct.Struct(f.fmt), ok)  # f kept: ids stay unique
    return entry[1], entry[2]


def _need(ok: bool, reason: str) -> None:
    if not ok:
        raise _Invalid(4, reason)


def _spec_check(data: bytes) -> None:
    s = decoder_syntax()
    table = s.HEADER_V1
    if len(data) < len(s.MAGIC) + 1 or data[: len(s.MAGIC)] != s.MAGIC:
        raise _Invalid(1, "magic")
    if data[table.offset("version")] != table.version:
        raise _Invalid(2, "version")
    pos = table.offset("version") + 1

    def take(f) -> int:
        """Read field `f` at `pos` (rule 3 if cut) and check its own range (rule 4)."""
        nonlocal pos
        packing, ok = _reader(f)
        if pos + packing.size > len(data):
            raise _Invalid(3, "truncated header")
        (value,) = packing.unpack_from(data, pos)
        pos += packing.size
        _need(ok(value), f.name)
        return value

    adds_input = {kind for kind in s.LayerKind if kind.adds_input}
    v: dict = {}  # values read so far
    n_params, macs = 0, {}
    for element in table.elements[2:]:  # after magic and version
        if not isinstance(element, s.Group):
            v[element.name] = take(element)
            if element.name == "height":
                _need(v["width"] * v["height"] <= s.MAX_PIXELS, "size")
            if element.name in ("arm_b_shift", "syn_b_shift"):
                prefix = element.name[:3]
                frac = s.ARM_FRAC if prefix == "arm" else s.SYN_FRAC
                _need(v[f"{prefix}_b_shift"] <= frac + v[f"{prefix}_w_shift"], "bias shift")
            continue
        items = []
        c_in = s.context_size(v["n_ctx_rowcol"]) if element.name == "arm" else v["n_grids"]
        mac = 0
        for _ in range(v[element.count]):
            item = {f.name: take(f) for f in element.fields}
            items.append(item)
            if element.name == "grid":
                low, high = item["latent_min"], item["latent_max"]
                _need(low <= high and (low < high or item["substream_bytes"] == 0), "grid")
                continue
            out, kernel = item["out"], item.get("kernel", 1)
            _need(item["type"] not in adds_input or out == c_in, "residual")
            mac += kernel * kernel * c_in * out
            n_params += kernel * kernel * c_in * out + out
            c_in = out
        v[element.name] = items
        if element.name == "arm":
            _need(c_in == s.ARM_OUTPUTS, "last layer")
            macs["arm"] = mac
        elif element.name == "syn":
            _need(c_in == s.ColorFormat(v["color_format"]).n_channels, "last layer")
            _need(macs["arm"] <= s.MAX_MAC_ARM and mac <= s.MAX_MAC_SYN, "MAC")
    n_params += v["ups_half_taps"]
    weights_bytes = v["weights_bytes"]
    grids = [grid["substream_bytes"] for grid in v["grid"]]
    total = pos + weights_bytes + sum(grids)
    if len(data) != total:
        raise _Invalid(5, "length")
    # Rule 6: spec 4.2 / 4.3 read bit by bit (a string of '0'/'1' for speed).
    section = data[pos : pos + weights_bytes]
    limit = min(len(section), (35 * n_params + 7) // 8)  # longer sections cannot be used up
    bits = bin(int.from_bytes(section[:limit], "big") | (1 << (8 * limit)))[3:]
    at = 0
    shapes: list[tuple[int, int]] = []  # (number of values, k)
    c_in = s.context_size(v["n_ctx_rowcol"])
    for layer in v["arm"]:
        shapes += [(c_in * layer["out"], v["arm_w_egk"]), (layer["out"], v["arm_b_egk"])]
        c_in = layer["out"]
    shapes.append((v["ups_half_taps"], v["ups_egk"]))
    c_in = v["n_grids"]
    for layer in v["syn"]:
        size = layer["kernel"] ** 2 * c_in * layer["out"]
        shapes += [(size, v["syn_w_egk"]), (layer["out"], v["syn_b_egk"])]
        c_in = layer["out"]
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
            value = (u + 1) // 2 if u & 1 else -(u // 2)
            if not INT16_MIN <= value <= INT16_MAX:
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
