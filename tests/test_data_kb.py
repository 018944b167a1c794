"""The first test bed (version 1): an invented knowledge base written one way, questions of three
kinds, disjoint splits, prompts. It is frozen: results measured on it are read against its questions.
The default test bed (version 2, many wordings) is tested in test_data_varied.py."""
import hashlib
import json
import re
from collections import Counter

import pytest

import ragcomp_lab.data as data
from ragcomp_lab.data import kb
from ragcomp_lab.data.questions import SINGLE, SPLIT_SIZES, build_questions, split_counts

SPLITS = ("train", "validation", "test")


@pytest.fixture(scope="module")
def docs():
    return data.knowledge_base(seed=0, testbed=1)


@pytest.fixture(scope="module")
def by_id(docs):
    return {d["id"]: d for d in docs}


@pytest.fixture(scope="module")
def splits():
    return data.rag_splits(seed=0, testbed=1)


def test_the_first_test_bed_is_frozen():
    # its documents and questions as they were when every results/ file with testbed 1 was measured
    text = json.dumps([kb.knowledge_base(0), build_questions(0)]).encode()
    assert hashlib.sha256(text).hexdigest() == "f7da06e279eeec19c4462e7fe7c330121901cd870857b89235dfda98acc91875"
    assert kb.build_world(0) == tuple(e for e in kb.build_world(0, extra=True) if e.group < kb.N_GROUPS)


def test_the_knowledge_base_is_deterministic_for_a_seed_and_changes_with_it():
    assert data.knowledge_base(0, testbed=1) == data.knowledge_base(0, testbed=1)
    assert data.knowledge_base(1, testbed=1) != data.knowledge_base(0, testbed=1)
    assert build_questions(0) == build_questions(0)
    assert build_questions(1) != build_questions(0)
    kb0 = data.knowledge_base(0, testbed=1)
    kb0[0]["text"] = "changed"  # the caller's copy only
    assert data.knowledge_base(0, testbed=1)[0]["text"] != "changed"


def test_at_least_500_documents_of_four_types_with_unique_ids_and_names(docs):
    assert len(docs) >= 500
    assert all(set(d) == {"id", "entity", "type", "text"} for d in docs)
    assert Counter(d["type"] for d in docs).keys() == {"town", "person", "company", "product"}
    assert len({d["id"] for d in docs}) == len(docs)
    assert len({d["entity"] for d in docs}) == len(docs)


def test_names_are_invented_and_their_distinctive_part_is_never_shared(docs):
    # a person's surname, a company's or product's stem, a town: each names one entity only
    parts = [d["entity"].split()[-1] if d["type"] == "person" else d["entity"].split()[0] for d in docs]
    assert len(set(parts)) == len(parts)
    assert all(re.fullmatch(r"[A-Z][a-z]+( [A-Z][a-z]+)?", d["entity"]) for d in docs)


def test_every_sentence_names_its_entity_in_full(docs):
    for d in docs:
        sentences = re.split(r"(?<=\.) ", d["text"])
        assert len(sentences) >= 4
        assert all(d["entity"] in s for s in sentences), d["text"]


def test_a_person_document_names_the_company_the_person_founded(docs):
    companies = {d["entity"]: d for d in docs if d["type"] == "company"}
    for d in docs:
        if d["type"] == "person":
            founded = re.search(rf"{d['entity']} founded (.+?)\.", d["text"]).group(1)
            assert f"The founder of {founded} is {d['entity']}." in companies[founded]["text"]


def test_every_split_has_the_asked_size_and_mix_of_kinds():
    questions = build_questions(0)
    for split in SPLITS:
        kinds = Counter(q["kind"] for q in questions[split])
        assert len(questions[split]) == SPLIT_SIZES[split]
        assert kinds == split_counts(SPLIT_SIZES[split])
        n = SPLIT_SIZES[split]
        assert abs(kinds["single_fact"] / n - 0.5) < 0.02
        assert abs(kinds["two_hop"] / n - 0.25) < 0.02 and abs(kinds["unanswerable"] / n - 0.25) < 0.02
    assert {len(questions[s]) for s in SPLITS} == {600, 90, 150}


def test_single_fact_answers_are_stated_verbatim_by_every_support_document(by_id):
    for rows in build_questions(0).values():
        for q in (q for q in rows if q["kind"] == "single_fact"):
            assert 1 <= len(q["support_ids"]) <= 2 and q["answer"]
            assert all(q["answer"] in by_id[s]["text"] for s in q["support_ids"]), q
            assert by_id[q["support_ids"][0]]["entity"] == q["entities"][0]
            assert q["entities"][0] in q["query"]


