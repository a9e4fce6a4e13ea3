"""The rejection rules 1-6 and 7a of spec section 9, written again from the spec.

Not from `coolchic_ref.syntax` / `weights`: the oracle compares the decoder's
decision with this one, so the two must not share code.
"""

from __future__ import annotations

import struct


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
