import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import ragcomp_lab as rl
from ragcomp_lab.quant import observers, primitives, static
from ragcomp_lab.quant.static import StaticQuantLinear
from ragcomp_lab.quant.targets import linear_targets
from test_quant_api import IDS, tiny

with warnings.catch_warnings():  # torch.ao.quantization is deprecated, but it is the reference
    warnings.simplefilter("ignore")
    from torch.ao.quantization import observer as ao

SCHEMES = [(True, torch.qint8, torch.per_tensor_symmetric), (False, torch.quint8, torch.per_tensor_affine)]


def batches(seed=0, n=6, shape=(4, 33)):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * (1 + i) + 0.3 * i for i in range(n)]


def cfg(**kw):
    return rl.QuantConfig(mode="static", skip=kw.pop("skip", ()), **kw)


CALIB = [torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(s)) for s in range(4)]


def quantized(model, calib=CALIB, **kw):
    q = copy.deepcopy(model)
    static.static_quantize(q, cfg(**kw), calib)
    return q


@pytest.fixture(scope="module")
def model():
    return tiny()


# ---- observers -----------------------------------------------------------------------------

@pytest.mark.parametrize("symmetric, dtype, qscheme", SCHEMES)
@pytest.mark.parametrize("ours, theirs", [(observers.MinMaxObserver, ao.MinMaxObserver),
                                          (observers.MovingAverageMinMaxObserver, ao.MovingAverageMinMaxObserver)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_observers_match_torch_ao(ours, theirs, symmetric, dtype, qscheme, seed):
    mine = ours(bits=8, symmetric=symmetric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = theirs(dtype=dtype, qscheme=qscheme)
        for x in batches(seed):
            mine.observe(x)
            ref(x)
        scale, zp = ref.calculate_qparams()
    s, z = mine.qparams()
    assert s.shape == () and torch.equal(s, scale.reshape(())) and int(z) == int(zp)


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_range_is_inside_minmax_and_near_the_quantile(symmetric):
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(0)) * 2 + 0.5
    mm, pc = observers.MinMaxObserver(symmetric=symmetric), observers.PercentileObserver(symmetric=symmetric,
                                                                                          percentile=99.9)
    for o in (mm, pc):
        o.observe(x)
    (lo, hi), (mlo, mhi) = pc.range(), mm.range()
    assert mlo <= lo <= 0 <= hi <= mhi and pc.qparams()[0] <= mm.qparams()[0]
    if symmetric:
        torch.testing.assert_close(hi, torch.quantile(x.abs(), 0.999), rtol=0.02, atol=0)
        assert lo == -hi
    else:
        torch.testing.assert_close(torch.stack([lo, hi]), torch.quantile(x, torch.tensor([0.001, 0.999])),
                                   rtol=0.02, atol=0)


def test_histogram_memory_is_bounded():
    o = observers.PercentileObserver()
    shapes = set()
    for x in batches(n=300, shape=(8, 64)):
        o.observe(x)
        shapes.add(tuple(o.counts.shape))
    assert shapes == {(2, observers.N_BINS)} and o.count == 300 * 8 * 64


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_observer_beats_minmax_on_heavy_tails(symmetric):
    x = torch.distributions.StudentT(2.0).sample((50_000,))  # heavy tails: min/max wastes the grid
    errors = {}
    for name in ("minmax", "mse"):
        o = observers.make_observer(name, symmetric=symmetric)
        o.observe(x)
        s, z = o.qparams()
        errors[name] = F.mse_loss(primitives.fake_quant(x, 8, symmetric, scale=s, zero_point=z), x)
    assert errors["mse"] <= errors["minmax"]


def test_mse_observer_error_is_the_sum_over_bins():
    o = observers.MSEObserver(symmetric=False)
    o.observe(torch.distributions.StudentT(3.0).sample((5000,)))
    v, n = o.values()
    for lo, hi in [(-5.0, 3.0), (-0.5, 10.0), (-100.0, 0.0)]:
        step = (hi - lo) / 255
        e = torch.where(v < lo, (v - lo) ** 2, torch.where(v > hi, (v - hi) ** 2,
                                                             torch.where(v.abs() < step / 2, v**2, step**2 / 12)))
        torch.testing.assert_close(o._error(torch.tensor(lo, dtype=torch.float64),
                                            torch.tensor(hi, dtype=torch.float64)), (e * n).sum())


def test_observers_name_bad_input():
    for name in observers.OBSERVERS:
        with pytest.raises(ValueError, match="has observed no values"):
            observers.make_observer(name).qparams()
    with pytest.raises(ValueError, match="observer='max' is not supported: use one of minmax"):
        observers.make_observer("max")
    with pytest.raises(ValueError, match="percentile=0"):
        observers.PercentileObserver(percentile=0)
    assert list(observers.OBSERVERS) == list(rl.QuantConfig.OBSERVERS)


# ---- StaticQuantLinear ---------------------------------------------------------------------

def layer(granularity="per_channel", bias=True, seed=0, shape=(40, 72)):
    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(shape[1], shape[0], bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(shape, generator=g) * 0.05)
    x = torch.randn(3, 5, shape[1], generator=g) * 2 + 0.4
    o = observers.MinMaxObserver(bits=static.ACT_BITS)
    o.observe(x[:, :4])  # the last position may fall outside the calibrated range: it is clamped
    return StaticQuantLinear.from_linear(lin, *o.qparams(), granularity=granularity), lin, x


@pytest.mark.parametrize("granularity", ["per_channel", "per_tensor"])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_is_quantize_int_matmul_dequantize_by_hand(granularity, bias):
    m, lin, x = layer(granularity, bias)
    sx, zx = m.input_scale, m.input_zero_point
    xq = primitives.quantize(x, sx, zx, static.ACT_BITS, symmetric=False)  # uint8 codes 0..127, affine
    sw, zw = primitives.qparams(lin.weight, 8, True, granularity)
    wq = primitives.quantize(lin.weight, sw, zw, 8, True, granularity)  # int8 codes, symmetric
    assert torch.equal(m.weight_int8, wq) and torch.equal(m.weight_scale, sw)
    acc = (xq.long() - zx.long()) @ wq.long().t()  # the integer matmul, exact
    y = acc.double() * (sx.double() * sw.double()) + (lin.bias.double() if bias else 0)
    torch.testing.assert_close(m(x), y.float(), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(m(x), m.reference(x), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(m.simulated(x), m.reference(x), rtol=1e-5, atol=1e-4)


def test_input_codes_are_torch_quantize_per_tensor_and_primitives_up_to_ties():
    m, _, _ = layer()
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(3)) * 2
    s, z = m._input_qparams
    codes = m.input_codes(x)
    assert codes.max() == static.ACT_MAX  # x reaches past the calibrated range: clipped to 7 bits
    # forward clips x to the 7-bit grid's range, then the kernel quantizes as torch.quantize_per_tensor does
    assert torch.equal(codes, torch.quantize_per_tensor(x.clamp(*m._input_clip), s, z, torch.quint8).int_repr())
    diff = (codes.int() - primitives.quantize(x, m.input_scale, m.input_zero_point, static.ACT_BITS, False).int()).abs()
    assert diff.max() <= 1 and diff.sum() <= 10  # a fused multiply-add rounds differently at exact ties


def test_state_round_trips_and_stores_codes():
    m, _, x = layer()
    spec, tensors = static.static_state(m)
    assert spec == dict(in_features=72, out_features=40, bias=True, granularity="per_channel")
    assert tensors["weight_int8"].dtype == torch.int8 and tensors["input_zero_point"].dtype == torch.int32
    back = static.static_from_state(spec, tensors)
    assert torch.equal(back(x), m(x)) and torch.equal(back.weight_int8, m.weight_int8)
    assert torch.equal(copy.deepcopy(m)(x), m(x))
    with pytest.raises(RuntimeError, match="weight_scale"):
        static.static_from_state(spec, {k: v for k, v in tensors.items() if k != "weight_scale"})


# ---- static_quantize on a model ------------------------------------------------------------

def test_static_int8_logits_stay_close_to_fp32(model):
    q = quantized(model)
    with torch.inference_mode():
        ref, out = model(IDS).logits, q(IDS).logits
    assert sum(isinstance(m, StaticQuantLinear) for m in q.modules()) == 15  # 7 per layer + the head
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.9
    assert (out - ref).norm() / ref.norm() < 0.05
    assert type(q.model.embed_tokens) is torch.nn.Embedding  # the tied head gets its own INT8 copy


def outlier_model():
    """The tiny model with one output channel of every Linear 30x larger than the rest."""
    m = tiny(seed=3)
    with torch.no_grad():
        for name, lin in m.named_modules():
            if type(lin) is torch.nn.Linear and name != "lm_head":
                lin.weight[0] *= 30
    return m


def test_per_tensor_weights_are_no_better_than_per_channel_with_an_outlier_channel():
    m = outlier_model()
    with torch.inference_mode():
        ref = m(IDS).logits
        err = {g: ((quantized(m, granularity=g)(IDS).logits - ref).norm() / ref.norm()).item()
               for g in ("per_tensor", "per_channel")}
    assert err["per_tensor"] >= err["per_channel"]


def test_moving_average_follows_its_recurrence_over_batches(model):
    targets = linear_targets(model, ())
    one = static.calibrate(model, targets, CALIB[:1], "moving_average")
    first = static.calibrate(model, targets, CALIB[:1], "minmax")
    per_batch = [static.calibrate(model, targets, [b], "minmax") for b in CALIB]
    many = static.calibrate(model, targets, CALIB, "moving_average")
    overall = static.calibrate(model, targets, CALIB, "minmax")
    for n in targets:
        assert torch.equal(torch.stack(one[n].range()), torch.stack(first[n].range()))  # one batch: its min/max
        lo, hi = per_batch[0][n].range()
        for obs in per_batch[1:]:  # m <- m + c (m_batch - m), in float32
            blo, bhi = obs[n].range()
            lo, hi = lo + 0.01 * (blo - lo), hi + 0.01 * (bhi - hi)
        assert torch.equal(torch.stack(many[n].range()), torch.stack([lo, hi]))
        olo, ohi = overall[n].range()
        assert olo <= lo <= hi <= ohi  # never wider than the overall min/max


@pytest.mark.parametrize("observer", rl.QuantConfig.OBSERVERS)
def test_every_observer_calibrates_a_model_and_leaves_no_hooks(model, observer):
    q = quantized(model, observer=observer)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in q.modules())
    with torch.inference_mode():
        assert (q(IDS).logits.argmax(-1) == model(IDS).logits.argmax(-1)).float().mean() >= 0.9


def test_calib_accepts_ids_and_tokenizer_dicts_with_padding(model):
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, 10:] = 0
    q = quantized(model, calib=[CALIB[0][0], {"input_ids": CALIB[1], "attention_mask": mask, "labels": CALIB[1]}])
    assert isinstance(q.lm_head, StaticQuantLinear)


def test_padding_positions_are_not_observed(model):
    targets = linear_targets(model, ())
    ids = CALIB[0]
    padded = {"input_ids": torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1),
              "attention_mask": torch.cat([torch.ones(2, 16), torch.zeros(2, 5)], 1).long()}
    plain, masked = (static.calibrate(model, targets, [b]) for b in (ids, padded))
    assert all(torch.equal(torch.stack(plain[n].range()), torch.stack(masked[n].range())) for n in targets)
    assert all(plain[n].count == masked[n].count for n in targets)


