"""The logic of the GPU path, tested on the CPU: resuming from a checkpoint loaded with
`map_location=<device>`, no read of the loss (a host synchronisation) for progress
lines that are not printed, and the upsampling's index tensors built once per device."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from coolchic_ref.encoder import cli as cli_module  # noqa: E402
from coolchic_ref.encoder import model as model_module  # noqa: E402
from coolchic_ref.encoder.cli import ProgressBar  # noqa: E402
from coolchic_ref.encoder.presets import EncoderConfig, Preset  # noqa: E402
from coolchic_ref.encoder.train import Progress, Trainer, save_checkpoint  # noqa: E402

SCHEDULE = Preset("test", phase1_itr=8, phase2_itr=2, eval_every=4)


def make_trainer(checkpoint=None) -> Trainer:
    rng = np.random.default_rng(5)
    targets = [torch.as_tensor(rng.random((12, 16), dtype=np.float32)) for _ in range(3)]
    arch = EncoderConfig(lmbda=1e-3, preset="instant", op="500").resolve_architecture(3)
    return Trainer(
        arch, targets, (12, 16), 1, 1e-3, SCHEDULE, seed=2, device=torch.device("cpu"),
        checkpoint=checkpoint,
    )  # fmt: skip


def parameters(trainer: Trainer) -> list[torch.Tensor]:
    assert trainer.model is not None
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_resume_from_a_checkpoint_loaded_with_map_location(tmp_path) -> None:
    """Interrupted after 4 iterations and resumed from the file, the training ends with the
    same parameters as an uninterrupted one (the RNG state of the noise is restored)."""
    whole = make_trainer()
    whole.run()
    path = tmp_path / "ckpt.pt"

    def keep(state: dict) -> None:
        if state["itr_done"] == 4:
            save_checkpoint(path, {"trainer": state})

    make_trainer(checkpoint=keep).run()
    torch.manual_seed(1234)  # the resumed run must not depend on the current RNG state
    for location in ("cpu",):
        saved = torch.load(path, weights_only=False, map_location=location)
        resumed = make_trainer()
        resumed.load_state_dict(saved["trainer"])
        assert resumed.itr_done == 4
        resumed.run()
        for a, b in zip(parameters(whole), parameters(resumed), strict=True):
            assert torch.equal(a, b)


class CountingTensor:
    """Stands in for a 0-d device tensor and counts the reads (host synchronisations)."""

    reads = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def __float__(self) -> float:
        CountingTensor.reads += 1
        return self.value


def test_progress_bar_reads_the_loss_only_for_printed_lines() -> None:
    CountingTensor.reads = 0
    out = io.StringIO()  # not a terminal: one line per tenth
    bar = ProgressBar(stream=out)
    total = 200
    for itr in range(1, total + 1):
        bar(Progress("phase 1", itr, total, *(CountingTensor(0.5) for _ in range(3))))  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # at 0%, ..., 100%
    assert CountingTensor.reads == 3 * len(lines)  # loss, bpp and the MSE of psnr
    assert "3.01 dB" in lines[-1] and "5.000e-01" in lines[-1]


def test_progress_bar_rate_counts_from_the_resumed_iteration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(cli_module.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    bar = ProgressBar(stream=out)
    total = 4900
    for itr in range(3401, total + 1):  # resumed at 3400: 0.5 s per iteration from there
        bar(Progress("phase 1", itr, total, *(CountingTensor(0.5) for _ in range(3))))  # type: ignore[arg-type]
        clock[0] += 0.5  # exact in binary, so the ETA has no rounding to discuss
    lines = out.getvalue().splitlines()
    assert "--:--" in lines[0]  # one iteration seen: no rate yet
    assert lines[1].split()[2] == "3430/4900"  # the 70 % line
    assert " 0.50 s/it  ETA 12:15" in lines[1]  # 1470 iterations left at 0.5 s
    assert all(" 0.50 s/it" in line for line in lines[1:])
    assert lines[-1].endswith("ETA 0:00")


def test_trainer_progress_carries_tensors() -> None:
    seen: list[Progress] = []
    trainer = make_trainer()
    trainer.progress = seen.append
    trainer.run()
    assert len(seen) == SCHEDULE.total_itr
    last = seen[-1]
    assert isinstance(last.loss_tensor, torch.Tensor) and not last.loss_tensor.requires_grad
    assert last.loss == pytest.approx(float(last.mse_tensor) + 1e-3 * last.bpp)


def test_fold_taps_indices_are_built_once_per_device() -> None:
    model_module._fold_indices.cache_clear()
    taps = torch.arange(1.0, 9.0)
    first, half = model_module.fold_taps(taps)
    again, _ = model_module.fold_taps(taps * 2)
    info = model_module._fold_indices.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert torch.equal(again, 2 * first) and half == 4
    # Every tap appears once in each phase.
    assert sorted(first[0][first[0] != 0].tolist()) == sorted(taps.tolist())
    assert sorted(first[1][first[1] != 0].tolist()) == sorted(taps.tolist())
