import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab.quant import smooth
from test_quant_api import IDS, tiny

CALIB = [torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(s)) for s in range(4)]


def with_outliers(factor: float = 60.0):
    """The tiny Llama with three input channels of every down_proj made `factor` times larger, and
    down_proj's columns shrunk to match: the same function, the outliers of a real model."""
    m = tiny()
    with torch.no_grad():
        for layer in m.model.layers:
            for j in (3, 50, 91):
                layer.mlp.up_proj.weight[j] *= factor
                layer.mlp.down_proj.weight[:, j] /= factor
    return m


def outlier_ratio(model) -> float:
    downs = [layer.mlp.down_proj for layer in model.model.layers]
    maxima = smooth.input_absmax(model, [{"input_ids": b} for b in CALIB], downs)
    return max((x.max() / x.median()).item() for x in maxima)


def logits(model):
    with torch.no_grad():
        return model(IDS).logits


def test_smoothing_keeps_the_float_function_and_flattens_the_outliers():
    m = with_outliers()
    before, ratio = logits(m), outlier_ratio(m)
    scales = smooth.smooth_mlps(m, [{"input_ids": b} for b in CALIB], alpha=0.5)
    assert sorted(scales) == ["model.layers.0.mlp", "model.layers.1.mlp"]
    torch.testing.assert_close(logits(m), before, rtol=1e-4, atol=1e-5)
    assert ratio > 20 and outlier_ratio(m) < ratio / 4


def test_alpha_one_moves_every_input_maximum_to_one():
    m = with_outliers()
    smooth.smooth_mlps(m, [{"input_ids": b} for b in CALIB], alpha=1.0)
    maxima = smooth.input_absmax(m, [{"input_ids": b} for b in CALIB], [m.model.layers[0].mlp.down_proj])[0]
    torch.testing.assert_close(maxima, torch.ones_like(maxima), rtol=1e-4, atol=1e-4)


def test_smoothed_dynamic_int8_is_closer_to_float_than_plain_dynamic_int8():
    m = with_outliers()
    ref = logits(m)
    plain = rl.quantize(m, rl.QuantConfig(mode="dynamic", skip=()))
    smoothed = rl.quantize(m, rl.QuantConfig(mode="dynamic", skip=(), smooth=0.5), calib=CALIB)
    err = {name: (logits(q) - ref).pow(2).mean().item() for name, q in (("plain", plain), ("smoothed", smoothed))}
    assert err["smoothed"] < err["plain"] / 2
    torch.testing.assert_close(logits(m), ref)  # the input model is untouched


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_a_smoothed_model_round_trips_through_save_and_load(tmp_path, mode):
    q = rl.quantize(with_outliers(), rl.QuantConfig(mode=mode, skip=(), smooth=0.5), calib=CALIB)
    back = rl.load(rl.save(q, tmp_path / mode))
    assert torch.equal(logits(back), logits(q))


@pytest.mark.parametrize("kw,message", [
    (dict(mode="dynamic", smooth=0.0), "smooth=0.0 is not allowed"),
    (dict(mode="dynamic", smooth=1.5), "smooth=1.5 is not allowed"),
    (dict(mode="dynamic", smooth=True), "smooth=True is not allowed"),
    (dict(mode="weight_only", bits=4, smooth=0.5), "not mode='weight_only'"),
])
def test_bad_smooth_values_are_named(kw, message):
    with pytest.raises(ValueError, match=message):
        rl.QuantConfig(**kw)


def test_smoothing_needs_calibration_and_llama_mlps():
    m = tiny()
    with pytest.raises(ValueError, match="smooth=0.5 needs calibration data"):
        rl.quantize(m, rl.QuantConfig(mode="dynamic", smooth=0.5))
    with pytest.raises(ValueError, match="calib is empty"):
        rl.quantize(m, rl.QuantConfig(mode="dynamic", smooth=0.5), calib=[])
    with pytest.raises(ValueError, match="Llama-style MLPs"):
        smooth.smooth_mlps(torch.nn.Sequential(torch.nn.Linear(4, 4)), [], 0.5)
