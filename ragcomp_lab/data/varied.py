"""The test bed, version 2: the world of kb.py written with many wordings, and asked in many ways.

Every fact of an entity is stated in its own document, in a form drawn at random from
wording.STATE (the attribute's own sentences), wording.GENERIC ("The price of ... is ..."),
wording.COMPARE (a sentence about two entities of a group, stating both values) or wording.LIST (two
facts in one sentence). The sentences of a document come in a random order. Which document states
which fact is recorded as the text is written, so a question's support and an unanswerable
question's "no document states it" are known, not guessed from the text.

Groups and wordings:
- groups 0-39 (train, validation, test): the "train" forms of every template;
- groups 40-45 (test_new_wording): only the "held_out" forms, statements and questions alike;
- groups 46-51 (test_new_domain): vehicles and museums, with attributes no other group has.
"""
from __future__ import annotations

import dataclasses
import functools
import random

from . import wording as W
from .kb import INVERSE, NEW_DOMAIN_GROUPS, NEW_WORDING_GROUPS, OPTIONAL, RELATIONS, build_world, check_seed
from .prompt import REFUSAL

# split -> (groups, wording pool, size)
SPLITS = {
    "train": (range(12, 40), "train", 600), "validation": (range(8, 12), "train", 90),
    "test": (range(0, 8), "train", 150), "test_new_wording": (NEW_WORDING_GROUPS, "held_out", 120),
    "test_new_domain": (NEW_DOMAIN_GROUPS, "all", 120),
}
SHARES = {"specific": 0.6, "generic": 0.25, "compare": 0.15}  # how a fact is stated, before lists
LIST_SHARE = 0.3  # documents that state two of their facts in one list sentence


def _ref(entity) -> str:
    """How a sentence names the entity: products, vehicles and museums take "the"."""
    return f"the {entity.name}" if entity.type in ("product", "vehicle", "museum") else entity.name


def _value_ref(etype: str, attribute: str, value: str, by_name) -> str:
    linked = by_name.get(value) if (etype, attribute) in RELATIONS else None
    return _ref(linked) if linked is not None and attribute not in ("product",) else value


def adjectival(value: str) -> str:
    """ "2 years" -> "2-year", "180 centimetres" -> "180-centimetre": a measure before a noun."""
    number, _, unit = value.partition(" ")
    if not unit or " " in unit:
        return value
    return f"{number}-{unit[:-1] if unit.endswith('s') else unit}"


def _fill(template: str, **fields) -> str:
    text = template.format(**fields)
    return text[0].upper() + text[1:]


def _pool(templates: dict, pool: str) -> list[str]:
    return templates["train"] + templates["held_out"] if pool == "all" else templates[pool]


def _fields(entity, attribute, value, by_name) -> dict:
    label = W.LABELS.get(attribute) or ""
    s = _ref(entity)
    v = _value_ref(entity.type, attribute, value, by_name)
    return {"s": s, "S": s, "v": v, "V": v[0].upper() + v[1:], "va": adjectival(value), "an": "an" if v[:1].lower() in "aeiou" else "a",
            "label": label, "a_label": f"{'an' if label[:1] in 'aeiou' else 'a'} {label}"}


def _forms(entity, attribute, pool, others) -> list[tuple[str, str]]:
    """(kind of form, template) the fact can be stated in, in this pool."""
    forms = [("specific", t) for t in _pool(W.STATE[(entity.type, attribute)], pool)]
    if W.LABELS.get(attribute):
        generic = _pool(W.GENERIC, pool)
        forms += [("generic", t) for t in generic if "{a_label}" not in t or attribute in W.MEASURES]
    if attribute in W.MEASURES and others:
        forms += [("compare", t) for t in _pool(W.COMPARE, pool)]
    return forms


