"""Turn published spec rows (name, value) into typed catalog fields, losing nothing.

Every rule is a pure function of the value text. A value a rule cannot read is reported in
``CleanResult.unparsed`` with the reason and never guessed at; the caller keeps every raw row in
``Specification.raw`` anyway. Text is stored whole or not at all: a value longer than its
field is reported instead of being cut (the original cut horsepower to three characters).
"""

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import models

from catalog import normalize
from catalog.models import Specification


class Unparsable(ValueError):
    """The value cannot be read by the rule; the message is the reason."""


@dataclass
class CleanResult:
    values: dict[str, Any] = field(default_factory=dict)  # Specification fields
    car_model_values: dict[str, Any] = field(default_factory=dict)  # CarModel fields (msrp_usd, body_style)
    unparsed: list[tuple[str, str, str]] = field(default_factory=list)  # (name, value, reason)


# Values that mean "not published"; they set nothing and are not an error.
PLACEHOLDERS = {"", "-", "--", "—", "n/a", "na", "none", "tbd", "-tbd-", "not available", "unavailable"}

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", ""))


def _whole(value: Decimal, what: str) -> int:
    if value != value.to_integral_value():
        raise Unparsable(f"{what} {value} is not a whole number")
    return int(value)


def parse_money(value: str) -> int:
    """'$49,550' → 49550; 'Starting at $49,550' → 49550. Ranges and cents are not guessed."""
    amounts = re.findall(rf"\$?\s*({_NUMBER})", value)
    if not amounts:
        raise Unparsable("no amount")
    if len(amounts) > 1:
        raise Unparsable("more than one amount")
    return _whole(_number(amounts[0]), "amount")


def parse_power_at_rpm(value: str) -> tuple[int, int | None]:
    """'290 @ 6200' → (290, 6200); '290' → (290, None). An rpm range is reported, not guessed."""
    match = re.fullmatch(rf"\s*({_NUMBER})\s*(?:hp|bhp|lb-?ft|lb\.?-?ft\.?)?\s*(?:@\s*(.+?))?\s*", value, re.I)
    if not match:
        raise Unparsable("not '<figure> @ <rpm>'")
    figure = _whole(_number(match.group(1)), "figure")
    rpm_text = match.group(2)
    if rpm_text is None:
        return figure, None
    rpm_match = re.fullmatch(rf"({_NUMBER})\s*(?:rpm)?", rpm_text.strip(), re.I)
    if not rpm_match:
        raise Unparsable(f"rpm '{rpm_text.strip()}' is not a single figure")
    return figure, _whole(_number(rpm_match.group(1)), "rpm")


def parse_displacement(value: str) -> Decimal:
    """'3.5L/212' → 3.5; '2.0 L' → 2.0; '1998 cc' → 2.0 only when it converts exactly to 0.1 L."""
    text = value.strip()
    litres = re.match(r"(\d+(?:\.\d+)?)\s*(?:l|liter|litre|liters|litres)\b", text, re.I)
    if litres:
        return _one_decimal(Decimal(litres.group(1)), "displacement")
    cc = re.match(r"(\d{3,5})\s*(?:cc|cm3|cm³)\b", text, re.I)
    if cc:
        return _one_decimal(Decimal(cc.group(1)) / 1000, "displacement")
    raise Unparsable("no litres figure")


def _one_decimal(value: Decimal, what: str, max_digits: int = 4) -> Decimal:
    quantised = value.quantize(Decimal("0.1"))
    if quantised != value:
        raise Unparsable(f"{what} {value} has more precision than the catalog keeps (0.1)")
    if len(quantised.as_tuple().digits) > max_digits:
        raise Unparsable(f"{what} {value} is out of range")
    return quantised


_CYLINDERS = re.compile(r"\b(?:V|I|H|W|L|B|Flat|Inline|Boxer)[- ]?(\d{1,2})\b", re.I)


def parse_engine(value: str) -> dict[str, Any]:
    """'Gas V6' → gas, 6 cylinders; 'Gas/Electric I-4' → hybrid, 4; 'Electric' → electric."""
    kind = normalize.engine_type(value)
    if kind is None:
        raise Unparsable("unknown engine type")
    result: dict[str, Any] = {"engine_type": str(kind)}
    match = _CYLINDERS.search(value)
    if match:
        result["cylinders"] = int(match.group(1))
    return result


