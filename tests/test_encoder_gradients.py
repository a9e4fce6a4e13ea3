"""The encoder's hand-written backward passes against numerical gradients.

`model._Contexts`, `model._UpsamplePass` and `model._Conv` replace autograd by explicit backward
functions for speed (tools/bench_train.py --plain measures by how much); a wrong
backward would silently train a worse model, so `torch.autograd.gradcheck` compares
them with finite differences in float64 on small, odd-sized inputs.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from coolchic_ref.encoder.model import (  # noqa: E402
    _Contexts,
    _Conv,
    _UpsamplePass,
    default_taps,
    fold_taps,
)


@pytest.mark.parametrize("n_ctx_rowcol", [1, 2, 3])
def test_context_backward(n_ctx_rowcol: int) -> None:
    gen = torch.Generator().manual_seed(n_ctx_rowcol)
    grids = [
        torch.randn(h, w, dtype=torch.float64, generator=gen, requires_grad=True)
        for h, w in ((5, 7), (3, 4), (1, 2), (1, 1))
    ]
    assert torch.autograd.gradcheck(
        lambda *g: _Contexts.apply(n_ctx_rowcol, *g), grids, eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("vertical", [True, False])
@pytest.mark.parametrize(
    ("n_taps", "shape", "crop"),
    [(4, (2, 5, 6), 1), (2, (1, 3, 4), 0), (8, (2, 4, 3), 1), (1, (2, 3, 3), 1)],
)
def test_upsampling_pass_backward(
    vertical: bool, n_taps: int, shape: tuple[int, int, int], crop: int
) -> None:
    gen = torch.Generator().manual_seed(n_taps)
    x = torch.randn(shape, dtype=torch.float64, generator=gen, requires_grad=True)
    taps = (
        default_taps(n_taps).double()
        + 0.1 * torch.randn(n_taps, dtype=torch.float64, generator=gen)
    ).requires_grad_()
    # An odd output size crops the last output sample; its gradient must be 0.
    n_out = 2 * (shape[1] if vertical else shape[2]) - crop

    def run(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
        kernel, _ = fold_taps(taps)
        return _UpsamplePass.apply(x, kernel, n_out, vertical)

    assert torch.autograd.gradcheck(run, (x, taps), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize(("kernel", "c_in", "c_out"), [(3, 3, 3), (3, 2, 4), (5, 1, 2), (7, 2, 1)])
def test_synthesis_conv_backward(kernel: int, c_in: int, c_out: int) -> None:
    gen = torch.Generator().manual_seed(kernel * 10 + c_in)
    padded = torch.randn(c_in, 5 + kernel - 1, 4 + kernel - 1, dtype=torch.float64, generator=gen)
    weight = torch.randn(c_out, c_in, kernel, kernel, dtype=torch.float64, generator=gen)
    bias = torch.randn(c_out, dtype=torch.float64, generator=gen)
    inputs = tuple(t.requires_grad_() for t in (padded, weight, bias))
    assert torch.autograd.gradcheck(_Conv.apply, inputs, eps=1e-6, atol=1e-8)
