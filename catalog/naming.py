"""Car labels: '<year> <Make> <Model>'.

The original project cleaned names with a regex that cut "ID.4" down to "ID" and so split one
car into two classes. Here names are only trimmed and whitespace-folded, never rewritten, and the
known bad labels of the original are merged through ``LABEL_ALIASES``.
"""

import re
from dataclasses import dataclass

from django.utils.text import slugify

# Makes whose names are more than one word; needed to split a label into make and model.
MULTI_WORD_MAKES = ("Alfa Romeo", "Aston Martin", "Land Rover", "Rolls-Royce Motor Cars")

# Official spellings for makes that sources often write differently.
OFFICIAL_MAKE_SPELLING = {
    "bmw": "BMW",
    "infiniti": "INFINITI",
    "mini": "MINI",
    "fiat": "FIAT",
    "gmc": "GMC",
    "mercedes-benz": "Mercedes-Benz",
    "mercedes benz": "Mercedes-Benz",
    "alfa romeo": "Alfa Romeo",
    "alfa-romeo": "Alfa Romeo",
    "land rover": "Land Rover",
    "land-rover": "Land Rover",
    "ram": "Ram",
}

# Labels of the original product that were artefacts of its cleaning bug.
LABEL_ALIASES = {"2023 Volkswagen ID": "2023 Volkswagen ID.4"}

_WHITESPACE = re.compile(r"\s+")


class LabelError(ValueError):
    """A label that cannot be read as '<year> <make> <model>'."""


@dataclass(frozen=True)
class CarName:
    make: str
    model: str
    year: int

    @property
    def label(self) -> str:
        return f"{self.year} {self.make} {self.model}"

    @property
    def slug(self) -> str:
        return car_slug(self.label)


def clean_text(value: str) -> str:
    return _WHITESPACE.sub(" ", value or "").strip()


def official_make(make: str) -> str:
    make = clean_text(make)
    if make.lower() in OFFICIAL_MAKE_SPELLING:
        return OFFICIAL_MAKE_SPELLING[make.lower()]
    # An all-lowercase name (a URL slug, say) gets capitals; any other spelling is kept as published.
    return make.title() if make.islower() else make


def car_slug(label: str) -> str:
    # "ID.4" must not collide with "ID4" or "ID": keep the dot as a word of its own.
    return slugify(clean_text(label).replace(".", "-"))


def make_slug(name: str) -> str:
    return slugify(name)


def parse_label(label: str) -> CarName:
    """Split '2023 Alfa Romeo Giulia' into year, make and model, applying the known aliases."""
    label = clean_text(label)
    label = LABEL_ALIASES.get(label, label)
    year_text, _, rest = label.partition(" ")
    if not (year_text.isdigit() and len(year_text) == 4) or not rest:
        raise LabelError(f"{label!r} is not '<year> <make> <model>'")
    for make in MULTI_WORD_MAKES:
        if rest.lower().startswith(make.lower() + " "):
            model = rest[len(make) + 1 :]
            break
    else:
        make, _, model = rest.partition(" ")
    model = clean_text(model)
    if not model:
        raise LabelError(f"{label!r} has no model name")
    return CarName(make=official_make(make), model=model, year=int(year_text))
