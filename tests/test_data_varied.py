"""The default test bed (version 2): many wordings per fact, a held-out wording, a new domain."""
import re
from collections import Counter

import pytest

import ragcomp_lab.data as data
from ragcomp_lab.data import kb, varied
from ragcomp_lab.data import wording as W
from ragcomp_lab.data.splits import with_evidence

SPLITS = ("train", "validation", "test", "test_new_wording", "test_new_domain")
TRAINED = ("train", "validation", "test")  # the splits written in the training wordings
MAIN_TYPES = set(kb.TYPES)


@pytest.fixture(scope="module")
def splits():
    return data.rag_splits(seed=0)


@pytest.fixture(scope="module")
def docs():
    return {d["id"]: d for d in data.knowledge_base(seed=0)}


def _regex(template: str) -> re.Pattern:
    """A template as a pattern: each {field} matches any text."""
    parts = re.split(r"\{[a-zA-Z_]+\}", template)
    return re.compile("^" + "(.+?)".join(re.escape(p) for p in parts) + "$", re.IGNORECASE)


def _statement_forms(etype, attribute, pool):
    forms = W.STATE[(etype, attribute)][pool][:]
    if W.LABELS.get(attribute):
        forms += [t for t in W.GENERIC[pool] if "{a_label}" not in t or attribute in W.MEASURES]
    if attribute in W.MEASURES:
        forms += W.COMPARE[pool]
    return forms + ([W.LIST[pool]] if W.LABELS.get(attribute) else [])


def _patterns(pool, etype):
    """The forms a document about an `etype` may use for its own facts in `pool`."""
    return {_regex(t) for key in W.STATE if key[0] == etype for t in _statement_forms(*key, pool)}


def test_every_attribute_can_be_stated_six_ways_and_asked_three_ways():
    for (etype, attribute) in W.STATE:
        forms = _statement_forms(etype, attribute, "train") + _statement_forms(etype, attribute, "held_out")
        assert len(set(forms)) >= 6, (etype, attribute)
        asked = W.ASK[(etype, attribute)]["train"] + W.ASK[(etype, attribute)]["held_out"]
        assert len(asked) >= (3 if etype in MAIN_TYPES else 2), (etype, attribute)
        if etype in MAIN_TYPES:  # the held-out split has wordings of its own for every attribute
            assert W.STATE[(etype, attribute)]["held_out"] and W.ASK[(etype, attribute)]["held_out"]
            assert not set(W.STATE[(etype, attribute)]["held_out"]) & set(W.STATE[(etype, attribute)]["train"])
    assert all("{s}" in t or "{S}" in t for v in W.STATE.values() for pool in v.values() for t in pool)


def test_some_wordings_need_a_light_transformation(docs):
    text = " ".join(d["text"] for d in docs.values())
    assert re.search(r"comes with a \d+-year warranty", text)  # "2 years" given as "2-year"
    assert re.search(r"\w+ was founded by [A-Z]", text)  # a relation from the other side
    assert "at a glance:" in text and ", while " in text  # a list; two entities in one sentence


def test_every_split_has_its_size_mix_and_the_columns(splits):
    assert list(splits) == list(SPLITS)
    for split in SPLITS:
        rows = splits[split]
        assert len(rows) >= 60
        assert rows.column_names == ["id", "query", "passages", "passage_ids", "prompt", "answer", "kind",
                                     "entities", "support_ids"]
        kinds = Counter(rows["kind"])
        assert kinds["unanswerable"] / len(rows) == pytest.approx(0.25, abs=0.02)
        assert kinds["two_hop"] / len(rows) == pytest.approx(0.25, abs=0.02)
    assert [len(splits[s]) for s in SPLITS] == [600, 90, 150, 120, 120]


