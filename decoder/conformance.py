"""The conformance runner: `coolchic-ref conformance [DIR]` (spec/conformance.md).

Decodes every stream listed in DIR/manifest.json with the reference decoder and
compares the SHA-256 of its canonical raw samples (bitstream-v1.md 8.3) with the
manifest. A stream marked `reject` must instead be rejected (spec section 9). On a
mismatch the expected samples (DIR/expected/<file>, gzip) locate the first
differing sample. Needs only the decoder (NumPy, Numba, click): no torch.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from .errors import StreamError

MANIFEST = "manifest.json"
STREAMS_DIR = "streams"
EXPECTED_DIR = "expected"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# File names in the manifest: plain names, no directories (the runner must not
# read outside the suite whatever the manifest says).
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class ManifestError(Exception):
    """The suite's manifest is missing or malformed; the message is one line."""


@dataclass(frozen=True)
class SuiteEntry:
    """One stream of the manifest.

    Either `sha256` (a valid stream: the hash of its canonical raw samples, and
    `expected`, the gzip file of those samples, or None) or `reject` (the spec
    section 9 rule that rejects it) and `error` (the reference decoder's message,
    informative) is set.
    """

    name: str
    stream: str
    description: str
    sha256: str | None
    expected: str | None
    reject: int | None
    error: str | None


@dataclass
class Result:
    """The outcome for one stream.

    first_difference: (plane, row, column, expected, got) of the first differing
    sample, when it could be located.
    """

    name: str
    passed: bool
    message: str  # "" for a plain pass; otherwise what happened
    seconds: float
    sha256: str | None = None  # of the decoded raw samples, if the stream decoded
    first_difference: tuple[int, int, int, int, int] | None = None
    stage_seconds: dict[str, float] | None = None

    def line(self) -> str:
        """The line the command prints: `PASS name` or `FAIL name: why`."""
        status = "PASS" if self.passed else "FAIL"
        return f"{status} {self.name}: {self.message}" if self.message else f"{status} {self.name}"


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ManifestError(message)


def _file_name(value: object, what: str) -> str:
    _require(
        isinstance(value, str) and _FILE_NAME.fullmatch(value) is not None,
        f"{what}: {value!r} is not a plain file name",
    )
    return value  # type: ignore[return-value]


def load_manifest(directory: str | Path) -> list[SuiteEntry]:
    """The entries of DIR/manifest.json; ManifestError if it is missing or malformed."""
    path = Path(directory) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST} in {directory}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ManifestError(f"{path} is not valid JSON: {error}") from None
    _require(
        isinstance(data, dict) and isinstance(data.get("streams"), list),
        f"{path}: expected an object with a list 'streams'",
    )
    entries, names = [], set()
    for index, item in enumerate(data["streams"]):
        where = f"{path}: streams[{index}]"
        _require(isinstance(item, dict), f"{where} is not an object")
        stream = _file_name(item.get("stream"), f"{where}.stream")
        name = stream.removesuffix(".cool")
        _require(name not in names, f"{where}: stream {stream} listed twice")
        names.add(name)
        description = item.get("description", "")
        _require(isinstance(description, str), f"{where}.description is not a string")
        reject = item.get("reject")
        if reject is None:
            sha = item.get("sha256")
            _require(
                isinstance(sha, str) and _HEX64.fullmatch(sha) is not None,
                f"{where}.sha256 is not 64 lower-case hex digits",
            )
            expected = item.get("expected")
            if expected is not None:
                expected = _file_name(expected, f"{where}.expected")
            entries.append(SuiteEntry(name, stream, description, sha, expected, None, None))
        else:
            _require(
                isinstance(reject, dict)
                and isinstance(reject.get("rule"), int)
                and isinstance(reject.get("error", ""), str),
                f"{where}.reject must be an object with an integer 'rule' and a string 'error'",
            )
            _require(item.get("sha256") is None, f"{where}: a rejected stream has no sha256")
            error = reject.get("error") or None
            entries.append(SuiteEntry(name, stream, description, None, None, reject["rule"], error))
    return entries


def split_planes(raw: bytes, shapes: list[tuple[int, int]], bit_depth: int) -> list[np.ndarray]:
    """Canonical raw samples (spec 8.3) -> planes of the given shapes (a short input gives
    short planes: only whole samples that are present)."""
    dtype = np.dtype(np.uint8) if bit_depth == 8 else np.dtype("<u2")
    samples = np.frombuffer(raw[: len(raw) - len(raw) % dtype.itemsize], dtype=dtype)
    planes, start = [], 0
    for rows, columns in shapes:
        planes.append(samples[start : start + rows * columns])
        start += rows * columns
    return planes


