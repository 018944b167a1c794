import pytest
import torch

import ragcomp_lab as rl
from ragcomp_lab import viz, widgets
from ragcomp_lab.widgets_quant import effect_html


def _w(shape=(16, 128)):
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.05
    w[2, 7] = 1.0
    return w


def _x(n=12, d=128):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def rows():
    test = rl.data.rag_splits(seed=0)["test"]
    answerable = [i for i, k in enumerate(test["kind"]) if k != "unanswerable"][:3]
    return test.select(answerable)


@pytest.fixture(scope="module")
def effects(teacher_and_tok, rows):
    teacher, tok = teacher_and_tok
    return {b: widgets.bits_effect(teacher, tok, rows, b, group_size=64, max_new_tokens=6) for b in (None, 8, 2)}


def test_layer_quant_panel_redraws_on_every_control():
    w, x = _w(), _x()
    panel = widgets.layer_quant_panel(w, x, bits=4, granularity="per_channel")
    assert repr(panel).startswith("Panel(") and panel.group_size.disabled
    assert list(panel.group_size.options) == [32, 64, 128]
    for bits in (2, 8):
        panel.bits.value = bits
        points = [v for v in panel.figure.data[1].x if v is not None][::2]
        assert len(points) == 2**bits and f"{bits}-bit" in panel.figure.layout.title.text
    panel.granularity.value = "per_group"
    assert not panel.group_size.disabled and "per_group 64" in panel.figure.layout.title.text
    panel.group_size.value = 32
    panel.symmetric.value = False
    assert panel.figure.layout.title.text == viz.layer_quant(w, x, 8, False, "per_group", 32).layout.title.text
    panel.granularity.value = "per_tensor"
    assert panel.figure.data[2].visible is False and panel.group_size.disabled


def test_layer_input_is_what_the_layer_reads(teacher_and_tok, rows):
    teacher, tok = teacher_and_tok
    prompt = rows[0]["prompt"]
    x = widgets.layer_input(teacher, tok, "model.layers.0.self_attn.q_proj", prompt)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        expected = teacher.model.layers[0].input_layernorm(teacher.model.embed_tokens(ids))[0]
    torch.testing.assert_close(x, expected)
    assert widgets.layer_input(teacher, tok, "model.layers.3.mlp.down_proj", prompt).shape == (ids.shape[1], 1536)


def test_bits_effect_degrades_with_fewer_bits(teacher_and_tok, effects, rows):
    fp32, int8, int2 = effects[None], effects[8], effects[2]
    assert fp32["model"] == "unquantized" and int8["model"] == "INT8 g64"
    assert fp32["question"] == rows[0]["query"] and fp32["gold"] == rows[0]["answer"]
    assert int8["answer"] == fp32["answer"]
    assert int8["answer_perplexity"] == pytest.approx(fp32["answer_perplexity"], rel=0.02)
    assert int2["answer_perplexity"] > 2 * int8["answer_perplexity"]
    assert int2["weight_mb"] < int8["weight_mb"] < fp32["weight_mb"]
    assert fp32["weight_mb"] == pytest.approx(4 * rl.models.param_counts(teacher_and_tok[0])["total"] / 1e6, rel=1e-4)
    assert fp32["quantize_seconds"] < int8["quantize_seconds"]


def test_effect_table_holds_every_model(effects):
    page = effect_html([effects[None], effects[2]])
    assert page.count("<tr>") == 2 and "unquantized" in page and "INT2 g64" in page


def test_teacher_bits_panel_answers_on_click(teacher_and_tok, rows):
    teacher, tok = teacher_and_tok
    panel = widgets.teacher_bits_panel(teacher, tok, rows, bits=8, group_size=64, max_new_tokens=4)
    assert list(panel.group_size.options) == [32, 64]  # 128 does not divide in_features 576
    assert "Press the button" in panel.result.value
    panel.question.value = 1
    panel.run()
    assert "unquantized" in panel.result.value and "INT8 g64" in panel.result.value
    assert rows[1]["query"] in panel.result.value


@pytest.mark.parametrize("kwargs,message", [
    (dict(bits=1), "bits=1"),
    (dict(bits=4, question=3), "question=3 .*0 to 2"),
    (dict(bits=4, question=True), "question=True"),
    (dict(bits=4, granularity="per_row"), "granularity='per_row'"),
    (dict(bits=4, group_size=100), "group_size=100 does not divide"),
    (dict(bits=4, max_new_tokens=0), "max_new_tokens=0"),
])
def test_bits_effect_names_bad_input(teacher_and_tok, rows, kwargs, message):
    teacher, tok = teacher_and_tok
    with pytest.raises(ValueError, match=message):
        widgets.bits_effect(teacher, tok, rows, **kwargs)


def test_bad_rows_prompt_and_layer_are_named(teacher_and_tok, rows):
    teacher, tok = teacher_and_tok
    with pytest.raises(ValueError, match="missing \\['answer'"):
        widgets.bits_effect(teacher, tok, rows.remove_columns("answer"), 4)
    with pytest.raises(ValueError, match="rows is empty"):
        widgets.bits_effect(teacher, tok, rows.select([]), 4)
    with pytest.raises(ValueError, match="layer='model.layers.99.mlp'"):
        widgets.layer_input(teacher, tok, "model.layers.99.mlp", "Hello")
    with pytest.raises(ValueError, match="prompt=''"):
        widgets.layer_input(teacher, tok, "model.layers.0.mlp.down_proj", "")
    with pytest.raises(ValueError, match="group sizes"):
        widgets.layer_quant_panel(torch.randn(4, 10), torch.randn(3, 10))
