"""The `coolchic-ref` command line.

Subcommands of other parts of the package (the encoder, the conformance
runner) are registered in LAZY_COMMANDS and imported only when used, so that
the decoder works, and `--help` stays fast, without torch installed.

Exit codes: 0 success; 1 input/output problem (unreadable stream, output
that cannot be written, unavailable subcommand); 2 invalid stream (and, as
click does, a command-line usage error); 3 internal error; 130 interrupted.
Errors are one line on stderr, never a traceback (set COOLCHIC_REF_DEBUG=1 to
get the traceback of an internal error). Loading a lazy subcommand happens
inside `CoolchicGroup.invoke`, so its failures are mapped the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import mmap
import os
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click

from . import __version__
from .errors import StreamError

EXIT_IO = 1
EXIT_INVALID_STREAM = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class LazyCommand:
    """A subcommand provided by another module, imported only when it is used."""

    target: str  # "module:attribute" of a click command
    help: str  # one line for `coolchic-ref --help`
    missing: str  # what to tell the user when it cannot be loaded
    requires: tuple[str, ...] = ()  # top-level packages it needs (checked first)


LAZY_COMMANDS: dict[str, LazyCommand] = {
    "encode": LazyCommand(
        "coolchic_ref.encoder.cli:encode_command",
        "Encode an image into a stream (needs the encoder extra).",
        "`coolchic-ref encode` needs the encoder: pip install 'coolchic-ref[encoder]'",
        requires=("torch", "constriction"),
    ),
    "conformance": LazyCommand(
        "coolchic_ref.conformance:conformance_command",
        "Check the reference decoder against a conformance suite.",
        "the conformance runner is not available in this installation",
    ),
}


class CliError(Exception):
    """A user-facing failure with a one-line message and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_IO) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _fail(message: str, exit_code: int) -> click.exceptions.Exit:
    click.echo(_one_line(message), err=True)
    return click.exceptions.Exit(exit_code)


def _importable(name: str) -> bool:
    """Whether top-level package `name` is installed, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _unavailable_command(name: str, message: str) -> click.Command:
    """A stand-in that accepts any arguments and fails with `message`."""

    @click.command(
        name=name,
        help=message,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def unavailable(args: tuple[str, ...]) -> None:
        raise CliError(f"error: {message}")

    return unavailable


class CoolchicGroup(click.Group):
    """A click group that loads LAZY_COMMANDS on demand and maps errors to exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        lazy = LAZY_COMMANDS[cmd_name]
        absent = [name for name in lazy.requires if not _importable(name)]
        if absent:
            return _unavailable_command(cmd_name, f"{lazy.missing} ({', '.join(absent)} missing)")
        module_name, attribute = lazy.target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            if os.environ.get("COOLCHIC_REF_DEBUG"):
                raise
            return _unavailable_command(cmd_name, f"{lazy.missing} ({_one_line(error)})")
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Like click's, but lazy commands show their static help: `--help` must not
        # import the encoder (and torch) just to print one line.
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:
                rows.append((name, LAZY_COMMANDS[name].help))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except StreamError as error:
            raise _fail(f"error: {error}", EXIT_INVALID_STREAM) from None
        except CliError as error:
            raise _fail(str(error), error.exit_code) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", EXIT_INTERRUPTED) from None
        except OSError as error:
            raise _fail(f"error: {error}", EXIT_IO) from None
        except Exception as error:
            if os.environ.get("COOLCHIC_REF_DEBUG"):
                raise
            raise _fail(
                f"error: internal error: {type(error).__name__}: {error} "
                "(set COOLCHIC_REF_DEBUG=1 for a traceback)",
                EXIT_INTERNAL,
            ) from None


@click.group(cls=CoolchicGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="coolchic-ref")
def main() -> None:
    """coolchic-ref: reference codec of the Cool-chic family.

    Decode a stream to PNG / YUV / raw samples, inspect a stream, and, with
    the encoder extra installed, encode images.
    """