def first_difference(
    expected: bytes, planes: list[np.ndarray], bit_depth: int
) -> tuple[int, int, int, int, int] | None:
    """(plane, row, column, expected, got) of the first sample where the decoded planes
    differ from the expected raw samples; None if every sample both have agrees."""
    shapes = [(int(p.shape[0]), int(p.shape[1])) for p in planes]
    for index, (want, got) in enumerate(
        zip(split_planes(expected, shapes, bit_depth), planes, strict=True)
    ):
        got_flat = np.ascontiguousarray(got).reshape(-1)[: want.size]
        differ = np.flatnonzero(want != got_flat)
        if differ.size:
            position = int(differ[0])
            row, column = divmod(position, shapes[index][1])
            return index, row, column, int(want[position]), int(got_flat[position])
    return None


def _read_expected(directory: Path, entry: SuiteEntry) -> bytes | None:
    if entry.expected is None:
        return None
    try:
        return gzip.decompress((directory / EXPECTED_DIR / entry.expected).read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile):
        return None


def _mismatch(directory: Path, entry: SuiteEntry, image, raw: bytes, digest: str) -> Result:
    """The FAIL result of a valid stream whose samples differ from the manifest's."""
    expected = _read_expected(directory, entry)
    if expected is None:
        message = f"SHA-256 {digest[:16]}... differs from the expected {entry.sha256[:16]}..."
        return Result(entry.name, False, message + " (no expected samples to compare)", 0.0, digest)
    note = ""
    if hashlib.sha256(expected).hexdigest() != entry.sha256:
        note = f" (expected/{entry.expected} does not match the manifest hash)"
    where = first_difference(expected, image.planes, image.bit_depth)
    if where is not None:
        plane, row, column, want, got = where
        message = f"plane {plane}, row {row}, column {column}: expected {want}, got {got}"
        return Result(entry.name, False, message + note, 0.0, digest, where)
    message = f"decoded {len(raw)} bytes of samples, expected {len(expected)}"
    return Result(entry.name, False, message + note, 0.0, digest)


def check_entry(directory: str | Path, entry: SuiteEntry) -> Result:
    """Decode one stream of the suite with the reference decoder and judge the outcome."""
    from .decode import decode  # imports Numba: only when streams are decoded

    directory = Path(directory)
    start = time.perf_counter()
    try:
        data = (directory / STREAMS_DIR / entry.stream).read_bytes()
    except OSError as error:
        message = f"cannot read {STREAMS_DIR}/{entry.stream}: {error.strerror or error}"
        return Result(entry.name, False, message, 0.0)
    stages: dict[str, float] = {}
    try:
        image = decode(data, timings=stages)
    except StreamError as error:
        seconds = time.perf_counter() - start
        if entry.reject is None:
            return Result(entry.name, False, str(error), seconds)
        if entry.error is not None and entry.error not in str(error):
            # Conformance only asks for a rejection; the reference decoder must also
            # reject for the stated reason, or the stream does not test what it claims.
            message = f"rejected, but not with {entry.error!r}: {error}"
            return Result(entry.name, False, message, seconds)
        return Result(entry.name, True, f"rejected ({error})", seconds)
    except Exception as error:  # a crash is a failure of this stream, not of the run
        seconds = time.perf_counter() - start
        return Result(
            entry.name, False, f"internal error: {type(error).__name__}: {error}", seconds
        )
    seconds = time.perf_counter() - start
    if entry.reject is not None:
        message = f"decoded a picture, but spec section 9 rule {entry.reject} rejects the stream"
        return Result(entry.name, False, message, seconds)
    digest = image.sha256()
    if digest == entry.sha256:
        return Result(entry.name, True, "", seconds, digest, stage_seconds=stages)
    result = _mismatch(directory, entry, image, image.raw_bytes(), digest)
    result.seconds, result.stage_seconds = seconds, stages
    return result


def run_suite(directory: str | Path = "tests/conformance") -> list[Result]:
    """Check every stream of the suite in DIR; ManifestError if its manifest is unusable."""
    return [check_entry(directory, entry) for entry in load_manifest(directory)]


def summary_line(results: list[Result]) -> str:
    passed = sum(result.passed for result in results)
    return f"conformance: {passed} passed, {len(results) - passed} failed"


@click.command("conformance")
@click.argument(
    "directory",
    default="tests/conformance",
    required=False,
    type=click.Path(path_type=Path, file_okay=False),
)
@click.option("--timings", is_flag=True, help="Also print each stream's decoding time.")
def conformance_command(directory: Path, timings: bool) -> None:
    """Decode every stream of the conformance suite in DIRECTORY and check its samples.

    Prints PASS or FAIL (with the first differing sample) for each stream and a
    summary; exits with status 1 if any stream fails. DIRECTORY defaults to
    tests/conformance.
    """
    from .cli import CliError

    try:
        entries = load_manifest(directory)
    except ManifestError as error:
        raise CliError(f"error: {error}") from None
    if not entries:
        raise CliError(f"error: the manifest of {directory} lists no streams")
    results = []
    for entry in entries:
        result = check_entry(directory, entry)
        results.append(result)
        line = result.line()
        if timings:
            line += f" ({1000 * result.seconds:.1f} ms)"
        click.echo(line)
    click.echo(summary_line(results))
    if not all(result.passed for result in results):
        raise click.exceptions.Exit(1)
