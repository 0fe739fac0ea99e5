"""Map published spec words onto the catalog's choices. Unknown words give None: never guessed."""

import re

from catalog.models import BodyStyle, Drivetrain, EngineType


def _key(value: str) -> str:
    return re.sub(r"[^a-z0-9/]+", " ", (value or "").lower()).strip()


def engine_type(value: str) -> str | None:
    """'Gas V6' → gas, 'Gas/Electric I-4' → hybrid, 'Electric' → electric, 'FFV' → flex_fuel."""
    key = _key(value)
    if not key:
        return None
    if "plug in" in key or "phev" in key:
        return EngineType.PLUG_IN_HYBRID
    if "hydrogen" in key or "fuel cell" in key:
        return EngineType.HYDROGEN
    if "electric" in key or key.startswith("ev"):
        return EngineType.HYBRID if ("gas" in key or "hybrid" in key or "diesel" in key) else EngineType.ELECTRIC
    if "hybrid" in key:
        return EngineType.HYBRID
    if "ffv" in key or "flex" in key or "ethanol" in key or "e85" in key:
        return EngineType.FLEX_FUEL
    if "diesel" in key:
        return EngineType.DIESEL
    if "gas" in key or "e15" in key or "premium" in key or "regular" in key or "unleaded" in key:
        return EngineType.GAS
    return None


_DRIVETRAIN_WORDS = (
    (("awd", "all wheel", "all-wheel"), Drivetrain.AWD),
    (("4wd", "4x4", "four wheel", "four-wheel"), Drivetrain.FOUR_WD),
    (("fwd", "front wheel", "front-wheel"), Drivetrain.FWD),
    (("rwd", "rear wheel", "rear-wheel"), Drivetrain.RWD),
    (("2wd", "4x2", "two wheel", "two-wheel"), Drivetrain.TWO_WD),
)


def drivetrain(value: str) -> str | None:
    """'Front Wheel Drive' → FWD, 'AWD' → AWD, '4x4' → 4WD, '4x2' → 2WD."""
    key = (value or "").lower().replace("-", " ")
    if not key.strip():
        return None
    for words, choice in _DRIVETRAIN_WORDS:
        if any(word.replace("-", " ") in key for word in words):
            return choice
    return None


_BODY_STYLES = (
    (("convertible", "cabriolet", "roadster", "spyder", "spider"), BodyStyle.CONVERTIBLE),
    (("pickup", "crew cab", "extended cab", "regular cab", "truck"), BodyStyle.PICKUP),
    (("minivan", "mini van", "mini-van"), BodyStyle.MINIVAN),
    (("van",), BodyStyle.VAN),
    (("suv", "sport utility", "crossover"), BodyStyle.SUV),
    (("wagon",), BodyStyle.WAGON),
    (("hatchback",), BodyStyle.HATCHBACK),
    (("2dr", "coupe", "2 door"), BodyStyle.COUPE),
    (("4dr", "sedan", "4 door"), BodyStyle.SEDAN),
)


def body_style(value: str) -> str | None:
    """'SUV' / 'Sport Utility' → suv, '4dr Car' → sedan, '2dr' → coupe, 'Crew Cab Pickup' → pickup."""
    key = (value or "").lower()
    if not key.strip():
        return None
    for words, choice in _BODY_STYLES:
        if any(word in key for word in words):
            return choice
    return None
