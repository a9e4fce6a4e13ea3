"""`encode()`: picture in, verified stream out.

    from coolchic_ref.encoder import encode
    result = encode("kodim01.png", lmbda=1e-3, preset="fast")
    open("kodim01.cool", "wb").write(result.stream)
    result.bpp, result.psnr, result.mac_per_pixel, result.seconds

Steps: read the picture, train (`train.py`), quantize (`quantize.py`), write the
stream (`bitstream.py`), then the closed-loop check: the reference decoder
(`coolchic_ref.decode`) decodes the stream and its samples must equal, one by one, the
encoder's own prediction (`integer_model.simulate_decode`). Any difference raises
`ClosedLoopError`: it means the spec, the decoder or the encoder is wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .bitstream import IntegerCodec, write_stream
from .format import ColorFormat
from .image_io import InputError, Picture, picture_from_array, read_picture
from .memory import check_memory as memory_check
from .memory import default_limit
from .presets import Architecture, EncoderConfig, Preset, mac_per_pixel
from .quantize import QuantizationReport, dequantized_model, planes_mse, quantize_model
from .train import Metrics, ProgressFn, Trainer, evaluate, resolve_device, save_checkpoint


class ClosedLoopError(RuntimeError):
    """The reference decoder's output differs from the encoder's prediction."""


@dataclass
class EncodeResult:
    """An encoded picture and its statistics.

    bpp: stream bits per pixel (8 * len(stream) / (W * H)); psnr: dB over all samples of
    all planes of the decoded picture (max = 2^bit_depth - 1); mac_per_pixel: decoder
    multiplications per pixel (spec 3.4 count); seconds: wall time of `encode`.
    """

    stream: bytes
    bpp: float
    psnr: float
    mse: float
    mac_per_pixel: float
    seconds: float
    width: int
    height: int
    color_format: ColorFormat
    bit_depth: int
    planes: list[np.ndarray] = field(repr=False)
    psnr_float: float = math.nan  # float model, float weights, rounded latents and samples
    psnr_float_quantized: float = math.nan  # float model with the stream's integer parameters
    details: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-serialisable statistics (what `--json` writes)."""
        return {
            "width": self.width,
            "height": self.height,
            "color_format": ColorFormat(self.color_format).label,
            "bit_depth": self.bit_depth,
            "bytes": len(self.stream),
            "bpp": self.bpp,
            "psnr_db": self.psnr,
            "mse": self.mse,
            "mac_per_pixel": self.mac_per_pixel,
            "seconds": self.seconds,
            "psnr_float_db": self.psnr_float,
            "psnr_float_quantized_db": self.psnr_float_quantized,
            **self.details,
        }


def psnr_db(mse: float) -> float:
    """PSNR in dB of an MSE in [0, 1] units."""
    return 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf


def load_picture(image: str | os.PathLike | np.ndarray | Picture) -> Picture:
    """A Picture from a path (PNG / YUV), an array (grey or RGB, uint8 / uint16) or a Picture."""
    if isinstance(image, Picture):
        return image
    if isinstance(image, np.ndarray):
        return picture_from_array(image)
    if isinstance(image, (str, os.PathLike)):
        return read_picture(image)
    raise InputError(f"cannot encode an object of type {type(image).__name__}")


# Up to this many pixels, training runs one Torch thread per op (`training_threads`): on
# 2 cores a 256x256 `instant` encode took 16.3 s on one thread and 17.0 s on two
# (spinning OpenMP threads). The second core runs the rate branch instead.
SINGLE_THREAD_PIXELS = 1 << 16


@contextlib.contextmanager
def training_threads(pixels: int, device: torch.device) -> Iterator[bool]:
    """Torch threads for training on the CPU; yields whether to run each step's rate and
    distortion branches on two threads (`train.backward_pass`), and the independent parts
    of the quantization search likewise (`quantize_model(parallel=...)`).

    Pictures of up to SINGLE_THREAD_PIXELS train on one Torch thread per branch, the
    branches side by side when 2 cores are there: on 2 idle cores a 256x256 `instant`
    iteration takes 56-60 ms against 84-85 ms on one thread (two Torch threads are no
    faster than one at that size). OMP_NUM_THREADS, when set, is the budget: 1 keeps
    everything on one thread. Larger pictures keep Torch's own threads: at 768x512, op
    2000, two branches of one thread each were no faster than two Torch threads (413
    against 415 ms per iteration), the ARM branch being the longer one.
    """
    if device.type != "cpu" or pixels > SINGLE_THREAD_PIXELS:
        yield False
        return
    budget = _omp_thread_budget() or available_cores()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield budget >= 2
    finally:
        torch.set_num_threads(before)