def test_two_hop_questions_chain_two_documents_through_a_bridge(by_id):
    for rows in build_questions(0).values():
        for q in (q for q in rows if q["kind"] == "two_hop"):
            first, bridge = (by_id[s] for s in q["support_ids"])
            assert len(q["support_ids"]) == 2 and first["id"] != bridge["id"]
            assert first["entity"] in q["query"] and bridge["entity"] not in q["query"]
            assert q["answer"] in bridge["text"]
            assert bridge["entity"] in first["text"]  # the first document leads to the bridge
            assert q["entities"][:2] == [first["entity"], bridge["entity"]]


def test_unanswerable_questions_ask_what_no_document_states(docs):
    world = {e.name: e for e in kb.build_world(0)}
    for rows in build_questions(0).values():
        for q in (q for q in rows if q["kind"] == "unanswerable"):
            assert q["answer"] == data.REFUSAL and q["support_ids"] == [] and len(q["entities"]) == 1
            entity = world[q["entities"][0]]  # a real entity of the knowledge base
            (attribute,) = [a for (t, a), tmpl in SINGLE.items()
                            if t == entity.type and tmpl.format(name=entity.name) == q["query"]]
            assert attribute in kb.OPTIONAL[entity.type] and entity.fact(attribute) is None
            assert not any(kb.states(d["text"], entity, attribute) for d in docs), q
            # the same check does see a stated attribute: the other optional one is stated
            other = next(a for a in kb.OPTIONAL[entity.type] if a != attribute)
            assert any(kb.states(d["text"], entity, other) for d in docs)


def test_splits_share_no_entity_not_even_a_bridge_or_an_answer(splits, by_id):
    named = {}
    for split in SPLITS:
        rows = splits[split]
        named[split] = {e for es in rows["entities"] for e in es}
        named[split] |= {by_id[s]["entity"] for ss in rows["support_ids"] for s in ss}
        entity_answers = {a for a in rows["answer"] if a in {d["entity"] for d in by_id.values()}}
        assert entity_answers <= named[split]
    assert not named["train"] & named["test"]
    assert not named["train"] & named["validation"] and not named["validation"] & named["test"]


def test_rows_hold_every_column_and_the_prompt_is_built_from_the_top_k(splits, by_id):
    assert set(splits) == set(SPLITS)
    for split in SPLITS:
        assert splits[split].column_names == ["id", "query", "passages", "passage_ids", "prompt",
                                              "answer", "kind", "entities", "support_ids"]
        for row in splits[split].select(range(20)):
            assert len(row["passages"]) == len(row["passage_ids"]) == 3
            assert row["passages"] == [by_id[i]["text"] for i in row["passage_ids"]]
            assert row["prompt"] == data.build_prompt(row["query"], row["passages"])
    assert len({r for s in SPLITS for r in splits[s]["id"]}) == sum(SPLIT_SIZES.values())


def test_rag_splits_is_built_once_per_arguments_and_checks_them(splits):
    assert data.rag_splits(seed=0, testbed=1) is splits
    five = data.rag_splits(seed=0, k=5, testbed=1)
    assert [len(p) for p in five["test"]["passages"]] == [5] * 150
    assert five["test"]["query"] == splits["test"]["query"]
    for bad, message in [(dict(retriever="tfidf"), "retriever='tfidf'"), (dict(k=0), "k=0"),
                         (dict(seed="0"), "seed='0'"), (dict(testbed=3), "testbed=3"),
                         (dict(testbed=True), "testbed=True")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            data.rag_splits(**bad)


def test_build_prompt_numbers_the_passages_under_the_instruction():
    prompt = data.build_prompt("Who founded Veltrona Labs?", ["Alpha text.", "Beta text."])
    assert prompt == (
        "Answer the question using only the context. If the context does not contain the answer, "
        "reply: The context does not say.\n\nContext:\n[1] Alpha text.\n[2] Beta text.\n\n"
        "Question: Who founded Veltrona Labs?\nAnswer:"
    )
    assert data.REFUSAL == "The context does not say."
    with pytest.raises(ValueError, match="query=''"):
        data.build_prompt("", ["x"])
    with pytest.raises(ValueError, match="passages"):
        data.build_prompt("q?", "a single string")
