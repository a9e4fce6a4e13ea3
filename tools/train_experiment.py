"""Training-recipe experiments: train one model, print its hard-rounded loss log.

    python tools/train_experiment.py NAME [--image kodim01.png] [--crop Y,X,H,W | none]
        [--lmbda 1e-3] [--preset fast] [--set '{"latent_lr_scale": 3.0}']
        [--op 2000] [--layers-synthesis ...] [--layers-arm ...] [--threads 1]
        [--seed 0] [--encode] [--out results/experiments.jsonl]

Trains exactly as `coolchic-ref encode` does (same Trainer, schedule and model), but
stops before the weight quantization and the stream: the figure of merit is the loss
with hard-rounded latents of the float model (MSE + lambda * estimated bpp, printed x
1e3), which the quantization changes by well under 1 % (see the encoder JSON's
`psnr_float_db` and `psnr_db`). `--set` overrides fields of the preset (`Preset` in
`encoder/presets.py`: phase1_itr, phase2_itr, start_lr, phase2_lr, latent_lr_scale,
warmup_candidates, warmup_itr, eval_every, and the phase-1 schedules temperature,
noise and noise_param, e.g. `--set '{"noise": "kumaraswamy", "noise_param": [2, 1]}'`).
A crop makes a run several times shorter; results on crops do not always carry over
to the full picture, check the winner there.

`--encode` runs the whole encoder instead (`coolchic_ref.encoder.encode`, with the
modified preset): training, weight quantization, stream, closed-loop decoding. Its
figure of merit is then the RD cost of the decoded picture, `rd_e3` = (MSE + lambda *
bpp) x 1e3, with the stream's real bpp (weights and header included) and the MSE of
the integer decoder's output, as the encoder's JSON reports them.

One JSON line per run goes to stdout and, with --out, is appended to a file: name,
final loss, PSNR, bpp, seconds, the options and the evaluation log.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT.parent / "shared" / "data" / "kodak" / "kodim01.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("name", help="Label of this run in the output.")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument(
        "--crop", default="256,192,256,256", help="Y,X,H,W of the crop, or 'none' (whole picture)."
    )
    parser.add_argument("--lmbda", type=float, default=1e-3)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--set", default="{}", help="JSON object of preset fields to override.")
    parser.add_argument("--op", default="2000")
    parser.add_argument("--layers-synthesis", default=None)
    parser.add_argument("--layers-arm", default=None)
    parser.add_argument("--n-ctx-rowcol", type=int, default=None)
    parser.add_argument(
        "--cross-grids",
        type=int,
        default=None,
        help="v2 cross-grid context C (default: the operating point's, 3; 0 = the v1 ARM).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--out", type=Path, default=None, help="Append the JSON line here.")
    parser.add_argument(
        "--encode", action="store_true", help="Run the whole encoder; report the stream's RD cost."
    )
    args = parser.parse_args(argv)

    import torch

    from coolchic_ref.encoder.api import picture_targets
    from coolchic_ref.encoder.image_io import read_picture
    from coolchic_ref.encoder.presets import PRESETS, EncoderConfig
    from coolchic_ref.encoder.train import Trainer, evaluate, resolve_device

    torch.set_num_threads(args.threads)
    picture = read_picture(args.image)
    if args.crop != "none":
        try:
            y, x, h, w = (int(v) for v in args.crop.split(","))
        except ValueError:
            parser.error(f"--crop {args.crop!r}: expected four integers Y,X,H,W")
        # Slicing would silently cut a crop that overhangs the picture: refuse it instead.
        if min(y, x) < 0 or min(h, w) < 1 or y + h > picture.height or x + w > picture.width:
            parser.error(
                f"--crop {args.crop}: rows {y}..{y + h - 1}, columns {x}..{x + w - 1} are not "
                f"inside the {picture.height}x{picture.width} picture"
            )
        picture = replace(picture, planes=[p[y : y + h, x : x + w] for p in picture.planes])
    if args.preset not in PRESETS:
        parser.error(f"--preset: unknown preset {args.preset!r} (choose from {', '.join(PRESETS)})")
    try:
        overrides = json.loads(args.set)
    except json.JSONDecodeError as error:
        parser.error(f"--set: not JSON ({error})")
    if not isinstance(overrides, dict):
        parser.error("--set: must be a JSON object")
    known = {f.name for f in fields(PRESETS[args.preset])}
    if set(overrides) - known:
        parser.error(f"--set: unknown preset field(s) {sorted(set(overrides) - known)}")
    try:
        preset = replace(PRESETS[args.preset], **overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--set: {error}")
    if args.encode:
        return encode_experiment(args, picture, preset)
    config = EncoderConfig(
        lmbda=args.lmbda,
        op=args.op,
        layers_synthesis=args.layers_synthesis,
        layers_arm=args.layers_arm,
        n_ctx_rowcol=args.n_ctx_rowcol,
        cross_grids=args.cross_grids,
    )
    arch = config.resolve_architecture(
        picture.color_format.n_channels, picture.width * picture.height
    )
    device = resolve_device("cpu")
    targets = picture_targets(picture, device)
    start = time.perf_counter()
    trainer = Trainer(
        arch,
        targets,
        (picture.height, picture.width),
        picture.color_format,
        args.lmbda,
        preset,
        seed=args.seed,
        device=device,
    )
    metrics = evaluate(trainer.run(), targets, args.lmbda)
    record = {
        "name": args.name,
        "loss_e3": round(metrics.loss * 1e3, 5),
        "psnr": round(metrics.psnr, 3),
        "bpp": round(metrics.bpp, 5),
        "seconds": round(time.perf_counter() - start, 1),
        "image": args.image.name,
        "size": [picture.height, picture.width],
        "lmbda": args.lmbda,
        "preset": asdict(preset),
        "architecture": arch.describe(),
        "log": [[e["stage"], e["itr"], round(e["loss"] * 1e3, 5)] for e in trainer.log],
    }
    write_record(record, args.out)
    return 0


def write_record(record: dict, out: Path | None) -> None:
    """Print the record as one JSON line; append it to `out` if given."""
    line = json.dumps(record)
    print(line)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            f.write(line + "\n")


def encode_experiment(args: argparse.Namespace, picture, preset) -> int:
    """Encode with the modified preset; record the stream's bpp, PSNR and RD cost."""
    from coolchic_ref.encoder import presets
    from coolchic_ref.encoder.api import encode

    name = "experiment"
    presets.PRESETS[name] = replace(preset, name=name)
    options = {
        k: v
        for k, v in (
            ("layers_synthesis", args.layers_synthesis),
            ("layers_arm", args.layers_arm),
            ("n_ctx_rowcol", args.n_ctx_rowcol),
        )
        if v is not None
    }
    result = encode(picture, args.lmbda, name, op=args.op, seed=args.seed, device="cpu", **options)
    details = result.details
    record = {
        "name": args.name,
        "rd_e3": round((result.mse + args.lmbda * result.bpp) * 1e3, 5),
        "psnr": round(result.psnr, 3),
        "bpp": round(result.bpp, 5),
        "seconds": round(result.seconds, 1),
        "train_loss_e3": round(details["train_loss"] * 1e3, 5),
        "image": args.image.name,
        "crop": args.crop,
        "size": [picture.height, picture.width],
        "lmbda": args.lmbda,
        "seed": args.seed,
        "op": details["op"],
        "weight_bits": details["weight_bits"],
        "timings": {k: round(v, 2) for k, v in details["timings"].items()},
        "preset": asdict(preset),
        "log": [
            [e["stage"], e["itr"], round(e["loss"] * 1e3, 5)] for e in details["train_evaluations"]
        ],
    }
    write_record(record, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