def parse_mileage(value: str) -> tuple[int | None, int | None]:
    """'19 mpg City/26 mpg Hwy' → (19, 26). MPGe (electric equivalents) is not MPG and is reported."""
    if re.search(r"mpge|kwh", value, re.I):
        raise Unparsable("MPGe/kWh figures are not MPG")
    city = re.search(r"(\d+(?:\.\d+)?)\s*(?:mpg)?\s*city", value, re.I)
    highway = re.search(r"(\d+(?:\.\d+)?)\s*(?:mpg)?\s*(?:hwy|highway)", value, re.I)
    if not city and not highway:
        raise Unparsable("no city or highway figure")
    return (
        _whole(Decimal(city.group(1)), "city MPG") if city else None,
        _whole(Decimal(highway.group(1)), "highway MPG") if highway else None,
    )


def parse_range_miles(value: str) -> int:
    """'303 mi' → 303; '303 miles' → 303. Kilometres are not converted silently."""
    match = re.fullmatch(rf"\s*(?:est\.?\s*)?({_NUMBER})\s*(mi|miles?)?\.?\s*", value, re.I)
    if not match:
        raise Unparsable("not a range in miles")
    return _whole(_number(match.group(1)), "range")


def parse_count(value: str) -> int:
    """'5' → 5. Anything else (e.g. '5-7') is reported."""
    match = re.fullmatch(r"\s*(\d{1,2})\s*", value)
    if not match:
        raise Unparsable("not a single count")
    return int(match.group(1))


