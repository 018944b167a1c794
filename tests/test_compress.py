import pytest

import ragcomp_lab as rl
from ragcomp_lab import data, models
from ragcomp_lab.quant.linear import QuantLinear

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32)


@pytest.fixture(scope="module")
def setup(teacher_and_tok):
    big, tok = teacher_and_tok
    teacher = models.make_student(big, num_hidden_layers=2, hidden_size=64, intermediate_size=128, seed=1, **TINY)
    splits = data.rag_splits(seed=0)
    return teacher, tok, {"train": splits["train"].select(range(8)), "test": splits["test"].select(range(6))}


@pytest.fixture(scope="module")
def result(setup):
    teacher, tok, splits = setup
    cfg = rl.DistillConfig(T=2.0, alpha=0.5, steps=3, batch_size=2, lr=1e-3, seed=0)
    bar = rl.QualityBar(max_perplexity=1e12)
    return rl.compress(teacher, [0], splits, cfg, rl.QuantConfig(bits=4, granularity="per_group", group_size=32),
                       bar, tok=tok, qat_steps=2, progress=False)


def test_every_variant_is_evaluated_against_the_bar(result):
    assert list(result) == ["teacher FP32", "teacher INT8", "student FP32", "student INT8", "student INT4",
                            "student INT4 QAT"]
    assert all(isinstance(r, rl.Report) and r.name == n for n, r in result.items())
    assert result["teacher FP32"].agreement is None and result["student INT4"].agreement is not None
    assert set(result.verdicts) == set(result) and all(bool(v) for v in result.verdicts.values())
    assert len(result.history.losses) == 3


def test_the_variants_are_what_they_say(result):
    student, int4, qat = (result.models[n] for n in ("student FP32", "student INT4", "student INT4 QAT"))
    assert student.config.num_hidden_layers == 1
    for m in (int4, qat):
        assert isinstance(m.model.layers[0].mlp.up_proj, QuantLinear) and m.model.layers[0].mlp.up_proj.bits == 4
    sizes = {n: r.size["saved_bytes"] for n, r in result.items()}
    assert sizes["student INT4"] < sizes["student FP32"] < sizes["teacher FP32"]
    # dynamic INT8 keeps the float embedding and adds an INT8 copy of the tied head (quant/api.py): in a
    # tiny model the vocabulary is nearly everything, so only the non-embedding weights show the gain
    assert result["student INT8"].size["non_embedding_weights"] == result["student FP32"].size["non_embedding_weights"]
    assert result.passing()[0] in ("student INT4", "student INT4 QAT")  # smallest first
    assert {row["variant"] for row in result.table()} == set(result)


def test_a_bar_no_variant_meets_says_why(setup, result):
    verdict = result["student INT4"].meets(rl.QualityBar(f1=1.0))
    assert not verdict and "f1" in str(verdict)


@pytest.mark.parametrize("kw, message", [
    (dict(student_spec="small"), "student_spec='small' is not allowed"),
    (dict(data={"train": []}), "must hold a 'train' and a 'test' split"),
    (dict(quant_cfg=rl.QuantConfig(bits=8, mode="dynamic")), "mode 'weight_only' or 'gptq'"),
    (dict(bar=0.9), "bar must be a ragcomp_lab.QualityBar"),
])
def test_bad_arguments_are_named(setup, kw, message):
    teacher, tok, splits = setup
    args = dict(student_spec=[0], data=splits, quant_cfg=None, bar=None) | kw
    with pytest.raises(ValueError, match=message):
        rl.compress(teacher, args["student_spec"], args["data"], rl.DistillConfig(steps=1, batch_size=2),
                    args["quant_cfg"], args["bar"], tok=tok, progress=False)
