"""Invented names, built from syllables, so that no answer can come from a language model's memory.

Every distinctive part of a name (a surname, a company stem, a town, a product stem) is drawn once
per knowledge base: two entities never share it, so a name in a question points at one entity.
"""
from __future__ import annotations

import random

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p",
           "qu", "r", "s", "st", "t", "th", "tr", "v", "z", "sk", "pr", "gl")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ou", "ei", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "rn", "m", "lt", "nd")

_GIVEN_ENDINGS = ("a", "o", "en", "is", "ar", "ette", "ian", "el")
_FAMILY_ENDINGS = ("ne", "ick", "ard", "ow", "ley", "ston", "vane", "mer")
_COMPANY_ENDINGS = ("ona", "ex", "ium", "ara", "eon", "ix", "alis", "ora")
_COMPANY_KINDS = ("Labs", "Works", "Industries", "Systems", "Foods", "Motors", "Textiles", "Robotics")
_TOWN_ENDINGS = ("moor", "ford", "holt", "wick", "vale", "stead", "mere", "ton", "field", "by")
_PRODUCT_ENDINGS = ("ex", "ix", "on", "a", "or", "ell", "ax", "io")
_PRODUCT_MODELS = ("Pro", "Mini", "Max", "One", "Lite", "Plus", "Prime", "Go")
_VEHICLE_ENDINGS = ("ar", "ion", "ent", "ada", "ust", "avo")
_VEHICLE_KINDS = ("Roadster", "Cruiser", "Tourer", "Hauler", "Scout", "Coupe", "Rover", "Glider")
_MUSEUM_ENDINGS = ("ham", "gate", "well", "bury", "cliffe", "worth")


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _stem(rng: random.Random, syllables: int, endings) -> str:
    """`syllables` = 1: "Quor" + "ne"; 2: "Vel" + "tr" + "ona" (the second is only an onset)."""
    stem = _syllable(rng) + ("" if syllables == 1 else rng.choice(_ONSETS))
    return (stem + rng.choice(endings)).capitalize()


class NameMaker:
    """Draws fresh names; a stem already used anywhere in the knowledge base is drawn again."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def _fresh(self, syllables: int, endings, min_len: int = 5) -> str:
        for _ in range(10_000):
            stem = _stem(self.rng, syllables, endings)
            if len(stem) >= min_len and stem.lower() not in self.used:
                self.used.add(stem.lower())
                return stem
        raise RuntimeError("ran out of fresh names: the syllable tables are too small for this knowledge base")

    def person(self) -> str:
        # a given name shared by several people made the small teacher mix them up: none is shared
        return f"{self._fresh(1, _GIVEN_ENDINGS)} {self._fresh(1, _FAMILY_ENDINGS)}"

    def company(self) -> str:
        return f"{self._fresh(2, _COMPANY_ENDINGS)} {self.rng.choice(_COMPANY_KINDS)}"

    def town(self) -> str:
        return self._fresh(1, _TOWN_ENDINGS)

    def product(self) -> str:
        return f"{self._fresh(1, _PRODUCT_ENDINGS)} {self.rng.choice(_PRODUCT_MODELS)}"

    def vehicle(self) -> str:
        return f"{self._fresh(1, _VEHICLE_ENDINGS)} {self.rng.choice(_VEHICLE_KINDS)}"

    def museum(self) -> str:
        return f"{self._fresh(1, _MUSEUM_ENDINGS)} Museum"

    def word(self) -> str:
        """A bare invented word: a region or a river."""
        return self._fresh(1, ("", "a", "en", "is", "ar"), min_len=3)