def test_skip_keeps_layers_in_float(model):
    q = quantized(model, skip=("*.mlp.down_proj", "lm_head"))
    assert type(q.model.layers[1].mlp.down_proj) is torch.nn.Linear and type(q.lm_head) is torch.nn.Linear
    assert isinstance(q.model.layers[1].mlp.up_proj, StaticQuantLinear)


def test_hooks_are_removed_when_a_batch_fails(model):
    q = copy.deepcopy(model)
    with pytest.raises(Exception):
        static.static_quantize(q, cfg(), [CALIB[0], torch.full((1, 4), 10_000)])  # token id out of range
    assert not any(m._forward_pre_hooks for m in q.modules()) and q.training is False


@pytest.mark.parametrize("calib, message", [
    (None, "mode='static' needs calibration data"), ([], "calib is empty"),
    (3, "calib must be a list of input batches, got int"),
    (IDS, "got a single Tensor: wrap it in a list"), ({"input_ids": IDS}, "got a single dict"),
    (["what is the capital?"], r"calib\[0\] is a str: each calibration batch must be an input_ids tensor"),
    ([IDS, {"ids": IDS}], r"calib\[1\] is a dict with keys \['ids'\]"),
    ([IDS.float()], r"calib\[0\]: input_ids must be a non-empty integer tensor"),
])
def test_bad_calib_is_named(model, calib, message):
    with pytest.raises(ValueError, match=message):
        static.static_quantize(copy.deepcopy(model), cfg(), calib)


@pytest.mark.parametrize("kw, message", [
    (dict(granularity="per_group", group_size=32), "granularity='per_group' is not supported by mode='static'"),
    (dict(symmetric=False), "use symmetric=True"),
])
def test_bad_config_is_named(model, kw, message):
    with pytest.raises(ValueError, match=message):
        static.static_quantize(copy.deepcopy(model), cfg(**kw), CALIB)


@pytest.mark.parametrize("observer", ["minmax", "moving_average", "percentile", "mse"])
def test_quantize_mode_static_calibrates_saves_and_loads(tmp_path, observer):
    import ragcomp_lab as rl
    from test_quant_api import IDS, tiny

    model = tiny()
    calib = [torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(s)) for s in range(4)]
    q = rl.quantize(model, rl.QuantConfig(bits=8, mode="static", observer=observer), calib=calib)
    kinds = {type(m).__name__ for m in q.modules()}
    assert "StaticQuantLinear" in kinds and isinstance(q.model.layers[0].mlp.down_proj, torch.nn.Linear)  # default skip
    with torch.inference_mode():
        out, ref = q(IDS).logits, model(IDS).logits
        back = rl.load(rl.save(q, tmp_path / observer))(IDS).logits
    assert torch.equal(back, out)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8
