"""The worker under libFuzzer (atheris): coverage-guided, with these mutations as its
custom mutator. atheris instruments the decoder modules as they are imported, so
nothing here (or in the modules it imports) imports `coolchic_ref` at module level.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tools.fuzz.corpus import load_corpus
from tools.fuzz.layout import declared_pixels
from tools.fuzz.mutate import Mutator
from tools.fuzz.slot import SharedSlot
from tools.fuzz.worker import Campaign


def worker_atheris(args: argparse.Namespace, slot: SharedSlot | None) -> None:
    import atheris

    include = [
        "coolchic_ref.syntax",
        "coolchic_ref.weights",
        "coolchic_ref.decode",
        "coolchic_ref.samples",
    ]
    if args.nojit:  # the kernels are plain Python then: cover them too
        include += [
            "coolchic_ref.latents",
            "coolchic_ref.upsampling",
            "coolchic_ref.synthesis",
            "coolchic_ref.layer_kernels",
        ]
    with atheris.instrument_imports(include=include):
        import coolchic_ref  # noqa: F401
        import coolchic_ref.decode  # noqa: F401
        import coolchic_ref.syntax  # noqa: F401
        import coolchic_ref.weights  # noqa: F401

        if args.nojit:
            import coolchic_ref.latents  # noqa: F401
            import coolchic_ref.synthesis  # noqa: F401
            import coolchic_ref.upsampling  # noqa: F401

    campaign = Campaign(args, slot)
    seeds = load_corpus(Path(args.seeds)) if args.seeds else []
    if args.nojit:
        seeds = [s for s in seeds if declared_pixels(s) <= 64]
    campaign.warm_up(seeds)
    rng = np.random.default_rng(args.seed)
    mutator = Mutator(rng, list(seeds))
    corpus_dir = Path(args.corpus)
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(seeds):  # libFuzzer starts from the corpus directory
        path = corpus_dir / f"seed-{index:03d}.cool"
        if not path.exists():
            path.write_bytes(data)

    def test_one_input(data: bytes) -> None:
        # Findings are saved by `record`; libFuzzer goes on (crashes and hangs are
        # caught by the supervisor through the slot).
        result = campaign.oracle.run(data)
        campaign.record(data, result, ["atheris"])
        campaign.periodic(0)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        mutator.rng = np.random.default_rng(seed)
        if mutator.rng.random() < 0.3:
            return atheris.Mutate(data, max_size)
        return mutator.mutate(data)[0][:max_size]

    argv = [
        sys.argv[0],
        str(corpus_dir),
        f"-max_total_time={max(1, int(args.seconds))}",
        f"-artifact_prefix={Path(args.crashes).resolve()}/",
        f"-max_len={1 << 16}",
        "-timeout=60",
        "-rss_limit_mb=8192",
        "-print_final_stats=1",
        f"-seed={args.seed & 0x7FFFFFFF}",
    ]
    Path(args.crashes).mkdir(parents=True, exist_ok=True)
    atheris.Setup(argv, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
