"""The encoder's format facts, the shift search's report and the weight RDOQ."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import coolchic_ref  # noqa: E402
from coolchic_ref.encoder import integer_model as im  # noqa: E402
from coolchic_ref.encoder.api import picture_targets  # noqa: E402
from coolchic_ref.encoder.bitstream import egk_bits, format_layers, parse_layers, write_stream  # noqa: E402
from coolchic_ref.encoder.format import ColorFormat, LayerKind  # noqa: E402
from coolchic_ref.encoder.image_io import picture_from_array  # noqa: E402
from coolchic_ref.encoder.presets import EncoderConfig  # noqa: E402
from coolchic_ref.encoder.quantize import (  # noqa: E402
    QuantizationReport,
    arm_weight_bits,
    decoder_weight_bits,
    planes_mse,
    quantize_model,
)
from coolchic_ref.encoder.rdoq import egk_lengths, param_refs  # noqa: E402
from coolchic_ref.encoder.train import Trainer  # noqa: E402

# ----------------------------------------------------------------------------- format


def test_color_format_facts() -> None:
    assert [f.label for f in ColorFormat] == ["grey", "rgb", "yuv444", "yuv420"]
    assert [f.n_channels for f in ColorFormat] == [1, 3, 3, 3]
    assert [f.subsampled_chroma for f in ColorFormat] == [False, False, False, True]
    assert all(ColorFormat.from_label(f.label) is f for f in ColorFormat)
    with pytest.raises(ValueError, match="colour format"):
        ColorFormat.from_label("yuv422")


def test_layer_kind_round_trips_through_the_text_form() -> None:
    text = "8-3-linear-relu,8-1-residual-leakyrelu,3-1-linear-none"
    layers = parse_layers(text)
    assert [layer.kind for layer in layers] == [
        LayerKind.LINEAR,
        LayerKind.RESIDUAL,
        LayerKind.LINEAR,
    ]
    assert [layer.kind.adds_input for layer in layers] == [False, True, False]
    assert format_layers(layers) == text
    with pytest.raises(ValueError, match="'linear' or 'residual'"):
        parse_layers("8-3-gated-relu")


def test_egk_lengths_sum_to_egk_bits() -> None:
    values = np.arange(-300, 301)
    for k in (0, 1, 3, 7):
        assert int(egk_lengths(values, k).sum()) == egk_bits(values, k)


# ----------------------------------------------------------------------------- quantization


@pytest.fixture(scope="module")
def trained():
    """A small model trained briefly on a smooth RGB picture, and its picture."""
    torch.manual_seed(0)
    h, w = 24, 32
    yy, xx = np.mgrid[0:h, 0:w]
    planes = [
        np.clip(128 + 90 * np.cos(xx / (4 + c) + yy / 7) + 10 * np.sin(yy * xx / 50), 0, 255)
        for c in range(3)
    ]
    picture = picture_from_array(np.stack(planes, -1).astype(np.uint8))
    lmbda = 0.004
    config = EncoderConfig(lmbda=lmbda, preset="faster", n_itr=40, op="500")
    arch = config.resolve_architecture(picture.color_format.n_channels)
    # The phase-1 schedule is pinned so that retuning the presets' defaults does not
    # change the model the shift-search tests below were written against.
    schedule = dataclasses.replace(
        config.resolve_preset(), temperature=(0.3, 0.1), noise_param=(0.25, 0.15)
    )
    device = torch.device("cpu")
    trainer = Trainer(
        arch, picture_targets(picture, device), (h, w), picture.color_format, lmbda,
        schedule, seed=0, device=device,
    )  # fmt: skip
    return trainer.run(), arch, picture, lmbda


def _cost(codec, targets, lmbda: float) -> float:
    """MSE + lambda * bpp of the codec, every term recomputed from scratch."""
    planes = im.simulate_decode(codec)
    bits = im.latent_bits(codec) + arm_weight_bits(codec) + decoder_weight_bits(codec)
    return planes_mse(planes, targets, codec.bit_depth) + lmbda * bits / (
        codec.width * codec.height
    )


def test_report_declares_every_field(trained) -> None:
    model, arch, picture, lmbda = trained
    codec, report = quantize_model(model, arch, picture.planes, picture.bit_depth, lmbda)
    declared = {f.name for f in dataclasses.fields(QuantizationReport)}
    assert set(vars(report)) == declared
    assert report.rdoq is None
    predicted = im.simulate_decode(codec)
    assert all(np.array_equal(a, b) for a, b in zip(report.planes, predicted, strict=True))
    assert report.evaluations == len(report.tried) > 0
    assert report.mse == planes_mse(report.planes, picture.planes, picture.bit_depth)


@pytest.mark.parametrize("search", ["fast", "exact"])
def test_parallel_searches_give_the_same_codec(trained, search: str) -> None:
    model, arch, picture, lmbda = trained
    args = (model, arch, picture.planes, picture.bit_depth, lmbda, search)
    alone, alone_report = quantize_model(*args)
    both, both_report = quantize_model(*args, parallel=True)
    assert write_stream(both) == write_stream(alone)
    assert both_report.shifts == alone_report.shifts
    assert both_report.latent_bits == alone_report.latent_bits
    assert both_report.mse == alone_report.mse
    # The same trials, in an order that depends on the threads.
    assert sorted(map(repr, both_report.tried)) == sorted(map(repr, alone_report.tried))


def test_rdoq_moves_weights_toward_zero_and_lowers_the_exact_cost(trained) -> None:
    model, arch, picture, lmbda = trained
    plain, _ = quantize_model(model, arch, picture.planes, picture.bit_depth, lmbda)
    codec, report = quantize_model(model, arch, picture.planes, picture.bit_depth, lmbda, rdoq=True)
    rdoq = report.rdoq
    assert rdoq is not None and rdoq.evaluations > 0
    # Same formats; every changed integer moved toward zero, never across it.
    for name in ("arm_w_shift", "arm_b_shift", "ups_shift", "syn_w_shift", "syn_b_shift"):
        assert getattr(codec, name) == getattr(plain, name)
    moved = 0
    for ref in param_refs(codec):
        before, after = ref.get(plain), ref.get(codec)
        changed = before != after
        moved += int(changed.sum())
        assert np.all(np.abs(after[changed]) < np.abs(before[changed]))
        assert np.all(after[changed] * before[changed] >= 0)
    # `kept` counts accepted moves; a weight may move once in each of the two passes.
    kept = sum(rdoq.kept.values())
    assert moved <= kept <= rdoq.passes * moved
    # The report's costs are the exact ones, and the cost did not rise.
    assert rdoq.cost_before == pytest.approx(_cost(plain, picture.planes, lmbda), rel=1e-12)
    assert rdoq.cost_after == pytest.approx(_cost(codec, picture.planes, lmbda), rel=1e-12)
    assert rdoq.cost_after <= rdoq.cost_before
    assert (moved > 0) == (rdoq.cost_after < rdoq.cost_before)
    # Closed loop: the reference decoder outputs the predicted planes.
    decoded = coolchic_ref.decode(write_stream(codec))
    assert all(
        np.array_equal(np.asarray(a), b) for a, b in zip(decoded.planes, report.planes, strict=True)
    )


def test_decoder_search_starts_where_the_biases_fit_int16(trained) -> None:
    """A synthesis bias of 0.5 fits int16 only up to Q15: the search must start there,
    not at the largest legal bias shift (12 + syn_w), where every trial is inadmissible
    and the greedy descent used to fall to integer taps and weights."""
    from coolchic_ref.encoder.quantize import (
        DecoderShiftSearch,
        QuantizationProblem,
        quantize_synthesis,
    )

    model, arch, picture, lmbda = trained
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.synthesis.biases[1].fill_(0.5)
    problem = QuantizationProblem.from_model(model, arch, picture.planes, picture.bit_depth, lmbda)
    search = DecoderShiftSearch(problem)
    start = search.start()
    assert start.syn_b <= 15
    assert quantize_synthesis(model, start.syn_w, start.syn_b) is not None
    assert search.cost(start, exact=False) < float("inf")
    chosen = search.proxy_rounds()
    # Taps stay fractional: the bicubic taps need several fractional bits.
    assert chosen.ups >= 6