def parse_inches(value: str) -> Decimal:
    """'191.4' → 191.4; '73.0 in' → 73.0."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*(?:in\.?|inches|")?\s*', value, re.I)
    if not match:
        raise Unparsable("not a length in inches")
    return _one_decimal(Decimal(match.group(1)), "length", max_digits=5)


def parse_wheel_size(value: str) -> Decimal:
    """'19 x 8.5' → 19 (the diameter); '18' → 18."""
    match = re.fullmatch(r'\s*(\d+(?:\.\d+)?)\s*(?:"|in\.?)?\s*(?:x\s*\d+(?:\.\d+)?\s*(?:"|in\.?)?)?\s*', value, re.I)
    if not match:
        raise Unparsable("not a wheel size")
    return _one_decimal(Decimal(match.group(1)), "wheel size")


def _text_for(model: type[models.Model], field_name: str) -> Callable[[str], str]:
    field = model._meta.get_field(field_name)
    max_length = getattr(field, "max_length", None)
    if not isinstance(max_length, int):
        raise TypeError(f"{model.__name__}.{field_name} is not a text field with a max_length")

    def parse(value: str) -> str:
        text = " ".join(value.split())
        if len(text) > max_length:
            raise Unparsable(f"longer than {max_length} characters; kept raw only")
        return text

    return parse


def _choice(mapper: Callable[[str], str | None], what: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        choice = mapper(value)
        if choice is None:
            raise Unparsable(f"unknown {what}")
        return str(choice)

    return parse


# Each rule: a parser, and how its result maps onto fields (tuple of names for tuple results,
# a dict result is used as-is). ``target`` says which model the fields belong to.
@dataclass(frozen=True)
class Rule:
    parse: Callable[[str], Any]
    fields: tuple[str, ...] = ()
    target: str = "spec"  # "spec" or "car_model"


class _Partial(Unparsable):
    """Part of the value was read (``values``); the rest is reported."""

    def __init__(self, values: dict[str, Any], reason: str) -> None:
        super().__init__(reason)
        self.values = values


def _engine_rule(value: str) -> dict[str, Any]:
    description = _text_for(Specification, "engine_description")(value)
    try:
        return {"engine_description": description, **parse_engine(value)}
    except Unparsable as exc:
        raise _Partial({"engine_description": description}, str(exc)) from exc


def _power_rule(figure_field: str, rpm_field: str) -> Callable[[str], dict[str, Any]]:
    def parse(value: str) -> dict[str, Any]:
        try:
            figure, rpm = parse_power_at_rpm(value)
        except Unparsable:
            figure_only = re.match(rf"\s*({_NUMBER})\s*@", value)
            if figure_only:
                # The figure is clear even when the rpm is a range: keep it, report the rpm.
                rpm_text = value.split("@", 1)[1].strip()
                raise _Partial(
                    {figure_field: _whole(_number(figure_only.group(1)), "figure")},
                    f"rpm '{rpm_text}' is not a single figure",
                ) from None
            raise
        return {figure_field: figure, rpm_field: rpm} if rpm is not None else {figure_field: figure}

    return parse


def _mileage_rule(value: str) -> dict[str, Any]:
    city, highway = parse_mileage(value)
    values = {}
    if city is not None:
        values["mpg_city"] = city
    if highway is not None:
        values["mpg_highway"] = highway
    return values


def _key(name: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9@/,()]+", " ", name.lower()).split())


RULES: dict[str, Rule] = {
    _key(name): rule
    for names, rule in [
        (("MSRP", "Base MSRP", "Starting MSRP", "Price", "Base Price"), Rule(parse_money, ("msrp_usd",), "car_model")),
        (
            ("SAE Net Horsepower @ RPM", "Horsepower", "Net Horsepower"),
            Rule(_power_rule("horsepower", "horsepower_rpm")),
        ),
        (("SAE Net Torque @ RPM", "Torque", "Net Torque"), Rule(_power_rule("torque_lb_ft", "torque_rpm"))),
        (("Displacement", "Engine Displacement"), Rule(parse_displacement, ("displacement_l",))),
        (("Engine Type", "Engine"), Rule(_engine_rule)),
        (("Gas Mileage", "Fuel Economy", "EPA Fuel Economy"), Rule(_mileage_rule)),
        (
            ("Electric Range", "EPA Electric Range (mi)", "Electric Range (mi)", "EV Range", "All-Electric Range"),
            Rule(parse_range_miles, ("electric_range_mi",)),
        ),
        (
            ("Drivetrain", "Drive Type", "Drive Train"),
            Rule(_choice(normalize.drivetrain, "drivetrain"), ("drivetrain",)),
        ),
        (("Transmission",), Rule(_text_for(Specification, "transmission"), ("transmission",))),
        (("Passenger Capacity", "Seating Capacity", "Seats"), Rule(parse_count, ("seats",))),
        (("Passenger Doors", "Doors", "Number of Doors"), Rule(parse_count, ("doors",))),
        (("Body Style", "Body Type"), Rule(_choice(normalize.body_style, "body style"), ("body_style",), "car_model")),
        (("EPA Classification", "EPA Class"), Rule(_text_for(Specification, "epa_class"), ("epa_class",))),
        (("Front Wheel Size (in)", "Front Wheel Size"), Rule(parse_wheel_size, ("front_wheel_size_in",))),
        (("Width, Max w/o mirrors (in)", "Width (in)", "Width"), Rule(parse_inches, ("width_in",))),
        (("Height, Overall (in)", "Height (in)", "Height"), Rule(parse_inches, ("height_in",))),
        (("Length, Overall (in)", "Length (in)", "Length"), Rule(parse_inches, ("length_in",))),
    ]
    for name in names
}


def _as_values(rule: Rule, parsed: Any) -> dict[str, Any]:
    if isinstance(parsed, dict):
        return parsed
    if isinstance(parsed, tuple):
        return dict(zip(rule.fields, parsed, strict=True))
    return {rule.fields[0]: parsed}


def clean_specs(raw_rows: Iterable[tuple[str, str]]) -> CleanResult:
    """Typed values for Specification and CarModel from (name, value) rows; the rest reported."""
    result = CleanResult()
    for raw_name, raw_value in raw_rows:
        name, value = " ".join(str(raw_name).split()), " ".join(str(raw_value).split())
        if value.lower() in PLACEHOLDERS:
            continue
        rule = RULES.get(_key(name))
        if rule is None:
            result.unparsed.append((name, value, "unknown spec name"))
            continue
        target = result.car_model_values if rule.target == "car_model" else result.values
        try:
            values = _as_values(rule, rule.parse(value))
        except _Partial as partial:
            values = partial.values
            result.unparsed.append((name, value, str(partial)))
        except (Unparsable, InvalidOperation) as exc:
            result.unparsed.append((name, value, str(exc) or "unreadable"))
            continue
        for field_name, field_value in values.items():
            if field_name in target and target[field_name] != field_value:
                result.unparsed.append(
                    (name, value, f"conflicts with an earlier {field_name} of {target[field_name]}; first kept")
                )
                continue
            target[field_name] = field_value
    return result


def raw_rows_as_dict(raw_rows: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The rows as published, for Specification.raw; a repeated name keeps every value."""
    raw: dict[str, str] = {}
    for name, value in raw_rows:
        name, value = " ".join(str(name).split()), " ".join(str(value).split())
        if name in raw and raw[name] != value:
            index = 2
            while f"{name} ({index})" in raw:
                index += 1
            name = f"{name} ({index})"
        raw[name] = value
    return raw
