import pytest

import ragcomp_lab as rl


def test_defaults_are_valid_and_round_trip():
    cfg = rl.DistillConfig()
    assert rl.DistillConfig(**cfg.to_dict()) == cfg
    q = rl.QuantConfig(bits=4)
    assert (q.bits, q.mode, q.granularity) == (4, "weight_only", "per_channel")
    assert rl.QuantConfig().bits == 8
    assert rl.QuantConfig(mode="fp16").bits == 16


@pytest.mark.parametrize("field, value, message", [
    ("T", 0, "T=0"), ("T", -2.0, "T=-2.0"), ("T", float("nan"), "T=nan"), ("T", float("inf"), "T=inf"),
    ("alpha", 1.5, r"alpha=1.5 .* \[0, 1\]"), ("alpha", -0.1, "alpha=-0.1"),
    ("steps", 0, "steps=0"), ("batch_size", 2.5, "batch_size=2.5"), ("lr", 0, "lr=0"),
    ("seed", -1, "seed=-1"), ("grad_accum", 0, "grad_accum=0"), ("weight_decay", -1, "weight_decay=-1"),
])
def test_distill_config_names_the_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        rl.DistillConfig(**{field: value})


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=1), r"bits=1 .* 2 to 8"), (dict(bits=9), "bits=9"), (dict(bits=4.0), "bits=4.0"),
    (dict(bits=True), "bits=True"), (dict(mode="int3"), "mode='int3'"),
    (dict(mode="dynamic", bits=4), "bits=4 is not supported by mode='dynamic'"),
    (dict(mode="fp16", bits=8), "bits=8 does not fit mode='fp16'"),
    (dict(granularity="per_row"), "granularity='per_row'"),
    (dict(granularity="per_group"), "needs a group_size"),
    (dict(granularity="per_group", group_size=0), "group_size=0"),
    (dict(group_size=32), "group_size=32 is only allowed"),
    (dict(symmetric="yes"), "symmetric='yes'"),
])
def test_quant_config_names_the_bad_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        rl.QuantConfig(**kwargs)
