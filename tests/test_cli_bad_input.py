"""Hostile and broken input: every failure is one line on stderr, a non-zero exit, fast.

The bulk runs in-process (the API, and click's CliRunner); a sample runs the
real `coolchic-ref` console script in a subprocess, to prove that no traceback
escapes and that the exit codes reach the shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from handmade import HeaderFields, make_stream, pack_bits

from coolchic_ref import StreamError, decode
from coolchic_ref.cli import main
from coolchic_ref.syntax import HEADER_V1

EXIT_IO = 1
EXIT_INVALID_STREAM = 2


def encoder_stream() -> bytes | None:
    """A small stream with a real (non-constant) ARM from the encoder's writer, if installed."""
    try:
        from coolchic_ref.encoder.bitstream import write_stream
        from coolchic_ref.encoder.random_codec import random_codec
    except ImportError:
        return None
    rng = np.random.default_rng(7)
    codec = random_codec(rng, width=11, height=9, n_grids=3, color_format=3, bit_depth=10)
    return write_stream(codec)


@pytest.fixture(scope="module")
def valid_streams() -> list[bytes]:
    streams = [
        make_stream(width=9, height=7, color_format=1, n_grids=3, seed=1),
        make_stream(width=5, height=4, color_format=0, n_grids=2, seed=2, constant=True),
    ]
    extra = encoder_stream()
    if extra is not None:
        streams.append(extra)
    for data in streams:
        decode(data)  # valid, and compiles the kernels once
    return streams


def cli_command() -> list[str]:
    script = shutil.which("coolchic-ref")
    return [script] if script else [sys.executable, "-m", "coolchic_ref"]


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command() + args, capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr


def invoke(args: list[str]):
    result = CliRunner().invoke(main, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


# --- crafted bad streams ------------------------------------------------------------


def bad_streams() -> dict[str, bytes]:
    huge = HeaderFields(width=16384, height=1024, weights_bytes=1 << 20, grids=[(0, 9, 1 << 24)])
    return {
        "empty": b"",
        "wrong_magic": b"XXXX" + HeaderFields().stream()[4:],
        "unknown_version": HeaderFields(version=3).stream(),
        "huge_truncated": huge.pack() + bytes(1000),
        "trailing": HeaderFields().stream() + b"\x00",
        "zero_first_word": zero_first_word(),
    }


def zero_first_word() -> bytes:
    """A stream whose only defect is a substream starting with a zero word."""
    # 13 parameters (ARM 4 -> 2, one tap, synthesis 1x1), all 0: code "1" each at k = 0.
    weights = pack_bits("1" * 13)
    fields = HeaderFields(weights_bytes=len(weights), grids=[(0, 1, 4)])
    return fields.pack() + weights + bytes(4)


@pytest.mark.parametrize("name", list(bad_streams()))
def test_bad_stream_cli_in_process(name: str, tmp_path: Path, valid_streams: list[bytes]) -> None:
    # valid_streams: the kernels are compiled before the clock starts.
    stream = tmp_path / f"{name}.cool"
    stream.write_bytes(bad_streams()[name])
    out = tmp_path / "out.png"
    start = time.perf_counter()
    result = invoke(["decode", str(stream), "-o", str(out)])
    assert time.perf_counter() - start < 10
    assert result.exit_code == EXIT_INVALID_STREAM
    assert_one_line_error(result.stderr)
    assert not out.exists() and list(tmp_path.iterdir()) == [stream]


@pytest.mark.parametrize("name", ["empty", "wrong_magic", "unknown_version", "huge_truncated"])
def test_bad_stream_cli_subprocess(name: str, tmp_path: Path) -> None:
    stream = tmp_path / f"{name}.cool"
    stream.write_bytes(bad_streams()[name])
    out = tmp_path / "out.png"
    result = run_cli(["decode", str(stream), "-o", str(out)])
    assert result.returncode == EXIT_INVALID_STREAM, result.stderr
    assert_one_line_error(result.stderr)
    assert result.stdout == ""
    assert not out.exists()


def test_messages_name_the_problem(tmp_path: Path) -> None:
    expected = {
        "empty": "not a coolchic-ref stream",
        "wrong_magic": "not a coolchic-ref stream",
        "unknown_version": "unsupported version",
        "huge_truncated": "truncated stream",
        "trailing": "trailing data",
        "zero_first_word": "invalid substream start",
    }
    for name, data in bad_streams().items():
        with pytest.raises(StreamError, match=expected[name]):
            decode(data)


# --- truncation and corruption of valid streams -------------------------------------------


def test_every_truncation_is_rejected_api(valid_streams: list[bytes]) -> None:
    for data in valid_streams:
        for size in range(len(data)):
            with pytest.raises(StreamError):
                decode(data[:size])


def test_every_truncation_is_rejected_cli(valid_streams: list[bytes], tmp_path: Path) -> None:
    data = valid_streams[0]
    stream = tmp_path / "cut.cool"
    out = tmp_path / "out.png"
    runner = CliRunner()
    for size in range(len(data)):
        stream.write_bytes(data[:size])
        result = runner.invoke(main, ["decode", str(stream), "-o", str(out)])
        assert result.exit_code == EXIT_INVALID_STREAM, (size, result.output)
        assert_one_line_error(result.stderr)
        assert not out.exists()


def flipped(data: bytes, rng: np.random.Generator) -> bytes:
    """`data` with one byte XOR-ed with a random non-zero value."""
    corrupt = bytearray(data)
    position = int(rng.integers(len(data)))
    corrupt[position] ^= int(rng.integers(1, 256))
    return bytes(corrupt)


def test_random_byte_flips_decode_or_reject(valid_streams: list[bytes]) -> None:
    rng = np.random.default_rng(2024)
    outcomes = {"decoded": 0, "rejected": 0}
    for data in valid_streams:
        for _ in range(200):
            corrupt = flipped(data, rng)
            start = time.perf_counter()
            try:
                image = decode(corrupt)
            except StreamError as error:
                assert "\n" not in str(error)
                outcomes["rejected"] += 1
            else:
                assert len(image.planes) in (1, 3)
                assert all(p.dtype in (np.uint8, np.uint16) for p in image.planes)
                outcomes["decoded"] += 1
            assert time.perf_counter() - start < 30
    assert outcomes["rejected"] > 0


def test_random_byte_flips_cli_subprocess(valid_streams: list[bytes], tmp_path: Path) -> None:
    rng = np.random.default_rng(99)
    data = valid_streams[0]
    for index in range(4):
        stream = tmp_path / f"flip{index}.cool"
        stream.write_bytes(flipped(data, rng))
        out = tmp_path / f"flip{index}.png"
        result = run_cli(["decode", str(stream), "-o", str(out), "--quiet"])
        assert "Traceback" not in result.stderr
        if result.returncode == 0:
            assert out.exists() and result.stderr == ""
        else:
            assert result.returncode == EXIT_INVALID_STREAM, result.stderr
            assert_one_line_error(result.stderr)
            assert not out.exists()


def test_substream_size_mismatch(valid_streams: list[bytes]) -> None:
    # Append one zero word to grid 0's substream, and declare it in the header.
    data = bytearray(valid_streams[0])
    fields = {loc.name: loc for loc in HEADER_V1.locate(data)}
    size = fields["grid0.substream_bytes"].read(data)
    fields["grid0.substream_bytes"].write(data, size + 4)
    position = HEADER_V1.header_size(data) + fields["weights_bytes"].read(data) + size
    data[position:position] = b"\x00\x00\x00\x00"
    with pytest.raises(StreamError, match="substream size mismatch"):
        decode(bytes(data))


# --- files ------------------------------------------------------------------------------


def test_missing_input_file(tmp_path: Path) -> None:
    result = run_cli(["decode", str(tmp_path / "nope.cool"), "-o", str(tmp_path / "x.png")])
    assert result.returncode == EXIT_IO
    assert_one_line_error(result.stderr)
    assert "no such file" in result.stderr
    result = invoke(["info", str(tmp_path / "nope.cool")])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)