def _omp_thread_budget() -> int | None:
    """The outermost thread count of OMP_NUM_THREADS (OpenMP allows a list, "4,2");
    None when it is unset or not a positive number (libgomp then ignores it too)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else None


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def picture_targets(picture: Picture, device: torch.device) -> list[torch.Tensor]:
    """The picture's planes as float32 tensors in [0, 1] (sample / (2^bit_depth - 1))."""
    maxval = float((1 << picture.bit_depth) - 1)
    return [torch.as_tensor(p.astype(np.float32) / maxval, device=device) for p in picture.planes]


def _fingerprint(
    picture: Picture, config: EncoderConfig, preset: Preset, arch: Architecture
) -> str:
    """Identifies an encode: a checkpoint is only resumed for the same picture and options."""
    h = hashlib.sha256()
    for plane in picture.planes:
        h.update(np.ascontiguousarray(plane).tobytes())
    h.update(
        json.dumps(
            [config.lmbda, config.seed, asdict(preset), arch.describe(), picture.color_format],
            sort_keys=True,
            default=str,
        ).encode()
    )
    return h.hexdigest()


@torch.no_grad()
def _float_psnr(model, targets: list[np.ndarray], bit_depth: int) -> float:
    """PSNR of a float model's output, rounded to integer samples like a decoder's."""
    from .model import Quantizer

    maxval = float((1 << bit_depth) - 1)
    image = model(Quantizer(mode="round")).image
    planes = [
        torch.round(p * maxval).cpu().numpy().astype(np.int64) for p in model.to_planes(image)
    ]
    return psnr_db(planes_mse(planes, targets, bit_depth))


@dataclass
class _LoopResult:
    codec: IntegerCodec
    stream: bytes
    report: QuantizationReport
    predicted: list[np.ndarray]
    cost: float
    psnr_float: float
    psnr_float_quantized: float
    train_metrics: Metrics
    log: list[dict]
    timings: dict = field(default_factory=dict)


