"""Weight RDOQ on and off on the same trained models: RD cost and time.

    python tools/rdoq_experiment.py --images kodim01 kodim03 --lmbdas 0.001 0.004 \
        [--preset fast] [--workdir /tmp/rdoq] [--out results.jsonl]

For each picture (a 256x256 center crop of `<kodak>/<name>.png`) and lambda, trains one
model exactly as `encode` does (or loads it from `--workdir/<name>_<lambda>_<preset>.pt`),
then quantizes it twice, with and without RDOQ (`encoder/rdoq.py`), writes both streams,
decodes them with the reference decoder and prints one line each: bpp from the stream
length, PSNR and MSE of the decoded samples, RD cost MSE + lambda * bpp, and the
quantization time. Training once and quantizing twice compares the two at zero noise.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KODAK = ROOT.parent / "shared" / "data" / "kodak"
CROP = 256


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", nargs="+", default=["kodim01", "kodim03"])
    parser.add_argument("--lmbdas", nargs="+", type=float, default=[0.001, 0.004])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--kodak", type=Path, default=KODAK, help="Folder of the Kodak PNGs.")
    parser.add_argument("--workdir", type=Path, default=Path("rdoq-models"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1).")
    parser.add_argument("--out", type=Path, default=None, help="Append JSON lines here.")
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    import coolchic_ref
    from coolchic_ref.encoder.api import picture_targets, psnr_db
    from coolchic_ref.encoder.bitstream import write_stream
    from coolchic_ref.encoder.image_io import read_picture
    from coolchic_ref.encoder.presets import EncoderConfig
    from coolchic_ref.encoder.quantize import planes_mse, quantize_model
    from coolchic_ref.encoder.train import Trainer, build_model, resolve_device

    torch.set_num_threads(args.threads)
    device = resolve_device("cpu")
    args.workdir.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        picture = read_picture(args.kodak / f"{name}.png")
        y, x = (picture.height - CROP) // 2, (picture.width - CROP) // 2
        picture = replace(picture, planes=[p[y : y + CROP, x : x + CROP] for p in picture.planes])
        targets = picture_targets(picture, device)
        pixels = CROP * CROP
        for lmbda in args.lmbdas:
            config = EncoderConfig(lmbda=lmbda, preset=args.preset)
            arch = config.resolve_architecture(picture.color_format.n_channels)
            schedule = config.resolve_preset()
            path = args.workdir / f"{name}_{lmbda}_{args.preset}.pt"
            if path.exists():
                saved = torch.load(path, weights_only=False)
                model = build_model(arch, CROP, CROP, picture.color_format)
                model.load_state_dict(saved["state"])
            else:
                start = time.perf_counter()
                trainer = Trainer(
                    arch, targets, (CROP, CROP), picture.color_format, lmbda, schedule,
                    seed=0, device=device,
                )  # fmt: skip
                model = trainer.run()
                saved = {"state": model.state_dict(), "train_s": time.perf_counter() - start}
                torch.save(saved, path)
            for rdoq in (False, True):
                start = time.perf_counter()
                codec, report = quantize_model(
                    model, arch, picture.planes, picture.bit_depth, lmbda,
                    search=schedule.quant_search, rdoq=rdoq,
                )  # fmt: skip
                seconds = time.perf_counter() - start
                stream = write_stream(codec)
                decoded = [np.asarray(p) for p in coolchic_ref.decode(stream).planes]
                if any((a != b).any() for a, b in zip(decoded, report.planes, strict=True)):
                    raise SystemExit(f"{name} {lmbda}: closed-loop check failed")
                mse = planes_mse(decoded, picture.planes, picture.bit_depth)
                bpp = 8.0 * len(stream) / pixels
                record = {
                    "image": name,
                    "lmbda": lmbda,
                    "preset": args.preset,
                    "rdoq": rdoq,
                    "bpp": round(bpp, 5),
                    "psnr": round(psnr_db(mse), 4),
                    "rd_cost": mse + lmbda * bpp,
                    "weight_bits": report.weight_bits,
                    "latent_bits": round(report.latent_bits, 1),
                    "quantize_s": round(seconds, 1),
                    "train_s": round(saved.get("train_s", float("nan")), 1),
                    "rdoq_report": None if report.rdoq is None else vars(report.rdoq),
                }
                line = json.dumps(record)
                print(line, flush=True)
                if args.out is not None:
                    with args.out.open("a") as f:
                        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