def test_input_is_a_directory(tmp_path: Path) -> None:
    result = invoke(["decode", str(tmp_path), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything"
)
def test_unreadable_input(valid_streams: list[bytes], tmp_path: Path) -> None:
    stream = tmp_path / "locked.cool"
    stream.write_bytes(valid_streams[0])
    stream.chmod(0)
    result = invoke(["decode", str(stream), "-o", str(tmp_path / "x.png")])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)


def test_output_directory_missing(valid_streams: list[bytes], tmp_path: Path) -> None:
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    result = run_cli(["decode", str(stream), "-o", str(tmp_path / "no" / "such" / "dir.png")])
    assert result.returncode == EXIT_IO
    assert_one_line_error(result.stderr)
    # A file where a directory should be.
    result = invoke(["decode", str(stream), "-o", str(stream / "x.png")])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere"
)
def test_output_directory_read_only(valid_streams: list[bytes], tmp_path: Path) -> None:
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli(["decode", str(stream), "-o", str(locked / "x.png")])
        assert result.returncode == EXIT_IO
        assert_one_line_error(result.stderr)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_output_is_a_directory(valid_streams: list[bytes], tmp_path: Path) -> None:
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    target = tmp_path / "taken.png"
    target.mkdir()
    result = invoke(["decode", str(stream), "-o", str(target)])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)


@pytest.mark.parametrize("name", ["out.jpg", "out", "out.yuv"])
def test_unsupported_output_choice(valid_streams: list[bytes], tmp_path: Path, name: str) -> None:
    # valid_streams[0] is RGB: no .yuv; .jpg and no extension are never written.
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    result = invoke(["decode", str(stream), "-o", str(tmp_path / name)])
    assert result.exit_code == EXIT_IO
    assert_one_line_error(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cool"]


def test_info_on_bad_stream(tmp_path: Path) -> None:
    stream = tmp_path / "bad.cool"
    stream.write_bytes(b"CCRF\x07")
    result = run_cli(["info", str(stream)])
    assert result.returncode == EXIT_INVALID_STREAM
    assert_one_line_error(result.stderr)


# --- interruption -------------------------------------------------------------------------


def test_interrupt_during_decode(
    valid_streams: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # The module, not the package attribute `coolchic_ref.decode` (the function).
    monkeypatch.setattr(sys.modules["coolchic_ref.decode"], "decode", interrupted)
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    result = invoke(["decode", str(stream), "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 130
    assert result.stderr.strip() == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cool"]


def test_interrupt_during_write_leaves_nothing(
    valid_streams: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    for name in ("out.png", "out.raw"):
        result = invoke(["decode", str(stream), "-o", str(tmp_path / name)])
        assert result.exit_code == 130
        assert result.stderr.strip() == "interrupted"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cool"]


def test_interrupt_keeps_an_existing_output(
    valid_streams: list[bytes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = tmp_path / "ok.cool"
    stream.write_bytes(valid_streams[0])
    previous = tmp_path / "out.raw"
    previous.write_bytes(b"previous content")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    result = invoke(["decode", str(stream), "-o", str(previous)])
    assert result.exit_code == 130
    assert previous.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.cool", "out.raw"]


def test_long_file_rejected_without_reading_it(valid_streams: list[bytes], tmp_path: Path) -> None:
    # 64 MiB of trailing data (a sparse file): rule 5 from the header, the file is mapped.
    stream = tmp_path / "long.cool"
    with open(stream, "wb") as file:
        file.write(valid_streams[0])
        file.truncate(len(valid_streams[0]) + (64 << 20))
    start = time.perf_counter()
    result = invoke(["decode", str(stream), "-o", str(tmp_path / "x.png")])
    assert time.perf_counter() - start < 5
    assert result.exit_code == EXIT_INVALID_STREAM
    assert "trailing data" in result.stderr
    assert_one_line_error(result.stderr)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_input_is_refused(tmp_path: Path) -> None:
    result = invoke(["decode", "/dev/zero", "-o", str(tmp_path / "x.png")])
    assert result.exit_code == EXIT_IO
    assert "not a regular file" in result.stderr
    assert_one_line_error(result.stderr)
