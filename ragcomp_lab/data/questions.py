"""Questions about the knowledge base, of three kinds:

- ``single_fact``: one document answers it ("In which town is Veltrona Labs based?" -> "Darnmoor").
  Its support_ids are every document that states the fact (a relation is written from both sides,
  so "Who founded Veltrona Labs?" is stated by the company's and by the founder's document).
- ``two_hop``: two documents, chained through a bridge entity ("In which town was the founder of
  Veltrona Labs born?"): support_ids are the named entity's document, then the bridge's, which
  holds the answer.
- ``unanswerable``: an attribute that no document states, about a real entity (so retrieval
  still returns plausible passages); the gold answer is REFUSAL and support_ids is empty.

The questions of a split come only from that split's groups of entities (see kb.py), so the
entities of one split, bridges and answers included, never occur in another.
"""
from __future__ import annotations

import random

from .kb import OPTIONAL, RELATIONS, build_world
from .prompt import REFUSAL

KINDS = ("single_fact", "two_hop", "unanswerable")
SPLIT_SIZES = {"train": 600, "validation": 90, "test": 150}
SPLIT_GROUPS = {"test": range(0, 8), "validation": range(8, 12), "train": range(12, 40)}
MIX = {"single_fact": 0.5, "two_hop": 0.25}  # unanswerable takes the rest (about 0.25)

SINGLE = {
    ("town", "region"): "In which region is {name}?",
    ("town", "population"): "What is the population of {name}?",
    ("town", "river"): "On which river does {name} lie?",
    ("town", "elevation"): "At what elevation does {name} lie?",
    ("person", "profession"): "What is the profession of {name}?",
    ("person", "born_in"): "In which town was {name} born?",
    ("person", "birth_year"): "In which year was {name} born?",
    ("person", "founded"): "Which company did {name} found?",
    ("person", "hobby"): "What is the hobby of {name}?",
    ("person", "height"): "How tall is {name}?",
    ("company", "based_in"): "In which town is {name} based?",
    ("company", "founded_year"): "In which year was {name} founded?",
    ("company", "founder"): "Who founded {name}?",
    ("company", "product"): "Which product does {name} make?",
    ("company", "employees"): "How many employees does {name} have?",
    ("company", "revenue"): "What is the annual revenue of {name}?",
    ("product", "category"): "What kind of product is the {name}?",
    ("product", "maker"): "Which company makes the {name}?",
    ("product", "launch_year"): "In which year was the {name} launched?",
    ("product", "price"): "How much does the {name} cost?",
    ("product", "colour"): "What colour is the {name}?",
    ("product", "weight"): "How much does the {name} weigh?",
    ("product", "warranty"): "How long is the warranty of the {name}?",
}
# (type of the named entity, relation to the bridge, attribute of the bridge) -> question
TWO_HOP = {
    ("company", "founder", "born_in"): "In which town was the founder of {name} born?",
    ("company", "founder", "birth_year"): "In which year was the founder of {name} born?",
    ("company", "founder", "profession"): "What is the profession of the founder of {name}?",
    ("company", "product", "price"): "How much does the product made by {name} cost?",
    ("company", "product", "colour"): "What colour is the product made by {name}?",
    ("company", "product", "launch_year"): "In which year was the product made by {name} launched?",
    ("product", "maker", "based_in"): "In which town is the maker of the {name} based?",
    ("product", "maker", "founded_year"): "In which year was the maker of the {name} founded?",
    ("product", "maker", "founder"): "Who founded the maker of the {name}?",
    ("person", "founded", "based_in"): "In which town is the company founded by {name} based?",
    ("person", "founded", "product"): "Which product does the company founded by {name} make?",
}
# a relation stated from both sides: (type, attribute) -> the attribute that states it back
_INVERSE = {("person", "founded"): "founder", ("company", "founder"): "founded",
            ("company", "product"): "maker", ("product", "maker"): "product"}


def _row(query, answer, kind, entities, support_ids) -> dict:
    return {"query": query, "answer": answer, "kind": kind,
            "entities": list(dict.fromkeys(entities)), "support_ids": list(support_ids)}


def _candidates(entities, by_name) -> dict[str, dict[tuple, list[dict]]]:
    """Every question the entities allow, by kind, then by template (to sample them evenly)."""
    out = {kind: {} for kind in KINDS}
    for e in entities:
        for attr, value in e.facts:
            linked = [by_name[value]] if (e.type, attr) in RELATIONS else []
            support = [e.doc_id] + [x.doc_id for x in linked if (e.type, attr) in _INVERSE]
            row = _row(SINGLE[(e.type, attr)].format(name=e.name), value, "single_fact",
                       [e.name] + [x.name for x in linked], support)
            out["single_fact"].setdefault((e.type, attr), []).append(row)
        for attr in OPTIONAL[e.type]:
            if e.fact(attr) is None:  # the one optional attribute this entity never states
                row = _row(SINGLE[(e.type, attr)].format(name=e.name), REFUSAL, "unanswerable", [e.name], [])
                out["unanswerable"].setdefault((e.type, attr), []).append(row)
        for key, template in TWO_HOP.items():
            etype, relation, attr = key
            if etype != e.type:
                continue
            bridge = by_name[e.fact(relation)]
            answer = bridge.fact(attr)
            named = [e.name, bridge.name] + ([answer] if (bridge.type, attr) in RELATIONS else [])
            row = _row(template.format(name=e.name), answer, "two_hop", named, [e.doc_id, bridge.doc_id])
            out["two_hop"].setdefault(key, []).append(row)
    return out


def _even_sample(pools: dict[tuple, list[dict]], n: int, rng: random.Random) -> list[dict]:
    """n rows taken round-robin over the templates, so that every template is used about evenly."""
    queues = [rng.sample(rows, len(rows)) for rows in pools.values()]
    rng.shuffle(queues)
    taken = []
    while len(taken) < n:
        if not any(queues):
            raise RuntimeError(f"the groups hold only {len(taken)} candidate questions, {n} were asked for")
        for q in queues:
            if q and len(taken) < n:
                taken.append(q.pop())
    return taken


def split_counts(n: int) -> dict[str, int]:
    """How many questions of each kind a split of n questions holds."""
    counts = {kind: round(n * share) for kind, share in MIX.items()}
    counts["unanswerable"] = n - sum(counts.values())
    return counts


def build_questions(seed: int = 0) -> dict[str, list[dict]]:
    """The questions of each split: {"train": [...], "validation": [...], "test": [...]}.

    Each row: {"id", "query", "answer", "kind", "entities", "support_ids"}; deterministic for a seed.
    """
    world = build_world(seed)
    by_name = {e.name: e for e in world}
    rng = random.Random(f"questions-{seed}")
    splits = {}
    for split, groups in SPLIT_GROUPS.items():
        pools = _candidates([e for e in world if e.group in groups], by_name)
        rows = []
        for kind, n in split_counts(SPLIT_SIZES[split]).items():
            rows += _even_sample(pools[kind], n, rng)
        rng.shuffle(rows)
        splits[split] = [{"id": f"{split}-{i:04d}", **row} for i, row in enumerate(rows)]
    return {split: splits[split] for split in ("train", "validation", "test")}
