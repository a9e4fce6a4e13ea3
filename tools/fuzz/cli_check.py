"""The `coolchic-ref decode` CLI in a subprocess: exit code, one line, files, peak memory.

Also `measure_decode`, the peak resident growth of one decode in a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.fuzz.corpus import DEFAULT_SEEDS, ROOT, load_corpus
from tools.fuzz.oracle import Oracle, Result, outcome_key

# Runs `coolchic-ref` exactly as its console script does (cli.main) and writes the
# process's resident high-water mark (VmHWM, KiB) to a file at exit. A child's
# ru_maxrss (os.wait4) is no use here: Linux folds the parent's resident size at
# fork time into it, and the fuzz worker is large.
_CLI_WRAPPER = """
import atexit, sys
hwm_path = sys.argv.pop(1)
def report():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(hwm_path, 'w').write(line.split()[1])
atexit.register(report)
sys.argv[0] = 'coolchic-ref'
from coolchic_ref.cli import main
main(prog_name='coolchic-ref')
"""


def run_cli(args: list[str], cwd: Path, timeout: float) -> tuple[int | None, bytes, bytes, int]:
    """Run `coolchic-ref ARGS` in a subprocess with the default thread count.

    Returns (exit status or None on timeout, stdout, stderr, peak RSS in bytes,
    -1 if unknown, e.g. after a signal).
    """
    drop = ("NUMBA_NUM_THREADS", "NUMBA_DISABLE_JIT", "COOLCHIC_FUZZ_SELFTEST")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    with tempfile.TemporaryDirectory(prefix="fuzz-hwm-") as tmp:
        hwm = Path(tmp) / "hwm"
        cmd = [sys.executable, "-c", _CLI_WRAPPER, str(hwm), *args]
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, capture_output=True, env=env, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            return None, b"", b"", -1
        peak = 1024 * int(hwm.read_text()) if hwm.exists() else -1
        return proc.returncode, proc.stdout, proc.stderr, peak


def run_cli_check(data: bytes, expected: Result, oracle: Oracle, baseline_rss: int) -> str:
    """Decode `data` with the CLI in a subprocess; '' if all is well, else the problem.

    Checks: exit 0 with the in-process raw samples, or 2 with one line on stderr;
    the output exists only on success and nothing else appears in the directory;
    peak RSS (VmHWM) of the CLI at most `baseline_rss` + the memory bound.
    """
    _, t_bound, m_bound = oracle.bounds(data)
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as tmp:
        folder = Path(tmp)
        stream = folder / "in.cool"
        stream.write_bytes(data)
        out = folder / "out.raw"
        args = ["decode", str(stream), "-o", str(out), "--quiet"]
        code, stdout, stderr, rss = run_cli(args, folder, 60 + 3 * t_bound)
        if code is None:
            return "CLI timed out"
        files = sorted(p.name for p in folder.iterdir())
        text = stderr.decode(errors="replace")
        if expected.key == "ok":
            if code != 0:
                return f"CLI exit {code} on a valid stream: {text.strip()[:200]}"
            if hashlib.sha256(out.read_bytes()).hexdigest() != expected.raw_sha256:
                return "CLI raw samples differ from the in-process decode (threads?)"
            if files != ["in.cool", "out.raw"]:
                return f"unexpected files {files}"
        elif expected.key.startswith("reject"):
            lines = text.strip().splitlines()
            if code != 2:
                return f"CLI exit {code} on an invalid stream: {text.strip()[:200]}"
            if len(lines) != 1 or not lines[0].startswith("error: ") or "Traceback" in text:
                return f"CLI stderr is not one error line: {text[:300]!r}"
            if files != ["in.cool"]:
                return f"unexpected files after a rejection: {files}"
        if stdout:
            return f"CLI printed on stdout with --quiet: {stdout[:100]!r}"
        if rss > baseline_rss + m_bound:
            return (
                f"CLI peak RSS {rss >> 20} MiB > baseline {baseline_rss >> 20} MiB "
                f"+ bound {m_bound >> 20} MiB"
            )
    return ""


# The stream of `cli_baseline_rss`: the smallest valid picture (1x1, one grid).
BASELINE_SEED = DEFAULT_SEEDS / "seed00-1x1.cool"


def cli_baseline_rss() -> int:
    """Peak RSS (bytes) of the CLI decoding the 1x1 seed to .raw, as the CLI check does.

    The CLI check compares an input's peak with this plus the bound of spec 9.3,
    so the baseline must be a process that has done everything no input is
    responsible for: started Python, imported Numba (decode() imports it on its
    first call, after the header checks), loaded the kernels, started the
    threads, written a .raw file. Hence:
    - the peak is the CLI's own VmHWM, not os.wait4's ru_maxrss of the child:
      Linux folds the parent's resident high-water mark into that at exec
      (vfork/fork + exec), so it would report the fuzz worker's peak;
    - the baseline is a valid stream, not the first input sampled: a CLI that
      rejects its input on rules 1-5 never imports Numba (about 35 MiB against
      about 165 MiB for a 1x1 decode).
    """
    with tempfile.TemporaryDirectory(prefix="fuzz-cli-") as tmp:
        args = ["decode", str(BASELINE_SEED), "-o", str(Path(tmp) / "o.raw"), "-q"]
        code, _, stderr, peak = run_cli(args, Path(tmp), 120)
        if code != 0 or peak <= 0:
            raise RuntimeError(f"CLI baseline decode failed ({code}): {stderr[-300:]!r}")
        return peak


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def measure_main(path: str) -> None:
    """Child side of `measure_decode`: warm up, reset the RSS high-water mark, decode."""
    from coolchic_ref import StreamError, decode

    seeds = load_corpus(DEFAULT_SEEDS)[:1]
    for seed in seeds:
        decode(seed)
    data = Path(path).read_bytes()
    exact = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
        before = _status_kib("VmRSS")
    except OSError:
        exact = False
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        decode(data)
        key = "ok"
    except StreamError as error:
        key = outcome_key("reject", str(error))
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth = 1024 * (peak - before)
    print(json.dumps({"key": key, "seconds": seconds, "growth": growth, "exact": exact}))


def measure_decode(path: Path, timeout: float = 600) -> dict:
    """Decode `path` in a fresh process; its key, seconds and peak RSS growth (bytes).

    The growth is the resident high-water mark during the decode minus the
    resident size just before it (the mark is reset through
    /proc/self/clear_refs), so imports and kernel loading do not count.
    """
    cmd = [sys.executable, "-m", "tools.fuzz", "_measure", str(Path(path).resolve())]
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])
