"""Command line of the fuzzing harness: `python -m tools.fuzz ...` (see tools/fuzz/__init__.py)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import tools.fuzz
from tools.fuzz.atheris_worker import worker_atheris
from tools.fuzz.cli_check import measure_main
from tools.fuzz.corpus import DEFAULT_SEEDS, load_corpus, make_seeds
from tools.fuzz.layout import declared_pixels
from tools.fuzz.oracle import Oracle
from tools.fuzz.slot import SharedSlot
from tools.fuzz.supervisor import print_summary, supervise
from tools.fuzz.worker import worker_mutate


def _add_campaign_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=60.0, help="wall time of the campaign")
    p.add_argument("--mode", choices=("mutate", "atheris"), default="mutate")
    p.add_argument(
        "--corpus", default=None, help="corpus directory (read, and new entries written)"
    )
    p.add_argument(
        "--seeds", default=str(DEFAULT_SEEDS), help="seed streams (default tests/fuzz_seeds)"
    )
    p.add_argument("--crashes", default="fuzz-crashes", help="where failing inputs are written")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument("--nojit", action="store_true", help="NUMBA_DISABLE_JIT=1: IndexError detector")
    p.add_argument("--threads", type=int, default=1, help="NUMBA_NUM_THREADS of the worker")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="skip decoding header-valid inputs declaring more pixels, for speed "
        "(default 2^20, with --nojit 1024)",
    )
    p.add_argument(
        "--cli-every", type=float, default=60.0, help="seconds between CLI checks (0: off)"
    )
    p.add_argument("--max-corpus", type=int, default=2000)
    p.add_argument(
        "--hang-seconds",
        type=float,
        default=10.0,
        help="a decode is a hang after 3x its time bound plus this",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["run", *argv]
    parser = argparse.ArgumentParser(
        prog="python -m tools.fuzz", description=tools.fuzz.__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="fuzz for --seconds with a supervised worker")
    _add_campaign_options(run)
    run.add_argument("--print-every", type=float, default=30.0)
    run.add_argument("--log", default=None, help="append the summary as JSON lines to this file")
    worker = sub.add_parser("_worker")
    _add_campaign_options(worker)
    worker.add_argument("--slot", default=None)
    replay = sub.add_parser("replay", help="run the oracle on files and print each outcome")
    replay.add_argument("files", nargs="+")
    replay.add_argument("--nojit", action="store_true")
    replay.add_argument("--json", action="store_true", help="one JSON object per file")
    replay.add_argument("--max-pixels", type=int, default=1 << 30)
    measure = sub.add_parser("_measure")
    measure.add_argument("file")
    seeds = sub.add_parser("make-seeds", help="write the seed streams (needs the encoder)")
    seeds.add_argument("directory", nargs="?", default=str(DEFAULT_SEEDS))
    args = parser.parse_args(argv)
    if getattr(args, "max_pixels", 0) is None and hasattr(args, "nojit"):
        args.max_pixels = 1024 if args.nojit else 1 << 20

    if args.command == "_measure":
        measure_main(args.file)
        return 0
    if args.command == "make-seeds":
        for path in make_seeds(Path(args.directory)):
            print(f"{path}  {path.stat().st_size} bytes")
        return 0
    if args.command == "replay":
        oracle = Oracle(jit=not args.nojit, max_pixels=args.max_pixels)
        # Then the memory limit applies. Multi-grid seeds start the grid threads.
        oracle.warm_up([s for s in load_corpus(DEFAULT_SEEDS) if declared_pixels(s) <= 64][:8])
        status = 0
        for name in args.files:
            result = oracle.run(Path(name).read_bytes())
            if args.json:
                record = {
                    "file": name,
                    "key": result.key,
                    "sha256": result.raw_sha256,
                    "finding": result.finding,
                    "detail": result.detail[-2000:],
                }
                print(json.dumps(record), flush=True)
            else:
                print(f"{name}: {result.key}  {result.seconds:.3f} s  {result.detail[-500:]}")
            status |= result.finding is not None
        return status
    if args.command == "_worker":
        slot = SharedSlot(args.slot) if args.slot else None
        if args.mode == "atheris":
            worker_atheris(args, slot)
        else:
            worker_mutate(args, slot)
        return 0

    def terminate(signum, frame) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    start = time.monotonic()
    totals = supervise(args)
    summary = print_summary(totals, time.monotonic() - start, args)
    if args.log:
        summary["outcomes"] = dict(totals.outcomes)
        summary["command"] = "python -m tools.fuzz " + " ".join(argv[1:])
        with open(args.log, "a") as f:
            f.write(json.dumps(summary) + "\n")
    return 1 if totals.findings or totals.crashes or totals.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
