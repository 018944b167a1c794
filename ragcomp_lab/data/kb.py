"""The knowledge base: short documents about invented people, companies, towns and products.

The world is built in disjoint groups: each group has its own towns, people, companies and
products, and every relation (born in, based in, founder, maker) stays inside its group. A split
made of whole groups therefore never mentions, nor needs, an entity of another split.

The wording is deliberately plain, for a 135M-parameter teacher that must copy its answer from
the context: one fact per short sentence, and the entity named in full in every sentence.
Relations are written from both sides ("The founder of Veltrona Labs is Ilsa Quorne." in the
company's document, "Ilsa Quorne founded Veltrona Labs." in the person's), so a question that
names one side can retrieve the document of the other.

Each entity states exactly one of its two optional attributes (a person's hobby or height, ...):
asking for the other one is an unanswerable question whose passages still look relevant.

This module writes the first test bed (version 1: one sentence per attribute, SENTENCES). The same
world, with more groups after the first 40, is written with many wordings by `varied` (version 2,
the default): groups 40-45 for the held-out wording, 46-51 of vehicles and museums for the new domain.
"""
from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass

from .names import NameMaker

TYPES = ("town", "person", "company", "product")
GROUP_SHAPE = {"town": 3, "person": 4, "company": 4, "product": 4}  # entities of each type in one group
N_GROUPS = 40  # 40 groups x 15 entities = 600 documents
NEW_WORDING_GROUPS = range(40, 46)  # the same four types, drawn after the first 40 groups
DOMAIN_TYPES = ("vehicle", "museum")  # the new domain: vehicle i is exhibited at museum i of its group
DOMAIN_SHAPE = 3
NEW_DOMAIN_GROUPS = range(46, 52)

# (type, attribute) -> the one sentence that states it; {article} is "a" or "an" before {value}
SENTENCES = {
    ("town", "region"): "{name} is in the region of {value}.",
    ("town", "population"): "{name} has a population of {value}.",
    ("town", "river"): "{name} lies on the river {value}.",
    ("town", "elevation"): "{name} lies at an elevation of {value}.",
    ("person", "profession"): "{name} works as {article} {value}.",
    ("person", "born_in"): "{name} was born in {value}.",
    ("person", "birth_year"): "{name} was born in the year {value}.",
    ("person", "founded"): "{name} founded {value}.",
    ("person", "hobby"): "The hobby of {name} is {value}.",
    ("person", "height"): "{name} is {value} tall.",
    ("company", "based_in"): "{name} is based in {value}.",
    ("company", "founded_year"): "{name} was founded in the year {value}.",
    ("company", "founder"): "The founder of {name} is {value}.",
    ("company", "product"): "{name} makes the {value}.",
    ("company", "employees"): "{name} has {value} employees.",
    ("company", "revenue"): "The annual revenue of {name} is {value}.",
    ("product", "category"): "The {name} is {article} {value}.",
    ("product", "maker"): "The {name} is made by {value}.",
    ("product", "launch_year"): "The {name} was launched in the year {value}.",
    ("product", "price"): "The {name} costs {value}.",
    ("product", "colour"): "The colour of the {name} is {value}.",
    ("product", "weight"): "The {name} weighs {value}.",
    ("product", "warranty"): "The warranty of the {name} lasts {value}.",
}
INTRO = {
    "town": "{name} is a town.", "person": "{name} is a person.",
    "company": "{name} is a company.", "product": "The {name} is a product.",
}
# each entity states exactly one of these two (chosen at random); the other is never stated anywhere
OPTIONAL = {
    "town": ("river", "elevation"), "person": ("hobby", "height"),
    "company": ("employees", "revenue"), "product": ("weight", "warranty"),
    "vehicle": ("seats", "range"), "museum": ("visitors", "ticket_price"),
}
# attributes whose value is another entity of the knowledge base
RELATIONS = {("person", "born_in"), ("person", "founded"), ("company", "based_in"),
             ("company", "founder"), ("company", "product"), ("product", "maker"),
             ("vehicle", "exhibited_at"), ("museum", "exhibits")}
