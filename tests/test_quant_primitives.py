import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ragcomp_lab import quant

with warnings.catch_warnings():  # torch.ao.quantization is deprecated, but it is the reference
    warnings.simplefilter("ignore")
    from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

BITS = range(2, 9)
seeds = st.integers(0, 2**31 - 1)


def _x(seed, shape=(8, 64), scale=2.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * scale + shift


def _observer(bits, symmetric, per_channel):
    q_min, q_max = quant.int_range(bits, symmetric)
    scheme = {(False, False): torch.per_tensor_affine, (True, False): torch.per_tensor_symmetric,
              (False, True): torch.per_channel_affine, (True, True): torch.per_channel_symmetric}
    kw = dict(dtype=torch.qint8 if symmetric else torch.quint8, qscheme=scheme[symmetric, per_channel],
              quant_min=q_min, quant_max=q_max)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return PerChannelMinMaxObserver(ch_axis=0, **kw) if per_channel else MinMaxObserver(**kw)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("granularity", ["per_tensor", "per_channel"])
@pytest.mark.parametrize("shift", [0.0, 1.5, -4.0])  # centred, mostly positive, all negative
def test_qparams_match_torch_observers(bits, symmetric, granularity, shift):
    x = _x(bits, shift=shift)
    obs = _observer(bits, symmetric, granularity == "per_channel")
    obs(x)
    want_scale, want_zp = obs.calculate_qparams()
    scale, zp = quant.qparams(x, bits, symmetric, granularity)
    torch.testing.assert_close(scale.reshape(-1), want_scale.float(), rtol=0, atol=0)
    torch.testing.assert_close(zp.reshape(-1).long(), want_zp.long(), rtol=0, atol=0)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quant_per_tensor_matches_torch_output_and_gradient(bits, symmetric):
    x = _x(10 + bits).requires_grad_(True)
    scale, zp = quant.qparams(x * 0.6, bits, symmetric)  # a range narrower than x: some values clip
    q_min, q_max = quant.int_range(bits, symmetric)
    ours = quant.fake_quant(x, bits, symmetric, scale=scale, zero_point=zp)
    ref = torch.fake_quantize_per_tensor_affine(x, scale, zp, q_min, q_max)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g_ours, = torch.autograd.grad(ours.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=0)
    assert 0 < g_ours.sum() < x.numel()  # some values were clipped, some passed straight through


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("symmetric", [True, False])
def test_fake_quant_per_channel_matches_torch_output_and_gradient(bits, symmetric):
    x = _x(20 + bits, (6, 5, 4)).requires_grad_(True)
    scale, zp = quant.qparams(x * 0.7, bits, symmetric, "per_channel")
    q_min, q_max = quant.int_range(bits, symmetric)
    ours = quant.fake_quant(x, bits, symmetric, "per_channel", scale=scale, zero_point=zp)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zp, 0, q_min, q_max)
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    g_ours, = torch.autograd.grad(ours.sum(), x)
    g_ref, = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=0, atol=0)


def test_per_channel_along_another_axis_matches_torch():
    x = _x(3, (4, 7))
    scale, zp = quant.qparams(x, 4, False, "per_channel", axis=1)
    assert scale.shape == (7,)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zp, 1, 0, 15)
    torch.testing.assert_close(quant.fake_quant(x, 4, False, "per_channel", axis=1), ref, rtol=0, atol=0)


GRANULARITIES = [("per_tensor", None), ("per_channel", None), ("per_group", 16), ("per_group", 64)]


@settings(max_examples=40)
@given(seeds, st.sampled_from(BITS), st.booleans(), st.sampled_from(GRANULARITIES), st.floats(0.01, 100))
def test_error_at_most_half_a_step_and_codes_in_range(seed, bits, symmetric, gran, magnitude):
    granularity, group_size = gran
    x = _x(seed, scale=magnitude)
    scale, zp = quant.qparams(x, bits, symmetric, granularity, group_size)
    q = quant.quantize(x, scale, zp, bits, symmetric, granularity, group_size)
    q_min, q_max = quant.int_range(bits, symmetric)
    assert q.dtype == (torch.int8 if symmetric else torch.uint8)
    assert q.int().min() >= q_min and q.int().max() <= q_max
    x_hat = quant.dequantize(q, scale, zp, granularity, group_size)
    torch.testing.assert_close(x_hat, quant.fake_quant(x, bits, symmetric, granularity, group_size), rtol=0, atol=0)
    # every value is inside the range its own qparams were computed from: no clipping, error <= S/2
    # (up to float32 rounding of x itself: the extreme symmetric value lands exactly on S/2)
    half_step = _broadcast(scale, x, granularity, group_size) / 2
    assert ((x - x_hat).abs() <= half_step + 1e-6 * x.abs()).all()


