"""The supervisor: runs worker processes until the campaign's time is spent.

A worker that dies during a decode is a crash, one that passes its input's
deadline (read from the shared slot) is killed as a hang; either way the input
is saved and a new worker starts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tools.fuzz.corpus import ROOT, save_finding
from tools.fuzz.slot import SharedSlot


@dataclass
class Totals:
    execs: int = 0
    skipped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: int = 0
    cli_checks: int = 0
    crashes: int = 0
    hangs: int = 0
    restarts: int = 0
    worker_errors: int = 0

    def add(self, report: dict) -> None:
        self.execs += report["execs"]
        self.skipped += report["skipped"]
        self.findings += report["findings"]
        self.cli_checks += report["cli_checks"]
        self.outcomes.update(report["outcomes"])


def _worker_command(
    args: argparse.Namespace, seconds: float, seed: int, slot_path: str
) -> list[str]:
    """The worker's command line; it runs in the repository root, so paths are absolute."""
    cmd = [
        sys.executable, "-m", "tools.fuzz", "_worker",
        "--mode", args.mode, "--seconds", f"{seconds:.1f}", "--seed", str(seed),
        "--crashes", str(Path(args.crashes).resolve()), "--slot", slot_path,
        "--max-pixels", str(args.max_pixels), "--cli-every", str(args.cli_every),
        "--max-corpus", str(args.max_corpus), "--hang-seconds", str(args.hang_seconds),
    ]  # fmt: skip
    if args.corpus:
        cmd += ["--corpus", str(Path(args.corpus).resolve())]
    if args.seeds:
        cmd += ["--seeds", str(Path(args.seeds).resolve())]
    if args.nojit:
        cmd.append("--nojit")
    return cmd


def supervise(args: argparse.Namespace) -> Totals:
    """Run workers until --seconds are spent; restart dead or hung ones.

    A worker that dies during a decode (signal, abort) is a crash and one that
    passes its input's deadline is killed as a hang: in both cases the input is
    read back from the shared slot and saved. Ctrl-C / SIGTERM stop the campaign
    (and the worker) and still print the summary.
    """
    crashes = Path(args.crashes)
    crashes.mkdir(parents=True, exist_ok=True)
    totals = Totals()
    end = time.monotonic() + args.seconds
    start_wall = time.monotonic()
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None
    tmp = tempfile.mkdtemp(prefix="fuzz-slot-", dir=shm)
    slot_path = os.path.join(tmp, "slot")
    env = dict(os.environ)
    env.setdefault("NUMBA_NUM_THREADS", str(args.threads))
    if args.nojit:
        env["NUMBA_DISABLE_JIT"] = "1"
    incarnation = 0
    stop = False
    try:
        while not stop and time.monotonic() < end - 5:
            slot = SharedSlot(slot_path, create=True)
            seed = args.seed + 1000 * incarnation
            cmd = _worker_command(args, end - time.monotonic(), seed, slot_path)
            with open(crashes / "worker.log", "ab") as log:
                proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env=env)
                last: dict = {}

                def reader(stream=proc.stdout, sink=last) -> None:
                    for line in stream:
                        with contextlib.suppress(ValueError):
                            sink.update(json.loads(line))

                thread = threading.Thread(target=reader, daemon=True)
                thread.start()
                try:
                    verdict = _watch(proc, slot, end, args, totals, last, start_wall)
                except KeyboardInterrupt:
                    proc.kill()
                    proc.wait()
                    verdict, stop = "done", True
                    print("[fuzz] interrupted", flush=True)
                thread.join(timeout=5)
            if last:
                totals.add(last)
            count, _, _, data = slot.read()
            if verdict in ("crash", "hang") and data is not None:
                # Executions since the worker's last report are counted from the slot.
                totals.execs += max(0, count - last.get("decodes", 0))
                info = {
                    "outcome": f"finding:{verdict}",
                    "detail": f"worker {verdict}, exit status {proc.returncode}",
                    "jit": not args.nojit,
                    "worker_seed": seed,
                }
                path = save_finding(crashes, data, verdict, info)
                totals.crashes += verdict == "crash"
                totals.hangs += verdict == "hang"
                totals.outcomes[f"finding:{verdict}"] += 1
                print(f"[fuzz] worker {verdict}: input saved to {path}", flush=True)
            elif verdict == "crash":
                totals.worker_errors += 1
                print(
                    f"[fuzz] worker exited with status {proc.returncode} outside a decode; "
                    f"see {crashes / 'worker.log'}",
                    flush=True,
                )
                time.sleep(1)
            slot.map.close()
            incarnation += 1
            totals.restarts = incarnation - 1
            if verdict == "done":
                break
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return totals


def _watch(proc, slot, end, args, totals, last, start_wall) -> str:
    """Wait for a worker: 'done', 'crash' (died) or 'hang' (killed past its deadline)."""
    next_print = time.monotonic() + args.print_every
    while True:
        try:
            code = proc.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            return "done" if code == 0 else "crash"
        _, started, deadline, data = slot.read()
        now = time.monotonic()
        if data is not None and started > 0 and now > deadline:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "hang"
        if now > end + 120:  # a worker past its own end (a long decode): stop it
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return "done"
        if now >= next_print:
            next_print = now + args.print_every
            execs = totals.execs + last.get("execs", 0)
            elapsed = now - start_wall
            outcomes = len(set(totals.outcomes) | set(last.get("outcomes", {})))
            findings = totals.findings + last.get("findings", 0)
            print(
                f"[fuzz] {elapsed:7.0f} s  execs {execs:>10}  {execs / max(elapsed, 1e-9):8.1f}/s  "
                f"unique outcomes {outcomes:>4}  findings {findings}  crashes {totals.crashes}  "
                f"hangs {totals.hangs}",
                flush=True,
            )


def print_summary(totals: Totals, seconds: float, args: argparse.Namespace) -> dict:
    summary = {
        "mode": args.mode + (" nojit" if args.nojit else ""),
        "seconds": round(seconds, 1),
        "execs": totals.execs,
        "execs_per_s": round(totals.execs / max(seconds, 1e-9), 1),
        "skipped_large": totals.skipped,
        "unique_outcomes": len(totals.outcomes),
        "findings": totals.findings,
        "crashes": totals.crashes,
        "hangs": totals.hangs,
        "cli_checks": totals.cli_checks,
        "restarts": totals.restarts,
        "worker_errors": totals.worker_errors,
    }
    print("[fuzz] summary " + json.dumps(summary), flush=True)
    for key, count in sorted(totals.outcomes.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>10}  {key}")
    return summary