def _sentence(rng, entity, attribute, value, pool, group, by_name) -> tuple[str, list[tuple[str, str]]]:
    """One sentence stating `attribute` of `entity`, and the (entity, attribute) pairs it states."""
    others = [o for o in group if o.type == entity.type and o is not entity and o.fact(attribute) is not None]
    forms = _forms(entity, attribute, pool, others)
    kind = rng.choices(list(SHARES), weights=[SHARES[k] if any(f == k for f, _ in forms) else 0 for k in SHARES])[0]
    template = rng.choice([t for f, t in forms if f == kind])
    fields = _fields(entity, attribute, value, by_name)
    stated = [(entity.name, attribute)]
    if kind == "compare":
        other = rng.choice(others)
        fields |= {"o": _ref(other), "ov": other.fact(attribute)}
        stated.append((other.name, attribute))
    return _fill(template, **fields), stated


def _list_sentence(entity, facts, pool, by_name) -> str:
    items = "; ".join(W.LIST_ITEM["train" if pool == "train" else "held_out"].format(
        label=W.LABELS[a], v=_value_ref(entity.type, a, v, by_name)) for a, v in facts)
    return _fill(W.LIST["train" if pool == "train" else "held_out"], S=_ref(entity), s=_ref(entity), items=items)


def _document(rng, entity, pool, group, by_name) -> tuple[dict, set]:
    facts = list(entity.facts)
    sentences, stated = [_fill(W.INTRO[entity.type], S=_ref(entity))], set()
    labelled = [f for f in facts if W.LABELS.get(f[0])]
    if len(labelled) >= 2 and rng.random() < LIST_SHARE:
        listed = rng.sample(labelled, 2)
        sentences.append(_list_sentence(entity, listed, pool, by_name))
        stated |= {(entity.name, a) for a, _ in listed}
        facts = [f for f in facts if f not in listed]
    for attribute, value in facts:
        text, pairs = _sentence(rng, entity, attribute, value, pool, group, by_name)
        sentences.append(text)
        stated |= set(pairs)
    rng.shuffle(sentences)  # the supporting sentence can be anywhere, the introduction too
    for name, attribute in list(stated):  # a relation stated here is stated from the other side too
        e = by_name[name]
        if (e.type, attribute) in INVERSE:
            stated.add((e.fact(attribute), INVERSE[(e.type, attribute)]))
    doc = {"id": entity.doc_id, "entity": entity.name, "type": entity.type, "text": " ".join(sentences)}
    return doc, stated


def _pool_of(group_id: int) -> str:
    return next(pool for groups, pool, _ in SPLITS.values() if group_id in groups)


@functools.lru_cache(maxsize=8)
def _written(seed: int) -> tuple[tuple[dict, ...], dict]:
    """(every document of version 2, {(entity name, attribute): [ids of the documents stating it]})."""
    world = build_world(seed, extra=True)
    by_name = {e.name: e for e in world}
    rng = random.Random(f"wording-{seed}")
    groups: dict[int, list] = {}
    for e in world:
        groups.setdefault(e.group, []).append(e)
    docs, support = [], {}
    for e in world:
        doc, stated = _document(rng, e, _pool_of(e.group), groups[e.group], by_name)
        docs.append(doc)
        for key in stated:
            support.setdefault(key, []).append(doc["id"])
    for key, ids in support.items():  # the entity's own document first
        own = by_name[key[0]].doc_id
        ids.sort(key=lambda i: i != own)
    return tuple(docs), support


def documents(seed: int = 0) -> list[dict]:
    """Every document of version 2: {"id", "entity", "type", "text"}, a new list of new dicts."""
    return [dict(d) for d in _written(check_seed(seed))[0]]


@functools.lru_cache(maxsize=8)
def _world(seed: int) -> tuple:
    return tuple(build_world(seed, extra=True))


def entities_by_name(seed: int) -> dict:
    """{name: kb.Entity} of the test bed of `seed` (frozen entities; the world is built once per seed:
    data.augment asks for it once per training row)."""
    return {e.name: e for e in _world(check_seed(seed))}


