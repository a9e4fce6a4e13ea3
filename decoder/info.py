"""Stream statistics for `coolchic-ref info`: header, section sizes, parameters, MAC.

Only the header is parsed (spec 9, rules 1-5: fields, limits and section
lengths); the weights and substreams are not decoded, so `info` also describes
a stream whose sections `decode` would reject.
"""

from __future__ import annotations

from typing import Any

from .syntax import LayerSpec, StreamHeader, grid_shape, parse_header


def architecture(layers: tuple[LayerSpec, ...]) -> str:
    """Layers in Cool-chic's notation, `<out>-<kernel>-<linear|residual>-<act>`, comma-separated."""
    return ",".join(layer.describe() for layer in layers)


def upsampled_samples(header: StreamHeader) -> int:
    """Number of output samples of all 1-D upsampling passes (spec 6).

    Grid g (g >= 1) goes through levels l = g..1; at each level a vertical pass
    makes h_{l-1} x w_l samples, then a horizontal pass h_{l-1} x w_{l-1}.
    """
    total = 0
    for level in range(1, header.n_grids):
        for step in range(level, 0, -1):
            h_in, w_in = grid_shape(header.height, header.width, step)
            h_out, w_out = grid_shape(header.height, header.width, step - 1)
            total += h_out * w_in + h_out * w_out
    return total


def mac_per_pixel(header: StreamHeader) -> dict[str, float]:
    """Multiplications per decoded pixel, counted as in spec 3.4 (informative).

    arm: mac_arm per latent of each non-constant grid; upsampling: T per sample
    produced by each 1-D pass; synthesis: mac_syn.
    """
    pixels = header.width * header.height
    coded = sum(g.height * g.width for g in header.grids if not g.is_constant)
    mac = {
        "arm": header.mac_arm * coded / pixels,
        "upsampling": header.ups_half_taps * upsampled_samples(header) / pixels,
        "synthesis": float(header.mac_syn),
    }
    mac["total"] = sum(mac.values())
    return mac


def parameter_counts(header: StreamHeader) -> dict[str, int]:
    """Number of coded parameters (weights and biases) per module (spec 4.3)."""

    def count(layers: tuple[LayerSpec, ...]) -> int:
        return sum(layer.n_weights + layer.out_channels for layer in layers)

    counts = {
        "arm": count(header.arm_layers),
        "upsampling": header.ups_half_taps,
        "synthesis": count(header.syn_layers),
    }
    counts["total"] = sum(counts.values())
    return counts


def stream_info(data: bytes) -> dict[str, Any]:
    """Statistics of a stream as a JSON-serializable dict. Raises StreamError."""
    header = parse_header(data)
    pixels = header.width * header.height
    substreams = [g.substream_bytes for g in header.grids]
    total = header.total_bytes

    def quant(q) -> dict[str, int]:
        return {"w_shift": q.w_shift, "b_shift": q.b_shift, "w_egk": q.w_egk, "b_egk": q.b_egk}

    return {
        "stream_bytes": total,
        "bpp": 8 * total / pixels,
        "header": {
            "version": header.version,
            "color_format": header.color_format.label,
            "bit_depth": header.bit_depth,
            "width": header.width,
            "height": header.height,
            "n_grids": header.n_grids,
            "n_ctx_rowcol": header.n_ctx_rowcol,
            "dim_arm": header.dim_arm,
            "cross_grids": header.cross_grids,
            "ups_half_taps": header.ups_half_taps,
            "arm_quant": quant(header.arm_quant),
            "ups_shift": header.ups_shift,
            "ups_egk": header.ups_egk,
            "syn_quant": quant(header.syn_quant),
        },
        "architecture": {
            "arm": architecture(header.arm_layers),
            "synthesis": architecture(header.syn_layers),
        },
        "grids": [
            {
                "level": level,
                "height": g.height,
                "width": g.width,
                "latent_min": g.latent_min,
                "latent_max": g.latent_max,
                "alphabet_size": g.alphabet_size,
                "substream_bytes": g.substream_bytes,
            }
            for level, g in enumerate(header.grids)
        ],
        "sections": {
            "header": header.header_bytes,
            "weights": header.weights_bytes,
            "substreams": substreams,
            "latents": sum(substreams),
            "total": total,
        },
        "parameters": parameter_counts(header),
        "mac_per_pixel": mac_per_pixel(header),
    }


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of `stream_info`'s dict."""
    h = info["header"]
    s = info["sections"]
    p = info["parameters"]
    m = info["mac_per_pixel"]
    total = s["total"]

    def share(n: int) -> str:
        return f"{n:>9} bytes  {100 * n / total:5.1f} %"

    aq, sq = h["arm_quant"], h["syn_quant"]
    lines = [
        f"picture      {h['width']}x{h['height']} {h['color_format']} {h['bit_depth']}-bit",
        f"stream       version {h['version']}, {total} bytes, {info['bpp']:.4f} bpp",
        f"latents      {h['n_grids']} grids, ARM context radius {h['n_ctx_rowcol']} "
        f"({h['dim_arm']} neighbours)"
        + (f", cross-grid context of {h['cross_grids']} coarser grids" if h["cross_grids"] else ""),
        f"ARM          {info['architecture']['arm']}",
        f"upsampling   {2 * h['ups_half_taps']} taps ({h['ups_half_taps']} coded)",
        f"synthesis    {info['architecture']['synthesis']}",
        f"fixed point  ARM w Q{aq['w_shift']} b Q{aq['b_shift']}, upsampling Q{h['ups_shift']},"
        f" synthesis w Q{sq['w_shift']} b Q{sq['b_shift']}",
        f"exp-Golomb   ARM w {aq['w_egk']} b {aq['b_egk']}, upsampling {h['ups_egk']},"
        f" synthesis w {sq['w_egk']} b {sq['b_egk']}",
        "",
        "sections",
        f"  header     {share(s['header'])}",
        f"  weights    {share(s['weights'])}",
    ]
    for grid in info["grids"]:
        size = f"{grid['width']}x{grid['height']}"
        if grid["alphabet_size"] == 1:
            alphabet = f"constant {grid['latent_min']}"
        else:
            alphabet = f"[{grid['latent_min']}, {grid['latent_max']}]"
        lines.append(
            f"  grid {grid['level']}     {share(grid['substream_bytes'])}  {size:>11}  {alphabet}"
        )
    lines += [
        "",
        "parameters",
        f"  ARM        {p['arm']:>9}",
        f"  upsampling {p['upsampling']:>9}",
        f"  synthesis  {p['synthesis']:>9}",
        f"  total      {p['total']:>9}",
        "",
        "MAC per decoded pixel",
        f"  ARM        {m['arm']:>11.1f}",
        f"  upsampling {m['upsampling']:>11.1f}",
        f"  synthesis  {m['synthesis']:>11.1f}",
        f"  total      {m['total']:>11.1f}",
    ]
    return "\n".join(lines)
