"""The training schedule: warm-up candidates, optimizers, gradient clipping, phase 2.

Tiny pictures and a few iterations each: these check the mechanics of `Trainer`, not
the compression it reaches (that is measured in tools/results/recipe-experiments.md).
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_optimizer")

from coolchic_ref.encoder.format import ColorFormat  # noqa: E402
from coolchic_ref.encoder.presets import PRESETS, EncoderConfig  # noqa: E402
from coolchic_ref.encoder.train import Optimizers, Trainer  # noqa: E402

HEIGHT, WIDTH = 12, 16


def make_trainer(**fields) -> Trainer:
    generator = torch.Generator().manual_seed(7)
    targets = [torch.rand(HEIGHT, WIDTH, generator=generator) for _ in range(3)]
    arch = EncoderConfig(op="500").resolve_architecture(3)
    preset = replace(PRESETS["faster"], **fields)
    return Trainer(
        arch,
        targets,
        (HEIGHT, WIDTH),
        ColorFormat.RGB,
        1e-3,
        preset,
        seed=3,
        device=torch.device("cpu"),
    )


def test_warmup_keeps_the_best_candidates_for_a_second_round() -> None:
    trainer = make_trainer(
        warmup_candidates=3, warmup_itr=2, warmup_survivors=2, phase1_itr=3, phase2_itr=2,
        eval_every=3,
    )  # fmt: skip
    assert trainer.preset.total_itr == 3 * 2 + 2 * 2 + 3 + 2
    trainer.run()
    assert trainer.itr_done == trainer.preset.total_itr
    names = [entry["stage"] for entry in trainer.log]
    rounds = [f"warm-up {k}/5" for k in range(1, 6)]
    assert names[:5] == rounds
    # Each survivor trained two more iterations: the second-round evaluations come
    # 2 iterations apart, after the 6 iterations of the first round.
    assert [entry["itr"] for entry in trainer.log[:5]] == [2, 4, 6, 8, 10]


def test_one_survivor_means_no_second_round() -> None:
    preset = replace(PRESETS["faster"], warmup_candidates=4, warmup_itr=5, warmup_survivors=1)
    assert preset.warmup_total_itr == 20
    assert replace(preset, warmup_candidates=1).warmup_total_itr == 0
    with pytest.raises(ValueError, match="at least 1"):
        replace(preset, warmup_survivors=0)


def test_frozen_phase_2_trains_the_networks_only() -> None:
    trainer = make_trainer(phase2_latents="frozen")
    model = trainer._new_model(0)
    with torch.no_grad():
        for latent in model.latents:
            latent.normal_(0.0, 2.0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = trainer._optimizer(model, 1e-2)
    stage = next(s for s in trainer._stages() if s.kind == "phase2")
    for itr in range(3):  # SOAP's first step only sets its preconditioner up
        trainer._step(model, optimizer, stage, itr, stage.name)
    for name, p in model.latents.named_parameters():
        assert p.grad is None and torch.equal(p, before[f"latents.{name}"]), name
    for part in ("synthesis", "arm"):
        moved = [
            not torch.equal(p, before[f"{part}.{name}"])
            for name, p in getattr(model, part).named_parameters()
        ]
        assert any(moved), part


def test_gradient_of_the_networks_is_clipped(monkeypatch) -> None:
    trainer = make_trainer(grad_clip=1e-3)
    model = trainer._new_model(0)
    optimizer = trainer._optimizer(model, 1e-2)
    norms = []
    step = optimizer.step

    def record_then_step() -> None:
        grads = [p.grad for p in optimizer.network_params if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        step()

    monkeypatch.setattr(optimizer, "step", record_then_step)
    stage = next(s for s in trainer._stages() if s.kind == "phase1")
    for itr in range(3):
        trainer._step(model, optimizer, stage, itr, stage.name)
    assert max(norms) <= 1e-3 * (1 + 1e-4)


@pytest.mark.parametrize("kind", ["soap", "adam"])
def test_optimizer_state_resumes_exactly(kind: str) -> None:
    trainer = make_trainer(optimizer=kind)
    stage = next(s for s in trainer._stages() if s.kind == "phase1")

    def run(model, optimizer, itrs) -> None:
        for itr in itrs:
            torch.manual_seed(itr)
            trainer._step(model, optimizer, stage, itr, stage.name)

    model = trainer._new_model(0)
    optimizer = Optimizers(model, 1e-2, 10.0, kind)
    run(model, optimizer, range(12))  # past SOAP's first eigenbasis refresh (every 10)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    saved_optimizer = copy.deepcopy(optimizer.state_dict())  # its tensors are live references
    run(model, optimizer, range(12, 15))

    resumed = trainer._new_model(0)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = Optimizers(resumed, 0.0, 10.0, kind)
    resumed_optimizer.load_state_dict(saved_optimizer)
    run(resumed, resumed_optimizer, range(12, 15))
    resumed_state = resumed.state_dict()
    for name, a in model.state_dict().items():
        b = resumed_state[name]
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kind", ["softround", "ste", "round"])
def test_two_branch_step_gives_the_gradients_of_one_backward_pass(kind: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from coolchic_ref.encoder.model import Quantizer
    from coolchic_ref.encoder.train import backward_pass

    trainer = make_trainer()
    # Phase 1's noisy soft rounding, a plain straight-through rounding (phase 2's own
    # has a nearly zero gradient), and the hard rounding of a frozen phase 2.
    quantizer = {
        "softround": Quantizer("softround", 0.3, "gaussian", 0.2),
        "ste": Quantizer("ste", 0.0),
        "round": Quantizer("round"),
    }[kind]
    model = trainer._new_model(0)
    with torch.no_grad():  # every parameter on a path with a gradient
        for latent in model.latents:
            latent.normal_(0.0, 2.0)
        for weight in model.arm.weights:
            weight.normal_(0.0, 0.3)
    results = []
    with ThreadPoolExecutor(1) as rate_thread:
        for thread in (None, rate_thread):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(5)  # the same noise for both passes
            terms = backward_pass(model, trainer.targets, 1e-2, quantizer, thread)
            grads = {
                n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
            }
            results.append((terms, grads))
    (one_terms, one_grads), (two_terms, two_grads) = results
    for a, b in zip(one_terms, two_terms, strict=True):
        assert not b.requires_grad
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert one_grads.keys() == two_grads.keys()
    for name, a in one_grads.items():
        b = two_grads[name]
        if kind == "round" and name.startswith("latents."):
            assert a is None and b is None, name
            continue
        assert a is not None and b is not None, name
        assert a.abs().sum() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9, msg=name)


def test_trainer_runs_the_branches_on_two_threads_and_stops_the_thread() -> None:
    trainer = make_trainer(phase1_itr=3, phase2_itr=1, eval_every=2)
    trainer.parallel_branches = True
    seen = []
    import coolchic_ref.encoder.train as train_module

    original = train_module.backward_pass

    def spy(*args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("rate_thread"))
        return original(*args, **kwargs)

    train_module.backward_pass = spy
    try:
        trainer.run()
    finally:
        train_module.backward_pass = original
    assert len(seen) == 4 and all(thread is not None for thread in seen)
    assert trainer._rate_thread is None


@pytest.mark.parametrize(
    ("pixels", "omp", "cores", "expected"),
    [
        (256 * 256, None, 2, (1, True)),  # small: one Torch thread per branch, side by side
        (256 * 256, None, 1, (1, False)),
        (256 * 256, "1", 2, (1, False)),  # OMP_NUM_THREADS is the budget
        (256 * 256, "2", 1, (1, True)),
        (256 * 256, "2,1", 1, (1, True)),  # an OpenMP list: the outermost count
        (256 * 256, "many", 2, (1, True)),  # not a number: ignored, as libgomp does
        (768 * 512, None, 2, (None, False)),  # large: Torch's own threads, unchanged
    ],
)
def test_training_threads_policy(monkeypatch, pixels, omp, cores, expected) -> None:
    from coolchic_ref.encoder import api

    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(api, "available_cores", lambda: cores)
    before = torch.get_num_threads()
    with api.training_threads(pixels, torch.device("cpu")) as parallel_branches:
        inside = torch.get_num_threads()
    assert torch.get_num_threads() == before
    threads, branches = expected
    assert parallel_branches is branches
    assert inside == (before if threads is None else threads)


def test_adam_is_torch_adam_bit_for_bit_and_loads_its_state() -> None:
    from coolchic_ref.encoder.train import Adam

    gen = torch.Generator().manual_seed(11)
    start = [torch.randn(5, 7, generator=gen), torch.randn(3, generator=gen)]
    grads = [[torch.randn(t.shape, generator=gen) for t in start] for _ in range(6)]
    ours = [t.clone().requires_grad_() for t in start]
    theirs = [t.clone().requires_grad_() for t in start]
    ours_opt = Adam([{"params": ours, "lr": 0.03, "scale": 10.0}])
    theirs_opt = torch.optim.Adam([{"params": theirs, "lr": 0.03, "scale": 10.0}])
    for step, step_grads in enumerate(grads):
        if step == 3:  # continue from the other's checkpoint, both ways
            ours_opt.load_state_dict(copy.deepcopy(theirs_opt.state_dict()))
            theirs_opt.load_state_dict(copy.deepcopy(ours_opt.state_dict()))
        for params, opt in ((ours, ours_opt), (theirs, theirs_opt)):
            opt.zero_grad()
            for p, g in zip(params, step_grads, strict=True):
                p.grad = g.clone()
            opt.step()
        for a, b in zip(ours, theirs, strict=True):
            assert torch.equal(a, b), step
    assert ours_opt.param_groups[0]["scale"] == 10.0
    assert not torch.equal(ours[0], start[0])


def test_optimizers_do_not_import_the_torch_compiler() -> None:
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_train_schedule import make_trainer\n"
        "trainer = make_trainer(phase1_itr=2, phase2_itr=1)\n"
        "trainer.run()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_warmup_noise_per_lambda() -> None:
    default = make_trainer(warmup_candidates=2, warmup_itr=1)
    per_lambda = make_trainer(warmup_candidates=2, warmup_itr=1, warmup_noise="lambda")
    stage = next(s for s in default._stages() if s.kind == "warmup")
    assert default._quantizer(stage, 0).noise == "kumaraswamy"
    quantizer = per_lambda._quantizer(stage, 0)
    # lambda = 1e-3 (make_trainer): (0.747 - 0.432 * -3) / 10
    assert quantizer.noise == "gaussian" and quantizer.noise_param == pytest.approx(0.2043)
    assert quantizer.temperature == 0.35
    with pytest.raises(ValueError, match="warmup_noise"):
        make_trainer(warmup_noise="uniform")


_SOAP_STEPS = """
import hashlib, sys, torch
{prelude}
from coolchic_ref.encoder.train import _soap
torch.manual_seed(0)
w = torch.nn.Parameter(torch.randn(6, 5))
b = torch.nn.Parameter(torch.randn(6))
opt = _soap([{{"params": [w, b], "lr": 1e-2, "scale": 1.0}}], 1e-2)
for _ in range(25):  # preconditioning every 10 steps: two updates of the eigenbases
    loss = ((w @ torch.randn(5, 3) + b[:, None]) ** 2).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
print(hashlib.sha256(w.detach().numpy().tobytes() + b.detach().numpy().tobytes()).hexdigest())
print("torch.distributed.tensor" in sys.modules, "sympy" in sys.modules)
import torch.distributed.tensor
print("torch.distributed.tensor" in sys.modules)
"""


def test_soap_without_distributed_tensors_steps_as_with_them() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def run(prelude: str) -> list[str]:
        code = _SOAP_STEPS.format(prelude=prelude)
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    ours = run("")
    with_dtensor = run("import torch.distributed.tensor")
    assert ours[0] == with_dtensor[0]
    # Our import leaves DTensor (and sympy) out, yet a later import of it still works.
    assert ours[1:] == ["False", "False", "True"]
    assert with_dtensor[1] == "True"