@contextmanager
def open_stream(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The content of a stream file; CliError (exit 1) if it cannot be read.

    A regular file is memory-mapped rather than read: a file far longer than
    its header declares is then rejected (spec 9, rule 5) without being loaded.
    """
    try:
        file = open(path, "rb")  # closed by the `with file` below
    except FileNotFoundError:
        raise CliError(f"error: cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"error: cannot read {path}: it is a directory") from None
    except OSError as error:
        raise CliError(f"error: cannot read {path}: {error.strerror or error}") from None
    with file:
        mode = os.fstat(file.fileno()).st_mode
        if stat.S_ISDIR(mode):
            raise CliError(f"error: cannot read {path}: it is a directory")
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise CliError(f"error: cannot read {path}: not a regular file")
        mapped = None
        if stat.S_ISREG(mode):
            try:
                mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):  # empty file, or a file system without mmap
                mapped = None
        if mapped is None:
            try:
                data = file.read()
            except OSError as error:
                raise CliError(f"error: cannot read {path}: {error.strerror or error}") from None
            yield data
        else:
            with mapped:
                yield mapped


@contextmanager
def numba_without_scipy() -> Iterator[None]:
    """Within this block `import scipy` fails, unless scipy is already imported.

    Numba's first kernel (compiled or loaded from its cache) imports
    scipy.linalg, 0.3-0.4 s of a fresh `coolchic-ref decode` here, only to learn
    whether it can compile np.dot and np.linalg, which the decoder does not use.
    Without scipy Numba just declines those for the rest of the process, so this
    is for the command line's own process only (`decode`, and `encode` for its
    closed-loop check), never for the library.
    """
    if "scipy" in sys.modules:
        yield
        return
    sys.modules["scipy"] = None  # type: ignore[assignment]  # makes the import fail
    try:
        yield
    finally:
        if sys.modules.get("scipy", False) is None:
            del sys.modules["scipy"]


@main.command("decode")
@click.argument("stream", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .png (grey/RGB, 8 or 16 bits), .yuv (YUV streams; "
    "named <name>_<W>x<H>_1p_yuv420_<bits>b.yuv unless the name has _<W>x<H>_) "
    "or .raw (canonical raw samples, any stream).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@click.option("--timings", is_flag=True, help="Also print the time of each decoding stage.")
def decode_command(stream: Path, output: Path, quiet: bool, timings: bool) -> None:
    """Decode STREAM into a picture file."""
    from .decode import decode
    from .output import OutputError, atomic_write, encode_image, resolve_output
    from .syntax import parse_header

    with open_stream(stream) as data:
        header = parse_header(data)  # rules 1-5 before any output or picture-sized work
        try:
            target = resolve_output(header, output)
            stage_times: dict[str, float] = {}
            start = time.perf_counter()
            with numba_without_scipy():
                image = decode(data, timings=stage_times)
            elapsed = time.perf_counter() - start
            atomic_write(target, encode_image(image, target))
        except OutputError as error:
            raise CliError(f"error: {error}") from None
        stream_bytes = len(data)
    if quiet:
        return
    bpp = 8 * stream_bytes / (image.width * image.height)
    click.echo(
        f"wrote {target} ({image.width}x{image.height}, "
        f"{image.color_format.label}, {image.bit_depth}-bit): "
        f"stream {stream_bytes} bytes, {bpp:.4f} bpp, decoded in {elapsed:.3f} s"
    )
    if timings:
        for stage, seconds in stage_times.items():
            click.echo(f"  {stage:<15} {1000 * seconds:9.1f} ms")


@main.command("info")
@click.argument("stream", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object instead of text.")
def info_command(stream: Path, as_json: bool) -> None:
    """Show a stream's header, section sizes, parameters and MAC per pixel.

    Only the header is checked (section 9, rules 1-5 of the spec); `decode`
    checks the rest.
    """
    from .info import format_info, stream_info

    with open_stream(stream) as data:
        info = stream_info(data)
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))
