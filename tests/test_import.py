"""The decoder never imports torch or the encoder (checked in fresh processes)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from handmade import make_stream

# Makes `import torch` and `import constriction` fail, as in a decoder-only install.
BLOCK = """
import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "constriction"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Block())
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_decode_does_not_import_torch(tmp_path: Path) -> None:
    stream = tmp_path / "s.cool"
    stream.write_bytes(make_stream(width=6, height=5, color_format=3, n_grids=2))
    result = run_python(
        f"""
        import sys
        import coolchic_ref
        from coolchic_ref import cli, info, output  # the command line's modules too
        image = coolchic_ref.decode(open({str(stream)!r}, "rb").read())
        assert len(image.planes) == 3
        leaked = sorted(m for m in sys.modules
                        if m.split(".")[0] == "torch" or m.startswith("coolchic_ref.encoder"))
        assert not leaked, leaked
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_decoder_works_without_torch(tmp_path: Path) -> None:
    stream = tmp_path / "s.cool"
    stream.write_bytes(make_stream(width=6, height=5, color_format=1, n_grids=2))
    out = tmp_path / "out.png"
    result = run_python(
        BLOCK
        + f"""
from click.testing import CliRunner
from coolchic_ref.cli import main
runner = CliRunner()
r = runner.invoke(main, ["decode", {str(stream)!r}, "-o", {str(out)!r}])
assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
r = runner.invoke(main, ["--help"])
assert r.exit_code == 0 and "encode" in r.output, r.output
r = runner.invoke(main, ["info", {str(stream)!r}])
assert r.exit_code == 0, r.output
assert "torch" not in sys.modules
# The encoder is unavailable: one line telling how to install it, non-zero exit.
r = runner.invoke(main, ["encode", "image.png", "-o", "x.cool"])
assert r.exit_code != 0
lines = r.stderr.strip().splitlines()
assert len(lines) == 1 and "pip install 'coolchic-ref[encoder]'" in lines[0], r.stderr
print("ok")
"""
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"
    assert out.exists()
