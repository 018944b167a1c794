"""Layer importance: a skipped layer is the model without it, and a layer that adds nothing to the
residual stream costs nothing and has no influence."""
import pytest
import torch

from ragcomp_lab import layer_choice as lc
from ragcomp_lab import models

TINY = dict(num_attention_heads=2, num_key_value_heads=1, head_dim=32, hidden_size=64, intermediate_size=128)
ROWS = {"prompt": ["Context: The Zelbor Max weighs 12 kilograms.\nQuestion: How heavy is it?\nAnswer:",
                   "Context: Quumoor lies on the river Tessel.\nQuestion: Which river?\nAnswer:"],
        "teacher_answer": ["12 kilograms", "Tessel"]}


@pytest.fixture(scope="module")
def tiny(teacher_and_tok):
    big, tok = teacher_and_tok
    model = models.make_student(big, num_hidden_layers=4, seed=5, **TINY)
    with torch.no_grad():  # layer 2 adds nothing: its attention and MLP outputs are zero
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    return model, tok


def test_skipping_a_layer_is_the_model_without_it(tiny):
    model, tok = tiny
    x = tok(ROWS["prompt"][0], return_tensors="pt")
    without = models.make_student(model, keep_layers=[0, 2, 3])
    with torch.no_grad(), lc.skipping(model, 1):
        skipped = model(**x, use_cache=False).logits
    with torch.no_grad():
        torch.testing.assert_close(skipped, without(**x, use_cache=False).logits)
        assert not torch.allclose(model(**x, use_cache=False).logits, skipped)  # and it is put back
    assert len(model.model.layers) == 4
    with pytest.raises(ValueError, match="layer=4"):
        with lc.skipping(model, 4):
            pass


def test_a_layer_that_adds_nothing_costs_nothing(tiny):
    model, tok = tiny
    cost = lc.removal_cost(model, tok, ROWS, batch_size=1)
    influence = lc.block_influence(model, tok, ROWS)
    assert len(cost) == len(influence) == 4
    assert cost[2] == pytest.approx(0.0, abs=1e-6) and influence[2] == pytest.approx(0.0, abs=1e-6)
    assert all(c != pytest.approx(0.0, abs=1e-4) for i, c in enumerate(cost) if i != 2)
    assert all(0 < b <= 2 for i, b in enumerate(influence) if i != 2)
    assert lc.removal_cost(model, tok, ROWS, batch_size=2) == pytest.approx(cost, abs=1e-4)  # padding changes nothing
    with pytest.raises(ValueError, match="no rows"):
        lc.removal_cost(model, tok, {"prompt": [], "teacher_answer": []})


def test_layer_choices():
    assert lc.keep_most_important([0.5, 0.1, float("nan"), 0.3], 2) == [0, 2]
    assert lc.keep_most_important([0.5, 0.1, 0.2, 0.3], 3) == [0, 2, 3]
    assert lc.evenly_spaced(30, 6) == [0, 6, 12, 17, 23, 29]
    assert lc.evenly_spaced(30, 2) == [0, 29] and lc.evenly_spaced(30, 30) == list(range(30))
    assert lc.ends(30, 6) == [0, 1, 2, 27, 28, 29] and lc.ends(30, 5) == [0, 1, 27, 28, 29]
    for bad in (lambda: lc.keep_most_important([1.0], 2), lambda: lc.evenly_spaced(4, 5),
                lambda: lc.ends(4, 0)):
        with pytest.raises(ValueError):
            bad()
