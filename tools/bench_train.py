"""Encoder training speed: seconds per iteration, per training phase.

    python tools/bench_train.py [--image ../shared/data/kodak/kodim01.png] [--op 2000]
                                [--iters 20] [--threads 2] [--device cpu]
                                [--optimizers soap,adam] [--branches]

Builds the model of operating point `--op` for the picture, then times `--iters`
training iterations (forward, backward, Adam step) of each kind: phase 1 (soft
rounding + the `medium` preset's noise) and phase 2 (straight-through rounding),
plus the hard-rounding evaluation. The first `--warmup` iterations of each kind are
not counted. Prints the median and the spread (min-max) in milliseconds, and the
derived time of each preset's schedule.

`--optimizers soap,adam:0` times the same steps with each optimizer of the networks
(the preset field `optimizer`; after a colon, the gradient clipping norm, 0 = none),
alternating between them in rounds of `--iters` so that all see the same load on a
shared machine.

`--branches` adds the same steps with the rate branch on a second thread
(`train.backward_pass`, what pictures of up to 65536 pixels get; use it with
`--threads 1`).

`--plain` times the same model with the straightforward formulation that the
encoder's hand-written pieces replace, for a before/after ratio measured in one
run: autograd through the padded slices of the ARM contexts, through `F.conv2d`
for the upsampling passes and through `F.conv2d` for the k x k synthesis layers
(instead of `model._Contexts`, `model._UpsamplePass` and `model._Conv`), and
glibc's default allocator settings (instead of `train.cpu_allocator_tuned`).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "kodak" / "kodim01.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--op", default="2000")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--plain", action="store_true", help="time the plain-autograd formulation too"
    )
    parser.add_argument(
        "--optimizers", default="", help="comma-separated networks' optimizers to compare"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds with --optimizers")
    parser.add_argument(
        "--branches",
        action="store_true",
        help="also time the steps with the rate branch on a second thread "
        "(train.backward_pass; what pictures of up to 65536 pixels get)",
    )
    args = parser.parse_args()
    if args.optimizers:
        compare_optimizers(args, args.optimizers.split(","))
        return 0
    variants = ["tuned", "plain"] if args.plain else ["tuned"]
    if args.branches:
        variants.append("branches")
    for variant in variants:
        bench(args, variant)
    return 0


def plain_contexts(grids, n_ctx_rowcol: int, cross_grids: int = 0):
    """ARM contexts by autograd through slices of the zero-padded grids (the spatial rows,
    then the `cross_grids` co-located latents of the coarser grids, bitstream v2)."""
    import torch
    import torch.nn.functional as F

    from coolchic_ref.encoder.format import context_offsets

    r = n_ctx_rowcol
    blocks = []
    for g, y in enumerate(grids):
        h, w = y.shape
        padded = F.pad(y, (r, r, r, 0))
        rows = [
            padded[r + dy : r + dy + h, r + dx : r + dx + w].reshape(-1)
            for dy, dx in context_offsets(r)
        ]
        for k in range(1, cross_grids + 1):
            if g + k < len(grids):
                ys = torch.arange(h, device=y.device) >> k
                xs = torch.arange(w, device=y.device) >> k
                rows.append(grids[g + k][ys][:, xs].reshape(-1))
            else:
                rows.append(y.new_zeros(h * w))
        blocks.append(torch.stack(rows))
    return torch.cat(blocks, dim=1)


class PlainUpsamplePass:
    """One 1-D upsampling pass with autograd through replicate padding and conv2d."""

    @staticmethod
    def apply(x, kernel, n_out: int, vertical: bool):
        import torch.nn.functional as F

        from coolchic_ref.encoder.model import replicate_pad

        c, h, w = x.shape
        k = kernel.shape[1]
        if vertical:
            xp = replicate_pad(x, k // 2, 0)
            y = F.conv2d(xp.unsqueeze(1), kernel.view(2, 1, k, 1))
            return y.permute(0, 2, 1, 3).reshape(c, 2 * h, w)[:, :n_out]
        xp = replicate_pad(x, 0, k // 2)
        y = F.conv2d(xp.unsqueeze(1), kernel.view(2, 1, 1, k))
        return y.permute(0, 2, 3, 1).reshape(c, h, 2 * w)[:, :, :n_out]


class PlainConv:
    """A k x k synthesis convolution with Torch's own convolution backward."""

    @staticmethod
    def apply(padded, weight, bias):
        import torch.nn.functional as F

        return F.conv2d(padded.unsqueeze(0), weight, bias)[0]