def test_splits_share_no_entity_and_no_document(splits, docs):
    named = {s: {e for es in splits[s]["entities"] for e in es} for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not named[a] & named[b], (a, b)
    by_entity = {d["entity"]: d for d in docs.values()}
    assert {by_entity[e]["type"] for e in named["test_new_domain"]} == {"vehicle", "museum"}
    assert all(by_entity[e]["type"] in MAIN_TYPES for s in SPLITS[:4] for e in named[s])


def test_no_training_prompt_holds_a_held_out_wording_or_the_new_domain(splits, docs):
    for split in TRAINED:
        for ids in splits[split]["passage_ids"]:
            assert all(int(i.split("-")[1]) < kb.N_GROUPS for i in ids)
    held_out_queries = {t for v in W.ASK.values() for t in v["held_out"]}
    train_queries = [_regex(t) for v in W.ASK.values() for t in v["train"]]
    for q in splits["test_new_wording"]["query"]:
        assert not any(p.match(q) for p in train_queries), q
    assert held_out_queries  # and each held-out query is made of a held-out form (checked by the wording test)


def test_held_out_documents_use_only_held_out_forms_and_the_others_only_trained_ones(docs):
    patterns = {(pool, t): _patterns(pool, t) for pool in ("train", "held_out") for t in MAIN_TYPES}
    for doc in docs.values():
        group = int(doc["id"].split("-")[1])
        if group in kb.NEW_DOMAIN_GROUPS:
            continue
        pool = "held_out" if group in kb.NEW_WORDING_GROUPS else "train"
        mine = patterns[(pool, doc["type"])]
        for sentence in re.split(r"(?<=[.])\s(?=[A-Z])", doc["text"]):
            if not _regex(W.INTRO[doc["type"]]).match(sentence):
                assert any(p.match(sentence) for p in mine), (pool, sentence)
    for forms in (W.GENERIC, W.COMPARE, *W.ASK.values(), *W.BRIDGE.values()):  # the two pools never share a form
        assert not set(forms["train"]) & set(forms["held_out"])
    assert W.LIST["train"] != W.LIST["held_out"] and W.LIST_ITEM["train"] != W.LIST_ITEM["held_out"]


def test_single_facts_are_stated_by_every_support_document(splits, docs):
    for split in SPLITS:
        for row in splits[split]:
            if row["kind"] != "single_fact":
                continue
            answer = row["answer"]
            forms = {answer, varied.adjectival(answer)}
            assert row["support_ids"] and row["entities"][0] in docs[row["support_ids"][0]]["text"]
            assert all(any(f in docs[s]["text"] for f in forms) for s in row["support_ids"]), row


def test_two_hop_questions_chain_two_documents(splits, docs):
    for split in SPLITS:
        for row in (r for r in splits[split] if r["kind"] == "two_hop"):
            first, bridge = (docs[s] for s in row["support_ids"])
            assert first["entity"] in row["query"] and bridge["entity"] not in row["query"]
            assert bridge["entity"] in first["text"] and (row["answer"] in bridge["text"]
                                                         or varied.adjectival(row["answer"]) in bridge["text"])


def test_unanswerable_questions_ask_what_no_document_states_about_an_entity_the_passages_name(splits, docs):
    world = {e.name: e for e in kb.build_world(0, extra=True)}
    for split in SPLITS:
        for row in (r for r in splits[split] if r["kind"] == "unanswerable"):
            entity = world[row["entities"][0]]
            asked = [a for a in kb.OPTIONAL[entity.type] if entity.fact(a) is None]
            assert len(asked) == 1 and row["answer"] == data.REFUSAL and row["support_ids"] == []
            assert varied.stated_by(0, entity.name, asked[0]) == []
            stated = next(a for a in kb.OPTIONAL[entity.type] if a != asked[0])
            assert varied.stated_by(0, entity.name, stated)  # the same record does see a stated one
            assert any(entity.name in p for p in row["passages"])


def test_passages_hold_the_evidence_in_varied_order(splits):
    for split in SPLITS:
        first = Counter()
        for row in splits[split]:
            if row["kind"] == "unanswerable":
                continue
            needed = row["support_ids"] if row["kind"] == "two_hop" else row["support_ids"][:1]
            assert any(s in row["passage_ids"] for s in row["support_ids"]), row["id"]
            if row["kind"] == "two_hop":
                assert all(s in row["passage_ids"] for s in needed), row["id"]
            first[min(row["passage_ids"].index(s) for s in row["support_ids"] if s in row["passage_ids"])] += 1
        assert set(first) == {0, 1, 2} and first[0] < 0.7 * sum(first.values()), (split, first)


def test_with_evidence_replaces_only_the_lowest_ranked_passages_not_needed():
    assert with_evidence(["a", "b", "c"], ["b"]) == ["a", "b", "c"]
    assert with_evidence(["a", "b", "c"], ["x"]) == ["a", "b", "x"]
    assert with_evidence(["a", "b", "c"], ["x", "a"]) == ["a", "b", "x"]
    assert with_evidence(["a", "b", "c"], ["x", "y"]) == ["a", "y", "x"]


def test_some_documents_name_another_entity_with_the_same_attribute(docs):
    # distractors: a sentence about two entities states both values
    two = [d for d in docs.values() if ", while " in d["text"] or d["text"].count("Compared with")]
    assert len(two) >= 50


def test_the_test_bed_is_deterministic_and_versions_differ():
    assert varied.build_questions(0) == varied.build_questions(0)
    assert varied.build_questions(1) != varied.build_questions(0)
    assert data.knowledge_base(0) != data.knowledge_base(0, testbed=1)
    assert data.TESTBED == 2 and len(data.knowledge_base(0)) == 726
