"""The worker: the mutation loop with the oracle, its statistics and CLI samples.

`Campaign` is shared with the atheris worker (tools/fuzz/atheris_worker.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tools.fuzz.cli_check import cli_baseline_rss, run_cli_check
from tools.fuzz.corpus import load_corpus, save_finding
from tools.fuzz.layout import declared_pixels
from tools.fuzz.mutate import Mutator
from tools.fuzz.oracle import Oracle, Result, outcome_key
from tools.fuzz.slot import SharedSlot


@dataclass
class Stats:
    execs: int = 0
    decodes: int = 0  # oracle runs, confirmations of slow inputs included
    skipped: int = 0
    outcomes: Counter = field(default_factory=Counter)
    findings: int = 0
    cli_checks: int = 0

    def to_json(self, corpus: int) -> str:
        return json.dumps(
            {
                "execs": self.execs,
                "decodes": self.decodes,
                "skipped": self.skipped,
                "findings": self.findings,
                "cli_checks": self.cli_checks,
                "corpus": corpus,
                "outcomes": dict(self.outcomes),
            }
        )


class Campaign:
    """Shared by the mutate loop and the atheris callback: run, record, report."""

    def __init__(self, args: argparse.Namespace, slot: SharedSlot | None) -> None:
        self.args = args
        self.jit = not args.nojit
        self.oracle = Oracle(
            jit=self.jit, max_pixels=args.max_pixels, slot=slot, hang_seconds=args.hang_seconds
        )
        self.crashes = Path(args.crashes)
        self.corpus_dir = Path(args.corpus) if args.corpus else None
        self.stats = Stats()
        self.seen_findings: Counter = Counter()
        self.last_report = time.monotonic()
        self.last_cli = time.monotonic()
        self.recent: list[tuple[bytes, Result]] = []
        self.cli_baseline = 0

    def warm_up(self, seeds: list[bytes]) -> None:
        """Compile the kernels by decoding the seeds (no clock, no memory limit)."""
        self.oracle.warm_up(seeds)

    def record(self, data: bytes, result: Result, trail: list[str]) -> bool:
        """Count an outcome; save a finding; True if the outcome class is new."""
        if result.key.startswith("skip"):
            self.stats.skipped += 1
            return False
        self.stats.execs += 1
        new = result.key not in self.stats.outcomes
        self.stats.outcomes[result.key] += 1
        if result.finding == "slow":
            # Confirm on a second run: the machine is shared.
            again = self.oracle.run(data)
            if again.finding != "slow":
                return new
        if result.finding is not None:
            self.stats.findings += 1
            self.seen_findings[result.key] += 1
            if self.seen_findings[result.key] <= 20:
                save_finding(
                    self.crashes,
                    data,
                    result.finding,
                    {
                        "outcome": result.key,
                        "detail": result.detail,
                        "mutations": trail,
                        "jit": self.jit,
                        "seconds": result.seconds,
                    },
                )
        if len(self.recent) < 64 or self.oracle.count % 97 == 0:
            if len(self.recent) >= 64:
                self.recent.pop(0)
            self.recent.append((data, result))
        return new

    def periodic(self, corpus_size: int) -> None:
        self.stats.decodes = self.oracle.count
        now = time.monotonic()
        if self.args.cli_every > 0 and now - self.last_cli > self.args.cli_every and self.recent:
            self.last_cli = now
            self.cli_sample()
        if now - self.last_report > 1.0:
            self.last_report = now
            print(self.stats.to_json(corpus_size), flush=True)

    def cli_sample(self) -> None:
        """One CLI check on a recent input (outside the memory limit and the slot)."""
        rng = np.random.default_rng(self.stats.execs)
        data, result = self.recent[int(rng.integers(len(self.recent)))]
        if result.finding is not None:
            return
        if not self.cli_baseline:
            self.cli_baseline = cli_baseline_rss()
        problem = run_cli_check(data, result, self.oracle, self.cli_baseline)
        self.stats.cli_checks += 1
        if problem:
            self.stats.findings += 1
            self.stats.outcomes[outcome_key("finding:cli", problem[:40])] += 1
            save_finding(self.crashes, data, "cli", {"outcome": result.key, "detail": problem})


def worker_mutate(args: argparse.Namespace, slot: SharedSlot | None) -> None:
    campaign = Campaign(args, slot)
    seeds = load_corpus(Path(args.seeds)) if args.seeds else []
    extra = load_corpus(campaign.corpus_dir)
    if args.nojit:  # pure-Python kernels: tiny pictures only
        seeds = [s for s in seeds if declared_pixels(s) <= 64]
    corpus = seeds + extra
    if not corpus:
        raise SystemExit("no seed streams: give --seeds DIR or --corpus DIR with *.cool files")
    campaign.warm_up(corpus)
    rng = np.random.default_rng(args.seed)
    mutator = Mutator(rng, corpus)
    n_seeds = len(corpus)
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        # Half the time a seed, else a corpus entry (new outcome classes, valid variants).
        if rng.random() < 0.5 or len(corpus) == n_seeds:
            parent = corpus[int(rng.integers(n_seeds))]
        else:
            parent = corpus[n_seeds + int(rng.integers(len(corpus) - n_seeds))]
        data, trail = mutator.mutate(parent)
        result = campaign.oracle.run(data)
        new = campaign.record(data, result, trail)
        keep = new or (result.key == "ok" and rng.random() < 0.02)
        if keep and result.finding is None and len(data) <= 1 << 16:
            if len(corpus) - n_seeds >= args.max_corpus:
                corpus.pop(n_seeds + int(rng.integers(len(corpus) - n_seeds)))
            corpus.append(data)
            if campaign.corpus_dir is not None and new:
                campaign.corpus_dir.mkdir(parents=True, exist_ok=True)
                name = hashlib.sha256(data).hexdigest()[:16]
                (campaign.corpus_dir / f"{name}.cool").write_bytes(data)
        campaign.periodic(len(corpus))
    print(campaign.stats.to_json(len(corpus)), flush=True)