# a relation stated from both sides: (type, attribute) -> the attribute of the other entity that states it back
INVERSE = {("person", "founded"): "founder", ("company", "founder"): "founded",
           ("company", "product"): "maker", ("product", "maker"): "product",
           ("vehicle", "exhibited_at"): "exhibits", ("museum", "exhibits"): "exhibited_at"}

_PROFESSIONS = ("engineer", "baker", "chemist", "architect", "teacher", "pilot", "farmer",
                "painter", "lawyer", "doctor", "carpenter", "tailor", "astronomer", "economist")
_HOBBIES = ("chess", "painting", "sailing", "gardening", "archery", "pottery", "cycling",
            "fishing", "juggling", "knitting", "rowing", "birdwatching")
_CATEGORIES = ("kettle", "bicycle", "lamp", "umbrella", "camera", "blender", "backpack",
               "telescope", "guitar", "heater", "oven", "drone")
_COLOURS = ("red", "blue", "green", "yellow", "black", "white", "orange", "purple", "silver", "grey")
_FUELS = ("petrol", "diesel", "hydrogen", "electricity", "biogas", "natural gas", "ethanol")
_HOURS = ("9 am to 5 pm", "10 am to 6 pm", "8 am to 4 pm", "11 am to 7 pm", "9 am to 9 pm", "10 am to 4 pm")


@dataclass(frozen=True)
class Entity:
    name: str
    type: str
    group: int
    doc_id: str
    facts: tuple  # ((attribute, value), ...) in the order the document states them

    def fact(self, attribute: str) -> str | None:
        return dict(self.facts).get(attribute)


def sentence(etype: str, attribute: str, name: str, value: str) -> str:
    article = "an" if value[:1].lower() in "aeiou" else "a"
    return SENTENCES[(etype, attribute)].format(name=name, value=value, article=article)


def states(text: str, entity: Entity, attribute: str) -> bool:
    """Does `text` state `attribute` of `entity`, with any value? (used to check unanswerables)"""
    pattern = re.escape(SENTENCES[(entity.type, attribute)])
    pattern = pattern.replace(re.escape("{name}"), re.escape(entity.name))
    pattern = pattern.replace(re.escape("{article}"), "an?").replace(re.escape("{value}"), "[^.]+")
    return re.search(r"(?<![\w])" + pattern, text) is not None


def _plural(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit}s"


def _group(rng: random.Random, names: NameMaker, g: int, regions, rivers) -> list[Entity]:
    towns = [names.town() for _ in range(GROUP_SHAPE["town"])]
    people = [names.person() for _ in range(GROUP_SHAPE["person"])]
    companies = [names.company() for _ in range(GROUP_SHAPE["company"])]
    products = [names.product() for _ in range(GROUP_SHAPE["product"])]
    # company i was founded by people[i] and makes products[i]: one founder, one product each
    birth = [rng.randint(1925, 1975) for _ in people]
    founded = [b + rng.randint(25, 45) for b in birth]
    facts = {}
    for t in towns:
        facts[t] = [("region", rng.choice(regions)), ("population", str(rng.randrange(800, 95_000, 10))),
                    ("river", rng.choice(rivers)), ("elevation", _plural(rng.randrange(10, 1800, 10), "metre"))]
    for i, p in enumerate(people):
        facts[p] = [("profession", rng.choice(_PROFESSIONS)), ("born_in", rng.choice(towns)),
                    ("birth_year", str(birth[i])), ("founded", companies[i]),
                    ("hobby", rng.choice(_HOBBIES)), ("height", _plural(rng.randint(150, 199), "centimetre"))]
    for i, c in enumerate(companies):
        facts[c] = [("based_in", rng.choice(towns)), ("founded_year", str(founded[i])),
                    ("founder", people[i]), ("product", products[i]),
                    ("employees", str(rng.randint(12, 4800))),
                    ("revenue", f"{rng.randint(2, 900)} million dollars")]
    for i, q in enumerate(products):
        facts[q] = [("category", rng.choice(_CATEGORIES)), ("maker", companies[i]),
                    ("launch_year", str(min(2024, founded[i] + rng.randint(1, 25)))),
                    ("price", _plural(rng.randint(5, 900), "dollar")), ("colour", rng.choice(_COLOURS)),
                    ("weight", _plural(rng.randint(1, 40), "kilogram")),
                    ("warranty", _plural(rng.randint(1, 5), "year"))]
    return _entities(rng, g, facts, (("town", towns), ("person", people), ("company", companies),
                                      ("product", products)))


