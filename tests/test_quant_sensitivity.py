"""Per-layer sensitivity and mixed precision, tested by their properties on a tiny Llama."""
import copy

import pytest
import torch
from datasets import Dataset

import ragcomp_lab as rl
from ragcomp_lab import evaluation
from ragcomp_lab.quant import sensitivity as S
from test_quant_api import tiny

W4 = rl.QuantConfig(bits=4, mode="weight_only", granularity="per_tensor")
OUTLIER = "model.layers.1.mlp.down_proj"


class Tok:
    """Characters as token ids: enough for encode_pair and collate."""
    pad_token_id, eos_token_id = 0, 1

    def __call__(self, text, add_special_tokens=False, **kw):
        return type("Enc", (), {"input_ids": [2 + ord(c) % 250 for c in text]})()


TOK = Tok()
ROWS = Dataset.from_dict({
    "prompt": ["Context: Kisdora was founded in 1991. Question: when? Answer:", "Q: where is Orlo? Answer:",
               "Context: no facts here. Question: who? Answer:"],
    "answer": ["1991", "in Vell", "unknown"], "kind": ["fact", "fact", "unanswerable"]})


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def table(model):
    return S.layer_sensitivity(model, TOK, ROWS, W4)


def test_table_is_every_linear_sorted_most_sensitive_first(model, table):
    names = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]
    assert sorted(r["layer"] for r in table) == sorted(names)
    assert [r["rank"] for r in table] == list(range(1, len(names) + 1))
    assert all(a["kl"] >= b["kl"] for a, b in zip(table, table[1:]))
    assert all(r["kl"] >= 0 and 0 <= r["top1"] <= 1 for r in table)
    assert {r["kind"] for r in table} >= {"q_proj", "down_proj", "lm_head"}


def test_outlier_heavy_layer_ranks_most_sensitive():
    m = tiny()
    with torch.no_grad():  # a layer that matters (weights x10) with one huge weight: the per-tensor INT4
        w = m.get_submodule(OUTLIER).weight  # step it sets swallows every other weight of the layer
        w *= 10
        w[0, 0] = 200 * w.abs().max()
    table = S.layer_sensitivity(m, TOK, ROWS, W4)
    assert table[0]["layer"] == OUTLIER
    assert S.mixed_precision_skip(table, 1) == (OUTLIER,)


def test_one_layer_at_a_time_matches_quantizing_it_alone(model, table):
    ref = S.reference(model, TOK, ROWS)
    for row in (table[0], table[-1], next(r for r in table if r["layer"] == "lm_head")):
        others = tuple(r["layer"] for r in table if r["layer"] != row["layer"])
        alone = rl.quantize(model, rl.QuantConfig(bits=4, mode="weight_only", granularity="per_tensor", skip=others))
        got = S.agreement(alone, ref)
        assert got["token_kl"] == pytest.approx(row["kl"], rel=1e-3, abs=1e-9)
        assert got["top1"] == row["top1"]


def test_skipping_every_layer_gives_zero_error(model, table):
    skip = S.mixed_precision_skip(table, len(table))
    assert len(skip) == len(table)
    q = rl.quantize(model, rl.QuantConfig(bits=4, mode="weight_only", granularity="per_tensor", skip=skip))
    got = S.agreement(q, S.reference(model, TOK, ROWS))
    assert got == {"token_kl": 0.0, "top1": 1.0}
    assert S.mixed_precision_skip(table, 0) == ()


def test_more_layers_kept_in_float_is_the_head_of_the_ranking(table):
    assert S.mixed_precision_skip(table, 3) == tuple(r["layer"] for r in table[:3])
    assert S.mixed_precision_skip(list(reversed(table)), 3) == S.mixed_precision_skip(table, 3)


def test_agreement_is_token_agreement_without_rerunning_the_reference(model):
    q = rl.quantize(model, rl.QuantConfig(mode="dynamic", skip=()))
    got, want = S.agreement(q, S.reference(model, TOK, ROWS)), evaluation.token_agreement(q, model, TOK, ROWS)
    assert got["top1"] == want["top1"] and got["token_kl"] == pytest.approx(want["token_kl"], rel=1e-4, abs=1e-9)


def test_model_is_left_as_it_was(model):
    before = copy.deepcopy(model.state_dict())
    types = [type(m) for m in model.modules()]
    S.layer_sensitivity(model, TOK, ROWS, rl.QuantConfig(mode="dynamic"), layers=("*.mlp.down_proj", "lm_head"))
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie survives the swaps


def test_layers_and_positions_restrict_the_measure(model):
    t = S.layer_sensitivity(model, TOK, ROWS, rl.QuantConfig(mode="dynamic"), layers=("*.mlp.down_proj",),
                            positions="all")
    assert [r["kind"] for r in t] == ["down_proj", "down_proj"] and {r["block"] for r in t} == {0, 1}
    ref = S.reference(model, TOK, ROWS, positions="all")
    assert ref.count > S.reference(model, TOK, ROWS).count


def test_static_needs_calibration_and_measures_with_it(model):
    with pytest.raises(ValueError, match="calib"):
        S.layer_sensitivity(model, TOK, ROWS, rl.QuantConfig(mode="static"))
    calib = [torch.randint(2, 256, (2, 16), generator=torch.Generator().manual_seed(s)) for s in range(3)]
    t = S.layer_sensitivity(model, TOK, ROWS, rl.QuantConfig(mode="static"), calib, layers=("lm_head",))
    assert [r["layer"] for r in t] == ["lm_head"] and t[0]["kl"] > 0


@pytest.mark.parametrize("n, match", [(-1, "n=-1"), (1.5, "n=1.5"), (True, "n=True"), (10**6, "n=1000000")])
def test_bad_n_is_named(table, n, match):
    with pytest.raises(ValueError, match=match):
        S.mixed_precision_skip(table, n)


def test_bad_table_is_refused():
    with pytest.raises(ValueError, match="table"):
        S.mixed_precision_skip([{"name": "x"}], 1)


@pytest.mark.parametrize("kw, match", [
    (dict(positions="prompt"), "positions='prompt'"),
    (dict(layers=("nope.*",)), r"\['nope.\*'\]"),
    (dict(layers="lm_head"), "layers='lm_head'"),
    (dict(cfg=rl.QuantConfig(mode="fp16")), "mode='fp16'"),
    (dict(cfg="int8"), "str"),
    (dict(rows=Dataset.from_dict({"prompt": ["a"]})), "missing"),
    (dict(rows=ROWS.select([2])), "answerable"),
    (dict(batch_size=0), "batch_size=0"),
])
def test_bad_input_is_named(model, kw, match):
    args = dict(rows=ROWS, cfg=rl.QuantConfig(mode="dynamic")) | kw
    with pytest.raises(ValueError, match=match):
        S.layer_sensitivity(model, TOK, args.pop("rows"), args.pop("cfg"), **args)