def document_without(seed: int, name: str, attribute: str) -> str:
    """The text of `name`'s document written again without its `attribute`, in its group's wordings:
    a passage that no longer states what a question asks (training rows for refusals, data.augment)."""
    world = _world(check_seed(seed))
    by_name = entities_by_name(seed)
    if name not in by_name:
        raise ValueError(f"name={name!r} is not an entity of the test bed of seed {seed}")
    entity = by_name[name]
    if entity.fact(attribute) is None:
        raise ValueError(f"attribute={attribute!r} is not stated about {name}: it has "
                         f"{', '.join(a for a, _ in entity.facts)}")
    reduced = dataclasses.replace(entity, facts=tuple(f for f in entity.facts if f[0] != attribute))
    group = [reduced if e is entity else e for e in world if e.group == entity.group]
    rng = random.Random(f"without-{seed}-{name}-{attribute}")
    return _document(rng, reduced, _pool_of(entity.group), group, by_name)[0]["text"]


def stated_by(seed: int, name: str, attribute: str) -> list[str]:
    """The ids of the documents that state `attribute` of the entity `name` (empty: none does)."""
    return list(_written(check_seed(seed))[1].get((name, attribute), []))


def _ask(rng, etype, attribute, subject, pool) -> str:
    return _fill(rng.choice(_pool(W.ASK[(etype, attribute)], pool)), s=subject, S=subject)


def _row(query, answer, kind, entities, support_ids) -> dict:
    return {"query": query, "answer": answer, "kind": kind,
            "entities": list(dict.fromkeys(entities)), "support_ids": list(support_ids)}


def _candidates(seed, entities, by_name, pool, rng) -> dict[str, dict[tuple, list[dict]]]:
    out = {"single_fact": {}, "two_hop": {}, "unanswerable": {}}
    for e in entities:
        for attribute, value in e.facts:
            linked = [by_name[value].name] if (e.type, attribute) in RELATIONS else []
            row = _row(_ask(rng, e.type, attribute, _ref(e), pool), value, "single_fact", [e.name] + linked,
                       stated_by(seed, e.name, attribute))
            out["single_fact"].setdefault((e.type, attribute), []).append(row)
            if (e.type, attribute) not in W.BRIDGE:
                continue
            bridge = by_name[value]
            phrase = _fill(rng.choice(_pool(W.BRIDGE[(e.type, attribute)], pool)), s=_ref(e))
            for b_attr, answer in bridge.facts:
                if b_attr == INVERSE.get((e.type, attribute)):  # "the maker of the product made by X" is X
                    continue
                named = [e.name, bridge.name] + ([answer] if (bridge.type, b_attr) in RELATIONS else [])
                query = _ask(rng, bridge.type, b_attr, phrase[0].lower() + phrase[1:], pool)
                support = [e.doc_id, bridge.doc_id]
                out["two_hop"].setdefault((e.type, attribute, b_attr), []).append(
                    _row(query, answer, "two_hop", named, support))
        for attribute in OPTIONAL[e.type]:
            if e.fact(attribute) is None and not stated_by(seed, e.name, attribute):
                row = _row(_ask(rng, e.type, attribute, _ref(e), pool), REFUSAL, "unanswerable", [e.name], [])
                out["unanswerable"].setdefault((e.type, attribute), []).append(row)
    return out


def build_questions(seed: int = 0) -> dict[str, list[dict]]:
    """The questions of each split of version 2, rows as in questions.build_questions."""
    from .questions import _even_sample, split_counts

    world = build_world(check_seed(seed), extra=True)
    by_name = {e.name: e for e in world}
    rng = random.Random(f"questions-v2-{seed}")
    splits = {}
    for split, (groups, pool, size) in SPLITS.items():
        pools = _candidates(seed, [e for e in world if e.group in groups], by_name, pool, rng)
        rows = []
        for kind, n in split_counts(size).items():
            rows += _even_sample(pools[kind], n, rng)
        rng.shuffle(rows)
        splits[split] = [{"id": f"{split}-{i:04d}", **row} for i, row in enumerate(rows)]
    return splits
