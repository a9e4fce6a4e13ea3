"""The encoder's memory estimate and its refusal of encodes that would not fit."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coolchic_ref.encoder.cli import encode_command
from coolchic_ref.encoder.memory import (
    MemoryLimitError,
    available_memory,
    check_memory,
    estimate_peak_bytes,
    largest_fitting,
    parse_memory,
)
from coolchic_ref.encoder.presets import EncoderConfig

GIB = 1 << 30


def arch(op: str):
    return EncoderConfig(lmbda=1e-3, op=op).resolve_architecture(3)


def test_parse_memory() -> None:
    assert parse_memory("16G") == 16 * GIB
    assert parse_memory("512m") == 512 << 20
    assert parse_memory("1.5GiB") == int(1.5 * GIB)
    assert parse_memory("1000") == 1000
    for bad in ("", "lots", "-1G", "0", "12X"):
        with pytest.raises(ValueError, match="memory size"):
            parse_memory(bad)


def test_estimate_grows_with_pixels_and_operating_point() -> None:
    small, large = (estimate_peak_bytes(arch("2000"), h, w) for h, w in ((256, 256), (512, 768)))
    assert large > small
    per_op = [estimate_peak_bytes(arch(op), 512, 768) for op in ("500", "1000", "2000", "3000")]
    assert per_op == sorted(per_op)
    # Measured peaks (tools/results/memory.md) stay below the estimate, by less than a third.
    for op, (height, width), measured_mb in (("500", (1024, 1024), 1267),
                                             ("2000", (512, 768), 857),
                                             ("3000", (1024, 1024), 2395),
                                             ("2000", (2160, 3840), 12.4e9 / 2**20)):  # fmt: skip
        estimate = estimate_peak_bytes(arch(op), height, width) / 2**20
        assert 1.0 < estimate / measured_mb < 1.5, (op, estimate, measured_mb)


def test_refusal_names_the_largest_size_that_fits() -> None:
    a = arch("2000")
    limit = 4 * GIB
    with pytest.raises(MemoryLimitError) as info:
        check_memory(a, 2160, 3840, limit, "MemAvailable")
    message = str(info.value)
    assert "\n" not in message and "3840x2160" in message and "4.0 GiB available" in message
    w, h = largest_fitting(a, 2160, 3840, limit)
    assert f"about {w}x{h}" in message
    assert abs(w / h - 3840 / 2160) < 0.01
    assert estimate_peak_bytes(a, h, w) <= limit
    assert estimate_peak_bytes(a, h + 20, w + 36) > limit
    peak, report = check_memory(a, h, w, limit, "MemAvailable")
    assert report.startswith("memory: about ") and "4.0 GiB available" in report
    assert check_memory(a, 2160, 3840, None, "unknown")[1].endswith("at peak")
    assert largest_fitting(a, 10, 10, 1 << 20) == (0, 0)


def test_available_memory_reads_meminfo_and_the_cgroup(tmp_path: Path) -> None:
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal: 24000000 kB\nMemAvailable:   20000000 kB\n")
    assert available_memory(proc, cgroup).bytes == 20000000 * 1024
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory(proc, cgroup).source == "MemAvailable"
    (cgroup / "memory.max").write_text(f"{8 * GIB}\n")
    (cgroup / "memory.current").write_text(f"{GIB}\n")
    found = available_memory(proc, cgroup)
    assert (found.bytes, found.source) == (7 * GIB, "cgroup memory.max")
    assert available_memory(tmp_path / "none", tmp_path / "none") is None


@pytest.fixture
def tiny_png(tmp_path: Path) -> Path:
    import imageio.v3 as iio

    path = tmp_path / "tiny.png"
    iio.imwrite(path, np.random.default_rng(1).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    return path


def test_cli_refuses_before_training(tiny_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.cool"
    result = CliRunner().invoke(
        encode_command, [str(tiny_png), "-o", str(out), "--max-memory", "100M"]
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: a 24x16 encode needs about ")
    assert "0.1 GiB available (--max-memory)" in lines[0] and "no picture fits" in lines[0]
    assert not out.exists()
    bad = CliRunner().invoke(encode_command, [str(tiny_png), "-o", str(out), "--max-memory", "x"])
    assert bad.exit_code == 2 and "memory size" in bad.output


def test_cli_prints_the_estimate(tiny_png: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "x.cool"
    args = [str(tiny_png), "-o", str(out), "--preset", "instant", "--n_itr", "2", "--op", "500"]
    result = CliRunner().invoke(encode_command, [*args, "--max-memory", "64G"])
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^memory: about \d+\.\d GiB at peak \(64\.0 GiB available, --max-memory\)$",
        result.output,
        re.MULTILINE,
    ), result.output
    quiet = CliRunner().invoke(encode_command, [*args, "--max-memory", "off", "-q"])
    assert quiet.exit_code == 0 and "memory:" not in quiet.output