def encode(
    image: str | os.PathLike | np.ndarray | Picture,
    lmbda: float = 1e-3,
    preset: str = "medium",
    *,
    progress: ProgressFn | None = None,
    workdir: str | os.PathLike | None = None,
    resume: bool = False,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
    info: Callable[[str], None] | None = None,
    max_memory: int | None = None,
    check_memory: bool = True,
    **options: object,
) -> EncodeResult:
    """Encode a picture; return the stream and its statistics.

    image: path of a PNG or raw .yuv file, a (H, W) / (H, W, 3) uint8 / uint16 array,
    or a Picture. lmbda: rate weight of the loss MSE + lmbda * bpp (MSE in [0, 1]
    units). preset: instant, faster, fast, medium, slow, placebo. options: the other
    fields of `EncoderConfig` (op, layers_arm, layers_synthesis, n_ctx_rowcol,
    upsampling_kernel_size, n_grids, version, cross_grids, n_itr, start_lr, n_train_loops,
    rdoq, seed, device). version: the bitstream version, 2 (default) or 1; cross_grids:
    v2's cross-grid context C (default: the operating point's, at most n_grids - 1;
    version 1 has none).
    workdir: where logs and checkpoints go; resume: continue from its checkpoint.
    verify: run the closed-loop check with the reference decoder (default on).
    log: receives warnings; info: receives informative lines (the memory estimate).
    max_memory: bytes the encode may use (default: the memory available, see
    `memory.default_limit`); with check_memory, an encode whose estimated peak exceeds it
    is refused before training with `memory.MemoryLimitError` (a ValueError).
    Raises InputError for a bad picture, ValueError for bad options, ClosedLoopError.
    """
    start = time.perf_counter()
    unknown = set(options) - set(EncoderConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown option(s): {', '.join(sorted(unknown))}")
    config = EncoderConfig(lmbda=lmbda, preset=preset, **options)  # type: ignore[arg-type]
    if not (lmbda > 0 and math.isfinite(lmbda)):
        raise ValueError(f"lmbda must be a positive number, not {lmbda}")
    if config.n_train_loops < 1:
        raise ValueError("n_train_loops must be at least 1")
    picture = load_picture(image)
    say = log or (lambda message: None)
    for warning in picture.warnings:
        say(f"warning: {warning}")
    pixels = picture.width * picture.height
    arch = config.resolve_architecture(picture.color_format.n_channels, pixels)
    schedule = config.resolve_preset()
    device = resolve_device(config.device)
    if check_memory:
        limit, source = (max_memory, "--max-memory") if max_memory else default_limit()
        if device.type == "cuda" and not max_memory:
            # Activations live on the device: its free memory is the limit there.
            limit, source = torch.cuda.mem_get_info(device)[0], f"free on {device}"
        _, report = memory_check(arch, picture.height, picture.width, limit, source)
        if info is not None:
            info(report)
    targets = picture_targets(picture, device)
    work = Path(workdir) if workdir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(picture, config, schedule, arch)

    best: _LoopResult | None = None
    with training_threads(picture.width * picture.height, device) as parallel_branches:
        for loop in range(config.n_train_loops):
            result = _encode_once(
                picture, config, schedule, arch, device, targets, loop, progress, work,
                resume, fingerprint, say, parallel_branches,
            )  # fmt: skip
            if best is None or result.cost < best.cost:
                best = result
    assert best is not None

    t_verify = time.perf_counter()
    if verify:
        verify_stream(best.stream, best.predicted)
    t_verify = time.perf_counter() - t_verify
    mse = planes_mse(best.predicted, picture.planes, picture.bit_depth)
    coded = [int(np.min(v)) != int(np.max(v)) for v in best.codec.latents]
    mac = mac_per_pixel(arch, picture.height, picture.width, coded)
    details = {
        "lmbda": config.lmbda,
        "preset": config.preset,
        "op": config.resolve_op(pixels),
        "op_requested": config.op,
        "architecture": arch.describe(),
        "bitstream_version": best.codec.version,
        "cross_grids": best.codec.cross_grids,
        "device": device.type,
        "seed": config.seed,
        "iterations": schedule.total_itr,
        "n_train_loops": config.n_train_loops,
        "mac_per_pixel_detail": mac,
        "latent_bits": best.report.latent_bits,
        "weight_bits": best.report.weight_bits,
        "shifts": asdict(best.report.shifts),
        "quantization_evaluations": best.report.evaluations,
        "rdoq": None if best.report.rdoq is None else asdict(best.report.rdoq),
        "train_loss": best.train_metrics.loss,
        "train_bpp_estimate": best.train_metrics.bpp,
        # Loss with hard-rounded latents at every evaluation of the kept loop: the
        # progress bar shows the noisy training loss, which hides the real progress.
        "train_evaluations": best.log,
        "verified": verify,
        "timings": {**best.timings, "verify_s": t_verify},
    }
    result = EncodeResult(
        stream=best.stream,
        bpp=8.0 * len(best.stream) / pixels,
        psnr=psnr_db(mse),
        mse=mse,
        mac_per_pixel=mac["total"],
        seconds=time.perf_counter() - start,
        width=picture.width,
        height=picture.height,
        color_format=picture.color_format,
        bit_depth=picture.bit_depth,
        planes=best.predicted,
        psnr_float=best.psnr_float,
        psnr_float_quantized=best.psnr_float_quantized,
        details=details,
    )
    if work is not None:
        (work / "result.json").write_text(json.dumps(result.summary(), indent=2, default=float))
    return result


def _encode_once(
    picture: Picture,
    config: EncoderConfig,
    schedule: Preset,
    arch: Architecture,
    device: torch.device,
    targets: list[torch.Tensor],
    loop: int,
    progress: ProgressFn | None,
    work: Path | None,
    resume: bool,
    fingerprint: str,
    say: Callable[[str], None],
    parallel_branches: bool = False,
) -> _LoopResult:
    """One training + quantization + stream writing (one of `n_train_loops`)."""
    done_path = work / f"loop{loop}.done.pt" if work else None
    ckpt_path = work / f"loop{loop}.ckpt.pt" if work else None
    if resume and done_path is not None and done_path.exists():
        saved = torch.load(done_path, weights_only=False)
        if saved.get("fingerprint") == fingerprint:
            say(f"loop {loop}: already done in {done_path.parent}, reusing it")
            return saved["result"]

    def checkpoint(state: dict) -> None:
        if ckpt_path is not None:
            save_checkpoint(ckpt_path, {"fingerprint": fingerprint, "trainer": state})

    trainer = Trainer(
        arch,
        targets,
        (picture.height, picture.width),
        picture.color_format,
        config.lmbda,
        schedule,
        seed=config.seed + loop,
        device=device,
        progress=progress,
        checkpoint=checkpoint if ckpt_path is not None else None,
        parallel_branches=parallel_branches,
    )
    if resume and ckpt_path is not None and ckpt_path.exists():
        saved = torch.load(ckpt_path, weights_only=False, map_location=device)
        if saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{ckpt_path} belongs to another encode (picture or options differ): "
                "remove it or run without --resume"
            )
        trainer.load_state_dict(saved["trainer"])
        say(f"loop {loop}: resuming at iteration {trainer.itr_done}")
    t0 = time.perf_counter()
    model = trainer.run()
    t1 = time.perf_counter()
    train_metrics = evaluate(model, targets, config.lmbda)
    psnr_float = _float_psnr(model, picture.planes, picture.bit_depth)

    codec, report = quantize_model(
        model,
        arch,
        picture.planes,
        picture.bit_depth,
        config.lmbda,
        search=schedule.quant_search,
        rdoq=schedule.rdoq,
        parallel=parallel_branches,
    )
    t2 = time.perf_counter()
    stream = write_stream(codec)
    t3 = time.perf_counter()
    predicted = report.planes
    psnr_quantized = _float_psnr(dequantized_model(model, codec), picture.planes, picture.bit_depth)
    pixels = picture.width * picture.height
    cost = report.mse + config.lmbda * 8.0 * len(stream) / pixels
    result = _LoopResult(
        codec=codec,
        stream=stream,
        report=report,
        predicted=predicted,
        cost=cost,
        psnr_float=psnr_float,
        psnr_float_quantized=psnr_quantized,
        train_metrics=train_metrics,
        log=trainer.log,
        timings={"train_s": t1 - t0, "quantize_s": t2 - t1, "write_s": t3 - t2},
    )
    if work is not None:
        with (work / "train.log").open("a") as f:
            for entry in trainer.log:
                f.write(json.dumps({"loop": loop, **entry}) + "\n")
        assert done_path is not None and ckpt_path is not None
        save_checkpoint(done_path, {"fingerprint": fingerprint, "result": result})
        ckpt_path.unlink(missing_ok=True)
    return result


