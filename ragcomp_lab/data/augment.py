"""Training rows that teach a generator to read the passages, derived from the test bed's own rows.

The test bed's unanswerable questions ask for the one optional attribute an entity lacks, and
there are eight such attributes. A model trained on them alone learns which attributes may be
missing rather than to look: the teacher trained that way answered 13 of the new domain's 30
unanswerable questions with a value of the right type from the wrong place. And every training
answer is a span of one to three words, so it cut the new domain's longer values short
("85 kilometres" for "85 kilometres per hour"). Two derived rows address those habits:

- `without_fact(row, seed)`: the same question, the passage that stated its answer written again
  without that fact, so the gold answer is the refusal. Paired with the row itself, the two
  differ only in whether the fact is there.
- `longer_value(row, seed, rng)`: the answer's value replaced, in the passage and in the gold answer,
  by a longer value of the same kind ("2 years" -> "2 to 3 years", "red" -> "dark red").

Neither uses a held-out wording, entity kind or attribute.
"""
from __future__ import annotations

import random
import re

from .prompt import REFUSAL, build_prompt
from .varied import document_without, entities_by_name, stated_by

# unit -> (the smaller unit, its largest count): "21 kilograms" -> "21 kilograms and 300 grams"
SUBUNITS = {"years": ("months", 11), "year": ("months", 11), "dollars": ("cents", 99), "dollar": ("cents", 99),
            "kilograms": ("grams", 999), "kilogram": ("grams", 999), "metres": ("centimetres", 99),
            "centimetres": ("millimetres", 9)}
SHADES = ("dark", "light", "pale", "bright", "deep")
YEARS = ("birth_year", "founded_year", "launch_year")  # a range of years makes no sense for a date


def asked_fact(row: dict, seed: int):
    """(entity, attribute) whose value answers an answerable row (for a two-hop row, the bridge's),
    or None when the row is unanswerable or its answer is the value of several attributes."""
    if row["kind"] not in ("single_fact", "two_hop"):
        return None
    entity = entities_by_name(seed).get(row["entities"][0 if row["kind"] == "single_fact" else 1])
    attributes = [a for a, v in entity.facts if v == row["answer"]] if entity is not None else []
    return (entity, attributes[0]) if len(attributes) == 1 else None


def without_fact(row: dict, seed: int) -> dict | None:
    """`row` with the fact it asks removed from its passages and the refusal as its answer; None
    when another of its passages states that fact too, or its own document is not among them."""
    fact = asked_fact(row, seed)
    if fact is None:
        return None
    entity, attribute = fact
    stating = set(stated_by(seed, entity.name, attribute)) & set(row["passage_ids"])
    if stating != {entity.doc_id}:
        return None
    passages = list(row["passages"])
    passages[row["passage_ids"].index(entity.doc_id)] = document_without(seed, entity.name, attribute)
    return {**row, "id": f"{row['id']}-without", "passages": passages, "answer": REFUSAL, "kind": "unanswerable",
            "support_ids": [], "prompt": build_prompt(row["query"], passages)}


def _longer(value: str, attribute: str, rng: random.Random) -> str | None:
    number = re.fullmatch(r"(\d+)(?: (.+))?", value)
    if number is None:
        return f"{rng.choice(SHADES)} {value}" if attribute == "colour" else None
    if attribute in YEARS:
        return None
    n, unit = int(number.group(1)), number.group(2)
    top = n + max(1, round(n * rng.uniform(0.05, 0.3)))
    shapes = [f"{n} to {top}" + (f" {unit}" if unit else "")]
    if unit in SUBUNITS:
        small, most = SUBUNITS[unit]
        shapes.append(f"{n} {unit} and {rng.randint(2, most)} {small}")
    return rng.choice(shapes)


def longer_value(row: dict, seed: int, rng: random.Random) -> dict | None:
    """`row` with its answer's value replaced by a longer one of the same kind, in the passage that
    states it and in the gold answer; None when the value is not written out exactly once in the
    passages (an adjective such as "2-year", or a distractor with the same value) or has no longer form."""
    fact = asked_fact(row, seed)
    longer = _longer(row["answer"], fact[1], rng) if fact is not None else None
    if longer is None:
        return None
    pattern = re.compile(r"(?<![\w-])" + re.escape(row["answer"]) + r"(?![\w-])")
    if sum(len(pattern.findall(p)) for p in row["passages"]) != 1:
        return None
    passages = [pattern.sub(longer, p) for p in row["passages"]]
    return {**row, "id": f"{row['id']}-longer", "passages": passages, "answer": longer,
            "prompt": build_prompt(row["query"], passages)}