def _broadcast(scale, x, granularity, group_size):
    if granularity == "per_tensor":
        return scale.expand_as(x)
    if granularity == "per_channel":
        return scale[:, None].expand_as(x)
    return scale.repeat_interleave(group_size, dim=-1)


def test_per_group_qparams_are_those_of_each_group_alone():
    x = _x(1, (4, 96))
    scale, zp = quant.qparams(x, 4, False, "per_group", 32)
    assert scale.shape == zp.shape == (4, 3)
    for r in range(4):
        for g in range(3):
            s, z = quant.qparams(x[r, 32 * g:32 * (g + 1)], 4, False, "per_tensor")
            assert scale[r, g] == s and zp[r, g] == z


def test_one_group_per_row_is_per_channel():
    x = _x(2, (5, 48))
    for sym in (True, False):
        torch.testing.assert_close(quant.fake_quant(x, 3, sym, "per_group", 48),
                                   quant.fake_quant(x, 3, sym, "per_channel"), rtol=0, atol=0)


def test_smaller_groups_quantize_more_accurately():
    x = _x(3, (16, 256))
    x[:, ::37] *= 20  # outliers: the reason per-group exists
    err = {g: (quant.fake_quant(x, 4, True, "per_group", g) - x).pow(2).mean().item() for g in (256, 64, 16)}
    assert err[16] < err[64] < err[256]


def test_zero_is_exactly_representable():
    x = _x(4, (3, 64), shift=5.0)  # all positive: the range is widened to hold 0
    for sym in (True, False):
        for gran, gs in GRANULARITIES:
            scale, zp = quant.qparams(x, 3, sym, gran, gs)
            zero = quant.dequantize(quant.quantize(torch.zeros_like(x), scale, zp, 3, sym, gran, gs), scale, zp, gran, gs)
            assert (zero == 0).all()


def test_fake_quant_gradient_is_straight_through_inside_and_zero_outside():
    x = torch.tensor([-3.0, -0.4, 0.0, 0.3, 0.9, 2.5], requires_grad=True)
    scale, zp = torch.tensor(0.125), torch.tensor(0, dtype=torch.int32)  # 4-bit symmetric: [-1.0, 0.875]
    y = quant.fake_quant(x, 4, True, scale=scale, zero_point=zp)
    torch.testing.assert_close(y, torch.tensor([-1.0, -0.375, 0.0, 0.25, 0.875, 0.875]))
    g, = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.0, 1, 1, 1, 1, 0]))


def test_constant_and_zero_tensors_do_not_divide_by_zero():
    for x in (torch.zeros(4, 8), torch.full((4, 8), 3.0)):
        y = quant.fake_quant(x, 8, False, "per_channel")
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, x, atol=3.0 / 255, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=1), r"bits=1 is not supported: use an integer from 2 to 8"),
    (dict(bits=9), "bits=9"), (dict(bits=4.0), "bits=4.0"), (dict(bits=True), "bits=True"),
    (dict(bits=4, granularity="per_row"), "granularity='per_row' is not supported"),
    (dict(bits=4, granularity="per_group", group_size=5), "group_size=5 does not divide the last dim of x, 64"),
    (dict(bits=4, granularity="per_group"), "group_size=None"),
    (dict(bits=4, granularity="per_tensor", group_size=32), "only allowed with granularity='per_group'"),
    (dict(bits=4, granularity="per_channel", axis=3), "axis=3 is out of range"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quant.qparams(_x(0), **kwargs)
    with pytest.raises(ValueError, match=message):
        quant.fake_quant(_x(0), **kwargs)


def test_half_given_qparams_and_integer_input_are_refused():
    with pytest.raises(ValueError, match="pass both scale and zero_point"):
        quant.fake_quant(_x(0), 8, scale=torch.tensor(0.1))
    with pytest.raises(ValueError, match="floating-point"):
        quant.qparams(torch.arange(8), 8)