def verify_stream(stream: bytes, predicted: list[np.ndarray]) -> None:
    """Closed loop: decode `stream` with the reference decoder and compare every sample
    with the encoder's prediction. Raises ClosedLoopError on the first difference."""
    import coolchic_ref

    decoded = coolchic_ref.decode(stream)
    planes = list(decoded.planes)
    if len(planes) != len(predicted):
        raise ClosedLoopError(
            f"closed-loop check failed: decoder gave {len(planes)} planes, encoder predicted "
            f"{len(predicted)}"
        )
    for index, (got, want) in enumerate(zip(planes, predicted, strict=True)):
        got = np.asarray(got)
        if got.shape != want.shape:
            raise ClosedLoopError(
                f"closed-loop check failed: plane {index} is {got.shape} in the decoder, "
                f"{want.shape} in the encoder"
            )
        diff = np.argwhere(got.astype(np.int64) != want.astype(np.int64))
        if diff.size:
            y, x = diff[0]
            raise ClosedLoopError(
                f"closed-loop check failed: plane {index} differs at {len(diff)} samples, "
                f"first at row {y} column {x}: decoder {int(got[y, x])}, encoder "
                f"{int(want[y, x])} (spec, decoder or encoder bug: please report it)"
            )


__all__ = ["ClosedLoopError", "EncodeResult", "InputError", "encode", "verify_stream"]
