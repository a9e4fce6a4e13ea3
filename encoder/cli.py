"""`coolchic-ref encode`: the encoder's command line (registered lazily by the decoder's CLI).

    coolchic-ref encode IN.png -o OUT.cool --lmbda 0.001 --preset fast

Exit codes follow the decoder's CLI: 0 success, 1 input / output / option problem
(click's own usage errors keep code 2), 3 internal error (e.g. the closed-loop check
failed), 130 interrupted. Errors are one line on stderr, without a traceback
(COOLCHIC_REF_DEBUG=1 shows it). The stream is written to a temporary file next to
the target and renamed at the very end: an interrupted or failed encode leaves no
partial output.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import click

from .format import DEFAULT_VERSION, MAX_CROSS_GRIDS, VERSIONS
from .image_io import InputError
from .presets import (
    DEFAULT_CROSS_GRIDS,
    DEFAULT_OP,
    DEFAULT_PRESET,
    OP_NAMES,
    PRESETS,
    describe_auto_rule,
)

EXIT_IO = 1
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

PRESET_NAMES = tuple(PRESETS)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class ProgressBar:
    """Progress on stderr: one updating line on a terminal, a line per 10% otherwise."""

    def __init__(self, stream: Any = None, enabled: bool = True) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # Rate and ETA count from the first iteration this bar sees: after `--resume`
        # (or in a second training loop) the iteration counter does not start at 0.
        self.start = time.monotonic()
        self.first_itr: int | None = None
        self.last_itr = -1
        self.last_draw = 0.0
        self.last_decile = -1
        self.drawn = False

    def __call__(self, p: Any) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.first_itr is None or p.itr < self.last_itr:
            self.first_itr, self.start = p.itr - 1, now
        self.last_itr = p.itr
        fraction = p.itr / max(p.total, 1)
        # The loss terms are read (a wait for the device) only for a line that is drawn.
        if self.tty:
            if now - self.last_draw >= 0.2 or p.itr == p.total:
                width = 20
                filled = int(width * fraction)
                bar = "#" * filled + "-" * (width - filled)
                self.stream.write(f"\r[{bar}] {self._text(p, now, fraction)}\x1b[K")
                self.stream.flush()
                self.last_draw = now
                self.drawn = True
        else:
            decile = int(10 * fraction)
            if decile != self.last_decile:
                self.last_decile = decile
                self.stream.write(self._text(p, now, fraction) + "\n")
                self.stream.flush()

    def _text(self, p: Any, now: float, fraction: float) -> str:
        # The first iteration seen only starts the clock, so it is not counted in the rate.
        done = p.itr - 1 - (self.first_itr or 0)
        per_itr = (now - self.start) / done if done > 0 else math.nan
        eta = per_itr * (p.total - p.itr)
        rate = f"{per_itr:5.2f}" if math.isfinite(per_itr) else "   --"
        return (
            f"{p.stage:<13} {p.itr:>6}/{p.total} "
            f"loss {p.loss:.3e}  {p.bpp:6.3f} bpp  {p.psnr:6.2f} dB  "
            f"{rate} s/it  ETA {_duration(eta)}"
        )

    def close(self) -> None:
        if self.enabled and self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    return f"{seconds // 60}:{seconds % 60:02d}"


def _write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to a temporary file in target's directory, then rename it over target."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _check_output(path: Path) -> None:
    """Fail early (before hours of training) if the output cannot be written."""
    if path.is_dir():
        raise click.ClickException(f"{path}: is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise click.ClickException(f"{path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise click.ClickException(f"{path}: directory {parent} is not writable")


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and not value > 0:
        raise click.BadParameter("must be positive")
    return value


@click.command("encode")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output stream (.cool).",
)
@click.option(
    "--lmbda",
    type=float,
    default=1e-3,
    show_default=True,
    callback=_positive,
    help="Rate weight: loss = MSE + lmbda * bpp, MSE on samples in [0, 1].",
)
@click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES),
    default=DEFAULT_PRESET,
    show_default=True,
    help="Training effort (instant: about a minute for 768x512 on 2 cores).",
)
@click.option(
    "--op",
    type=click.Choice(OP_NAMES),
    default=DEFAULT_OP,
    show_default=True,
    help=f"Decoder operating point, about this many MAC per pixel; auto: {describe_auto_rule()}.",
)
@click.option(
    "--start_lr",
    "--start-lr",
    "start_lr",
    type=float,
    callback=_positive,
    help="Initial learning rate of phase 1 (default: the preset's).",
)
@click.option(
    "--n_itr",
    "--n-itr",
    "n_itr",
    type=int,
    callback=_positive,
    help="Phase-1 iterations (default: the preset's).",
)
@click.option(
    "--n_train_loops",
    "--n-train-loops",
    "n_train_loops",
    type=int,
    default=1,
    show_default=True,
    callback=_positive,
    help="Independent encodings (different seeds); the best one is kept.",
)
@click.option(
    "--layers_synthesis",
    "--layers-synthesis",
    "layers_synthesis",
    help="Synthesis layers, e.g. 16-1-linear-relu,X-1-linear-none,X-3-residual-none "
    "(X = number of output channels).",
)
@click.option(
    "--layers_arm",
    "--layers-arm",
    "layers_arm",
    help="ARM layers, e.g. 24-1-linear-relu,24-1-linear-relu,2-1-linear-none, or "
    "Cool-chic's <width>,<hidden layers> (e.g. 24,2).",
)
@click.option(
    "--n_ctx_rowcol",
    "--n-ctx-rowcol",
    "n_ctx_rowcol",
    type=click.IntRange(1, 3),
    help="ARM context radius r: 2r(r+1) causal neighbours (4, 12 or 24).",
)
@click.option(
    "--upsampling_kernel_size",
    "--upsampling-kernel-size",
    "upsampling_kernel_size",
    type=int,
    help="Upsampling filter length 2T (even, 2..16).",
)
@click.option(
    "--n_grids",
    "--n-grids",
    "n_grids",
    type=click.IntRange(1, 7),
    help="Number of latent grids (1..7).",
)
@click.option(
    "--bitstream-version",
    "--bitstream_version",
    "version",
    type=click.Choice([str(v) for v in VERSIONS]),
    default=str(DEFAULT_VERSION),
    show_default=True,
    help="Bitstream version to write: 2 (spec bitstream-v2.md: v1 plus the cross-grid "
    "ARM context) or 1 (spec bitstream-v1.md, no cross-grid context).",
)
@click.option(
    "--cross-grids",
    "--cross_grids",
    "cross_grids",
    type=click.IntRange(0, MAX_CROSS_GRIDS),
    help="Version 2 only: the ARM of each grid also sees the co-located latents of the "
    f"next N coarser grids (0..{MAX_CROSS_GRIDS}, at most n_grids - 1; default: "
    f"{DEFAULT_CROSS_GRIDS}, or n_grids - 1 if fewer grids). An error with "
    "--bitstream-version 1.",
)
@click.option(
    "--n_ft_per_res",
    "--n-ft-per-res",
    "n_ft_per_res",
    default="1",
    help="Feature maps per grid resolution: this format has exactly 1 per grid, so "
    "only 1 (or 1,1,...,1) is accepted; use --n_grids for the number of grids.",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    help="Directory for logs and the checkpoint used by --resume.",
)
@click.option("--resume", is_flag=True, help="Continue an interrupted encode from --workdir.")
@click.option(
    "--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Write bpp, PSNR, MAC/pixel, time and details to this JSON file.",
)
@click.option(
    "--no-verify", is_flag=True, hidden=True, help="Skip the closed-loop check (debugging only)."
)
@click.option(
    "--max-memory",
    "max_memory",
    metavar="SIZE",
    help="Memory the encode may use, e.g. 16G or 512M, or 'off' for no check (default: "
    "MemAvailable, or the cgroup's limit). An encode whose estimated peak exceeds it is "
    "refused before training.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (the summary line stays).")
def encode_command(
    input_path: Path,
    output: Path,
    lmbda: float,
    preset: str,
    op: str,
    start_lr: float | None,
    n_itr: int | None,
    n_train_loops: int,
    layers_synthesis: str | None,
    layers_arm: str | None,
    n_ctx_rowcol: int | None,
    upsampling_kernel_size: int | None,
    n_grids: int | None,
    version: str,
    cross_grids: int | None,
    n_ft_per_res: str,
    workdir: Path | None,
    resume: bool,
    device: str,
    seed: int,
    json_path: Path | None,
    no_verify: bool,
    max_memory: str | None,
    quiet: bool,
) -> None:
    """Encode the picture IN into a coolchic-ref stream.

    IN is a PNG (grey or RGB, 8 or 16 bits) or a raw planar YUV file named as Cool-chic
    names them, <name>_<W>x<H>_<framerate>_<yuv420|yuv444>_<bits>b.yuv, with the frame rate
    written 50, 50p or 1fps (e.g. frame_96x64_1fps_yuv420_10b.yuv). The file size must be a
    whole number of frames of that geometry; a file of several frames codes its first frame.
    """
    if any(part.strip() != "1" for part in n_ft_per_res.split(",")):
        raise click.UsageError(
            f"--n_ft_per_res {n_ft_per_res}: this format codes exactly one feature map per "
            "grid resolution (use 1; --n_grids sets the number of grids)"
        )
    if resume and workdir is None:
        raise click.UsageError("--resume needs --workdir (where the checkpoint is)")
    if cross_grids is not None and int(version) == 1:
        raise click.UsageError(
            "--cross-grids: bitstream version 1 has no cross-grid context "
            "(use --bitstream-version 2)"
        )
    _check_output(output)
    if json_path is not None:
        _check_output(json_path)
    memory_limit = None
    if max_memory is not None and max_memory.strip().lower() != "off":
        from .memory import parse_memory

        try:
            memory_limit = parse_memory(max_memory)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--max-memory") from None

    bar = ProgressBar(enabled=not quiet)
    try:
        # torch is imported here, not when the CLI is loaded: `--help` stays fast.
        from ..cli import numba_without_scipy
        from .api import encode

        try:
            with numba_without_scipy():  # the closed-loop check's first Numba kernel
                result = encode(
                    input_path,
                    lmbda=lmbda,
                    preset=preset,
                    op=op,
                    start_lr=start_lr,
                    n_itr=n_itr,
                    n_train_loops=n_train_loops,
                    layers_synthesis=layers_synthesis,
                    layers_arm=layers_arm,
                    n_ctx_rowcol=n_ctx_rowcol,
                    upsampling_kernel_size=upsampling_kernel_size,
                    n_grids=n_grids,
                    version=int(version),
                    cross_grids=cross_grids,
                    device=device,
                    seed=seed,
                    progress=bar,
                    workdir=workdir,
                    resume=resume,
                    verify=not no_verify,
                    log=lambda message: (bar.close(), click.echo(message, err=True)),
                    info=None if quiet else (lambda message: click.echo(message, err=True)),
                    max_memory=memory_limit,
                    check_memory=(max_memory or "").strip().lower() != "off",
                )
        finally:
            bar.close()
        _write_atomic(output, result.stream)
        if json_path is not None:
            summary = result.summary()
            summary["input"] = str(input_path)
            summary["output"] = str(output)
            text = json.dumps(summary, indent=2, default=float) + "\n"
            _write_atomic(json_path, text.encode())
    except KeyboardInterrupt:
        hint = f"; continue with --resume --workdir {workdir}" if workdir else ""
        click.echo(f"interrupted: no output written{hint}", err=True)
        raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
    except click.ClickException:
        raise
    except Exception as error:
        if os.environ.get("COOLCHIC_REF_DEBUG"):
            raise
        # Bad input or options: one line, exit 1. Anything else (ClosedLoopError
        # included) is a bug: exit 3.
        if isinstance(error, (InputError, ValueError, OSError)):
            click.echo(f"error: {_one_line(error)}", err=True)
            raise click.exceptions.Exit(EXIT_IO) from None
        click.echo(
            f"error: internal error: {type(error).__name__}: {_one_line(error)} "
            "(set COOLCHIC_REF_DEBUG=1 for a traceback)",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_INTERNAL) from None
    click.echo(
        f"wrote {output}: {len(result.stream)} bytes, {result.bpp:.4f} bpp, "
        f"PSNR {result.psnr:.2f} dB, {result.mac_per_pixel:.0f} MAC/pixel, "
        f"{result.seconds:.1f} s ({result.width}x{result.height}, preset {preset}, "
        f"op {result.details['op']}, lambda {lmbda:g}, "
        f"bitstream v{result.details['bitstream_version']})"
    )
