"""`init_from_picture`: the training start from a colour pyramid of the picture.

The checks are about what the start must be: the float model reproduces the picture
far better than the all-zero start does, the synthesis is the linear map the
docstring describes, and shapes it cannot set up are left alone.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from coolchic_ref.encoder.format import ColorFormat  # noqa: E402
from coolchic_ref.encoder.model import Quantizer  # noqa: E402
from coolchic_ref.encoder.presets import EncoderConfig  # noqa: E402
from coolchic_ref.encoder.train import (  # noqa: E402
    INIT_STEP_SCALES,
    build_model,
    distortion,
    init_from_picture,
    init_output_mean,
    latent_step,
)

HEIGHT, WIDTH = 40, 56


def smooth_picture(n_planes: int, height: int = HEIGHT, width: int = WIDTH) -> list:
    """Planes in [0, 1] as photographs tend to be: colour that varies slowly, and fine
    detail (here a fine texture) shared by all planes, i.e. in luma."""
    y = torch.linspace(0, 1, height).view(-1, 1)
    x = torch.linspace(0, 1, width).view(1, -1)
    texture = 0.1 * torch.sin(40 * x) * torch.sin(30 * y)
    planes = []
    for c in range(n_planes):
        plane = 0.5 + 0.25 * torch.sin(6 * x + 2 * c) * torch.cos(4 * y - c) + texture
        planes.append(plane.clamp(0, 1))
    return planes


def model_for(targets: list, color_format: ColorFormat, **options):
    h, w = targets[0].shape
    arch = EncoderConfig(**options).resolve_architecture(len(targets))
    model = build_model(arch, h, w, color_format)
    init_output_mean(model, torch.stack([t.mean() for t in targets]))
    return model


def mse_of(model, targets: list) -> float:
    """MSE with hard-rounded latents, as training evaluates a model."""
    with torch.no_grad():
        out = model(Quantizer(mode="round"))
    return float(distortion(model, out.image, targets))


@pytest.mark.parametrize(
    ("n_planes", "color_format"),
    [(3, ColorFormat.RGB), (1, ColorFormat.GREY), (3, ColorFormat.YUV444)],
)
def test_start_reproduces_the_picture(n_planes: int, color_format: ColorFormat) -> None:
    targets = smooth_picture(n_planes)
    model = model_for(targets, color_format, op="1000")
    mse_zero = mse_of(model, targets)
    assert init_from_picture(model, targets, lmbda=1e-3)
    mse_picture = mse_of(model, targets)
    # What remains: the rounding of the finest grid and, in colour, what one direction
    # per grid cannot hold (on so small a picture, the coarse grids are a few samples).
    assert mse_picture < mse_zero / 5, (mse_zero, mse_picture)


def test_rounded_start_is_near_the_step_of_lambda() -> None:
    targets = smooth_picture(1)
    model = model_for(targets, ColorFormat.GREY, op="2000")
    lmbda = 1e-4
    assert init_from_picture(model, targets, lmbda, step_scale=1.0) == 1.0
    # High-rate theory for the finest grid alone: s^2 / 12 (one channel), here 34.8 dB;
    # the finest grid corrects the rounding of the coarser ones (closed loop).
    step = latent_step(lmbda, 1)
    assert mse_of(model, targets) < 1.5 * step**2 / 12, (mse_of(model, targets), step**2 / 12)


def start_cost(targets: list, lmbda: float, scale: float) -> float:
    """MSE of the model's own output with rounded latents + lambda * zeroth-order bpp."""
    model = model_for(targets, ColorFormat.RGB, op="1000")
    init_from_picture(model, targets, lmbda, step_scale=scale)
    bits = 0.0
    for latent in model.latents:
        _, counts = torch.unique(torch.round(latent), return_counts=True)
        p = counts.double() / counts.sum()
        bits += float(-(counts * torch.log2(p)).sum())
    return mse_of(model, targets) + lmbda * bits / (HEIGHT * WIDTH)


def test_chosen_step_has_the_cheapest_start() -> None:
    targets = smooth_picture(3)
    lmbda = 2e-3
    chosen = init_from_picture(model_for(targets, ColorFormat.RGB, op="1000"), targets, lmbda)
    assert chosen in INIT_STEP_SCALES
    costs = {scale: start_cost(targets, lmbda, scale) for scale in INIT_STEP_SCALES}
    assert costs[chosen] == pytest.approx(min(costs.values()), rel=1e-4), costs


def test_synthesis_is_the_linear_reader_of_the_grids() -> None:
    targets = smooth_picture(3)
    model = model_for(targets, ColorFormat.RGB, op="500")
    assert init_from_picture(model, targets, lmbda=4e-3, step_scale=1.0)
    syn = model.synthesis
    n = model.n_grids
    step = latent_step(4e-3, 3)
    # op 500: 12 hidden units for 7 grids, so the 5 finest grids get a pair of units
    # (z, -z) and the 2 coarsest one unit with a bias.
    w1 = syn.weights[0][:, :, 0, 0]
    w2 = syn.weights[1][:, :, 0]
    with torch.no_grad():
        for g, latent in enumerate(model.latents):
            # What the first two layers make of grid g alone: step * d_g * z, exactly.
            # Over the range of the start latents, where a biased unit is open.
            reach = float(latent.abs().max()) + 0.5
            z = torch.linspace(-reach, reach, 9)
            inputs = torch.zeros(n, 9)
            inputs[g] = z
            hidden = torch.relu(w1 @ inputs + syn.biases[0].view(-1, 1))
            hidden_zero = torch.relu(syn.biases[0].view(-1, 1)).expand(-1, 9)
            through = w2[:, :, 0] @ (hidden - hidden_zero)
            direction = through[:, -1] - through[:, 0]
            assert float(direction.norm()) == pytest.approx(step * float(z[-1] - z[0]), rel=1e-4)
            expected = direction.view(-1, 1) * (z - z[0]).view(1, -1) / (z[-1] - z[0])
            assert torch.allclose(through - through[:, :1], expected, atol=1e-5)
    assert int((syn.biases[0] != 0).sum()) == 2
    # The hidden units no grid uses start silent in the output.
    assert int((w2.abs().sum(0) != 0).sum()) == 12


def test_420_chroma_targets_are_read_at_their_resolution() -> None:
    luma = smooth_picture(1, HEIGHT, WIDTH)[0]
    chroma = [p[::2, ::2].contiguous() for p in smooth_picture(2, HEIGHT, WIDTH)]
    targets = [luma, *chroma]
    model = model_for(targets, ColorFormat.YUV420, op="1000")
    mse_zero = mse_of(model, targets)
    assert init_from_picture(model, targets, lmbda=1e-3)
    assert mse_of(model, targets) < mse_zero / 10


def test_other_synthesis_shapes_are_left_alone() -> None:
    targets = smooth_picture(3)
    # A 3x3 first layer: not the linear pair the start needs.
    model = model_for(
        targets, ColorFormat.RGB, op="1000", layers_synthesis="16-3-linear-relu,X-1-linear-none"
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not init_from_picture(model, targets, lmbda=1e-3)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
