"""Rows derived from the test bed to teach reading: a fact removed (-> the refusal), a longer value."""
import random
import re

import pytest

from ragcomp_lab import data, teacher_adapter
from ragcomp_lab.data import augment, kb, varied

SEED = 6  # a training seed of the adapter's second stage


@pytest.fixture(scope="module")
def rows():
    return list(data.rag_splits(seed=SEED)["train"])


@pytest.fixture(scope="module")
def world():
    return {e.name: e for e in kb.build_world(SEED, extra=True)}


def _states(text: str, value: str) -> bool:
    return re.search(r"(?<![\w-])" + re.escape(value) + r"(?![\w-])", text) is not None \
        or varied.adjectival(value) in text


def test_a_document_written_without_a_fact_keeps_every_other_fact(world):
    entity = next(e for e in world.values() if e.type == "product" and e.group == 20)
    for attribute, value in entity.facts:
        text = varied.document_without(SEED, entity.name, attribute)
        others = [(a, v) for a, v in entity.facts if a != attribute]
        assert all(_states(text, v) for a, v in others), (attribute, text)
        same = [o for o in world.values() if o.group == entity.group and o is not entity and o.fact(attribute) == value]
        if not same:  # no distractor shares the value: it is gone from the document
            assert not _states(text, value), (attribute, text)
        assert text == varied.document_without(SEED, entity.name, attribute)  # deterministic


def test_document_without_names_a_bad_entity_or_attribute(world):
    entity = next(iter(world.values()))
    with pytest.raises(ValueError, match="not an entity"):
        varied.document_without(SEED, "Nobody Atall", "hobby")
    missing = next(a for a in kb.OPTIONAL[entity.type] if entity.fact(a) is None)
    with pytest.raises(ValueError, match=f"attribute='{missing}' is not stated"):
        varied.document_without(SEED, entity.name, missing)


def test_without_fact_removes_the_answer_from_its_passage_only(rows, world):
    made = [(r, augment.without_fact(r, SEED)) for r in rows]
    made = [(r, w) for r, w in made if w is not None]
    assert len(made) >= 200  # most answerable rows have such a twin
    kinds = {r["kind"] for r, _ in made}
    assert kinds == {"single_fact", "two_hop"}
    for row, twin in made:
        entity, attribute = augment.asked_fact(row, SEED)
        changed = [i for i, (a, b) in enumerate(zip(row["passages"], twin["passages"])) if a != b]
        assert changed == [row["passage_ids"].index(entity.doc_id)]
        assert twin["answer"] == data.REFUSAL and twin["kind"] == "unanswerable" and twin["query"] == row["query"]
        assert twin["prompt"] == data.build_prompt(row["query"], twin["passages"])
        assert world[entity.name].fact(attribute) == row["answer"]
        # no other passage states it (the first test checks that a rewritten document loses it)
        assert set(varied.stated_by(SEED, entity.name, attribute)) & set(row["passage_ids"]) == {entity.doc_id}


def _name_and_attribute(row):
    entity, attribute = augment.asked_fact(row, SEED)
    return entity.name, attribute


def test_without_fact_gives_none_where_the_fact_stays_stated(rows):
    unanswerable = next(r for r in rows if r["kind"] == "unanswerable")
    assert augment.without_fact(unanswerable, SEED) is None
    both_sides = [r for r in rows if r["kind"] != "unanswerable" and augment.asked_fact(r, SEED) is not None
                  and len(set(varied.stated_by(SEED, *_name_and_attribute(r))) & set(r["passage_ids"])) > 1]
    assert both_sides and all(augment.without_fact(r, SEED) is None for r in both_sides)


def test_longer_value_replaces_the_value_in_the_passage_and_the_answer(rows):
    rng = random.Random(0)
    made = [(r, augment.longer_value(r, SEED, rng)) for r in rows]
    made = [(r, m) for r, m in made if m is not None]
    assert len(made) >= 100
    shapes = set()
    for row, longer in made:
        assert longer["answer"] != row["answer"] and len(longer["answer"]) > len(row["answer"])
        assert sum(p.count(longer["answer"]) for p in longer["passages"]) == 1
        assert longer["prompt"] == data.build_prompt(row["query"], longer["passages"])
        number = re.match(r"\d+", row["answer"])
        if number:  # the same number, then more words
            assert longer["answer"].startswith(number.group() + " ")
            shapes.add("range" if " to " in longer["answer"] else "compound")
        else:
            assert longer["answer"].split()[0] in augment.SHADES and longer["answer"].endswith(row["answer"])
            shapes.add("shade")
    assert shapes == {"range", "compound", "shade"}


def test_longer_value_skips_years_and_values_that_are_not_written_out_once(rows):
    rng = random.Random(0)
    for row in rows:
        fact = augment.asked_fact(row, SEED)
        if fact and fact[1] in augment.YEARS:
            assert augment.longer_value(row, SEED, rng) is None
    assert augment._longer("1987", "birth_year", rng) is None
    assert augment._longer("Darnmoor", "born_in", rng) is None


def test_the_second_stage_rows_pair_each_fact_with_its_removal_and_hold_out_seed_0():
    recipe = dict(teacher_adapter.ATTEMPT4, extra_rows=0, without_fact=6, longer_values=4)
    rows = teacher_adapter.training_rows(recipe)
    assert len(rows) == 16
    pairs = [(rows[i], rows[i + 1]) for i in range(0, 12, 2)]
    assert all(b["answer"] == data.REFUSAL and a["answer"] != data.REFUSAL and a["prompt"].split("Question:")[1]
               == b["prompt"].split("Question:")[1] for a, b in pairs)
    with pytest.raises(ValueError, match="too few"):
        teacher_adapter.training_rows(dict(recipe, derived_seeds=[], without_fact=1))
    seed0 = data.rag_splits(seed=0)
    held = {e for s in ("validation", "test", "test_new_wording", "test_new_domain") for es in seed0[s]["entities"]
            for e in es}
    assert not any(name in p for p in rows["prompt"] for name in held if " " in name)