def bench(args: argparse.Namespace, variant: str) -> None:
    """Time the training iterations of one variant ("tuned" or "plain") and print them."""

    import torch

    from coolchic_ref.encoder import model as model_module
    from coolchic_ref.encoder.api import picture_targets
    from coolchic_ref.encoder.image_io import read_picture
    from coolchic_ref.encoder.presets import PRESETS, EncoderConfig
    from coolchic_ref.encoder.train import Trainer, cpu_allocator_tuned, evaluate, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    picture = read_picture(args.image)
    targets = picture_targets(picture, device)
    arch = EncoderConfig(op=args.op).resolve_architecture(picture.color_format.n_channels)
    preset = PRESETS["medium"]
    trainer = Trainer(
        arch,
        targets,
        (picture.height, picture.width),
        picture.color_format,
        1e-3,
        preset,
        seed=0,
        device=device,
    )
    model = trainer._new_model(0)
    optimizer = trainer._optimizer(model, preset.start_lr)
    stages = {s.kind: s for s in trainer._stages()}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn) -> list[float]:
        times = []
        for i in range(args.warmup + args.iters):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        return times

    results = {}
    if variant == "plain":
        model_module.arm_contexts = plain_contexts
        model_module._UpsamplePass = PlainUpsamplePass
        model_module._Conv = PlainConv
    allocator = cpu_allocator_tuned(device) if variant != "plain" else contextlib.nullcontext()
    if variant == "branches":
        from concurrent.futures import ThreadPoolExecutor

        trainer._rate_thread = ThreadPoolExecutor(1)
    try:
        with allocator:
            for kind in ("phase1", "phase2"):
                stage = stages[kind]
                results[kind] = timed(
                    lambda stage=stage: trainer._step(model, optimizer, stage, 10, stage.name)
                )
            results["evaluate"] = timed(lambda: evaluate(model, targets, 1e-3))
    finally:
        if trainer._rate_thread is not None:
            trainer._rate_thread.shutdown()
            trainer._rate_thread = None

    print(
        f"[{variant}] {args.image.name} {picture.width}x{picture.height}, op {args.op}, "
        f"device {device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'kind':10s} {'median ms':>10s} {'min':>8s} {'max':>8s}")
    for kind, times in results.items():
        ms = [1000 * t for t in times]
        print(f"{kind:10s} {statistics.median(ms):10.1f} {min(ms):8.1f} {max(ms):8.1f}")
    p1 = statistics.median(results["phase1"])
    p2 = statistics.median(results["phase2"])
    ev = statistics.median(results["evaluate"])
    print("derived schedule time (training only, no quantization search):")
    for name, p in PRESETS.items():
        n1 = p.warmup_candidates * p.warmup_itr + p.phase1_itr
        n_eval = (p.phase1_itr + p.phase2_itr) // max(1, p.eval_every) + p.warmup_candidates
        seconds = n1 * p1 + p.phase2_itr * p2 + n_eval * ev
        print(f"  {name:8s} {p.total_itr:6d} itr  {seconds:8.0f} s")


def compare_optimizers(args: argparse.Namespace, kinds: list[str]) -> None:
    """Median ms per phase-1 step with each networks' optimizer, timed in alternation."""
    import torch

    from coolchic_ref.encoder.api import picture_targets
    from coolchic_ref.encoder.image_io import read_picture
    from coolchic_ref.encoder.model import n_channels_of
    from coolchic_ref.encoder.presets import PRESETS, EncoderConfig
    from coolchic_ref.encoder.train import Trainer, cpu_allocator_tuned, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    picture = read_picture(args.image)
    targets = picture_targets(picture, device)
    arch = EncoderConfig(op=args.op).resolve_architecture(n_channels_of(picture.color_format))
    runs = {}
    for kind in kinds:
        name, _, clip = kind.partition(":")
        preset = replace(PRESETS["medium"], optimizer=name)
        if clip:
            preset = replace(preset, grad_clip=float(clip))
        trainer = Trainer(
            arch, targets, (picture.height, picture.width), picture.color_format, 1e-3,
            preset, seed=0, device=device,
        )  # fmt: skip
        model = trainer._new_model(0)
        stage = next(s for s in trainer._stages() if s.kind == "phase1")
        runs[kind] = (trainer, model, trainer._optimizer(model, preset.start_lr), stage)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    with cpu_allocator_tuned(device):
        for _ in range(args.rounds):
            for kind, (trainer, model, optimizer, stage) in runs.items():
                for i in range(args.warmup + args.iters):
                    t0 = time.perf_counter()
                    trainer._step(model, optimizer, stage, 10, stage.name)
                    if i >= args.warmup:
                        times[kind].append(time.perf_counter() - t0)
    print(
        f"{args.image.name} {picture.width}x{picture.height}, op {args.op}, "
        f"{torch.get_num_threads()} threads, phase-1 step"
    )
    first = statistics.median(times[kinds[0]])
    for kind in kinds:
        ms = statistics.median(times[kind]) * 1000
        print(f"{kind:6s} median {ms:8.1f} ms  ratio to {kinds[0]} {ms / 1000 / first:.3f}")


if __name__ == "__main__":
    sys.exit(main())