def _entities(rng: random.Random, g: int, facts: dict, typed_names) -> list[Entity]:
    """Group g's entities, each without one optional attribute (drawn here, so it never states it)."""
    entities = []
    for etype, group_names in typed_names:
        for i, name in enumerate(group_names):
            dropped = rng.choice(OPTIONAL[etype])
            kept = tuple((a, v) for a, v in facts[name] if a != dropped)
            entities.append(Entity(name, etype, g, f"{etype}-{g:02d}-{i}", kept))
    return entities


def _domain_group(rng: random.Random, names: NameMaker, g: int) -> list[Entity]:
    """Vehicles and museums: entity kinds and attributes that no group of the four types has."""
    vehicles = [names.vehicle() for _ in range(DOMAIN_SHAPE)]
    museums = [names.museum() for _ in range(DOMAIN_SHAPE)]
    facts = {}
    for i, v in enumerate(vehicles):
        facts[v] = [("top_speed", f"{rng.randrange(60, 320, 5)} kilometres per hour"), ("fuel", rng.choice(_FUELS)),
                    ("seats", _plural(rng.randint(2, 9), "seat")), ("range", f"{rng.randrange(150, 1200, 10)} kilometres"),
                    ("exhibited_at", museums[i])]
    for i, m in enumerate(museums):
        facts[m] = [("opening_hours", rng.choice(_HOURS)), ("curator", names.person()), ("city", names.town()),
                    ("exhibits", vehicles[i]), ("visitors", str(rng.randrange(2000, 900_000, 100))),
                    ("ticket_price", _plural(rng.randint(3, 40), "dollar"))]
    return _entities(rng, g, facts, (("vehicle", vehicles), ("museum", museums)))


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} is not allowed: the seed must be an integer")
    return seed


def build_world(seed: int = 0, extra: bool = False) -> tuple[Entity, ...]:
    """Every entity of the first 40 groups for `seed`, group by group (immutable, cached); with
    `extra`, the held-out wording's and the new domain's groups after them.

    The extra groups are drawn after the first 40 from the same random stream, so the first 40
    are the same with or without them: the first test bed is unchanged."""
    world = _world(check_seed(seed))
    return world if extra else tuple(e for e in world if e.group < N_GROUPS)


@functools.lru_cache(maxsize=8)
def _world(seed: int) -> tuple[Entity, ...]:
    rng = random.Random(seed)
    names = NameMaker(rng)
    regions = [names.word() for _ in range(8)]
    rivers = [names.word() for _ in range(12)]
    world = []
    for g in range(N_GROUPS):
        world += _group(rng, names, g, regions, rivers)
    for g in NEW_WORDING_GROUPS:
        world += _group(rng, names, g, regions, rivers)
    for g in NEW_DOMAIN_GROUPS:
        world += _domain_group(rng, names, g)
    return tuple(world)


def document(entity: Entity) -> dict:
    lines = [INTRO[entity.type].format(name=entity.name)]
    lines += [sentence(entity.type, a, entity.name, v) for a, v in entity.facts]
    return {"id": entity.doc_id, "entity": entity.name, "type": entity.type, "text": " ".join(lines)}


def knowledge_base(seed: int = 0) -> list[dict]:
    """The knowledge base for `seed`: one document {"id", "entity", "type", "text"} per entity.

    A new list of new dicts on every call: changing it changes nothing else.
    """
    return [document(e) for e in build_world(seed)]
