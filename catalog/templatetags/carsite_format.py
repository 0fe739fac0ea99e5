"""Human formatting of catalog figures: ``$49,550``, ``3.5 L``, ``≈290 hp``, ``19/26 mpg``, ``19 in``.

Unknown values (None or blank) always render as an em dash so tables never show "None".
"""

from decimal import Decimal, InvalidOperation
from typing import Any

from django import template

register = template.Library()

UNKNOWN = "—"


def _unknown(value: Any) -> bool:
    return value is None or value == ""


def _number(value: Any) -> Decimal | None:
    if _unknown(value) or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _trimmed(number: Decimal, places: int = 1) -> str:
    """3.50 → '3.5', 19.0 → '19', 198.4 → '198.4'."""
    text = f"{number:,.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


@register.filter
def usd(value: Any) -> str:
    number = _number(value)
    return UNKNOWN if number is None else f"${number:,.0f}"


@register.filter
def litres(value: Any) -> str:
    number = _number(value)
    return UNKNOWN if number is None else f"{number:.1f} L"


@register.filter
def inches(value: Any) -> str:
    number = _number(value)
    return UNKNOWN if number is None else f"{_trimmed(number)} in"


@register.filter
def horsepower(spec: Any) -> str:
    """'290 hp', '≈290 hp' when the source rounded it, '… @ 6,200 rpm' when the rpm is known.

    Takes a Specification (or anything with ``horsepower``, ``horsepower_rpm`` and
    ``horsepower_approximate``) or a bare number.
    """
    if spec is None:
        return UNKNOWN
    if hasattr(spec, "horsepower"):
        number = _number(spec.horsepower)
        rpm = _number(getattr(spec, "horsepower_rpm", None))
        approximate = bool(getattr(spec, "horsepower_approximate", False))
    else:
        number, rpm, approximate = _number(spec), None, False
    if number is None:
        return UNKNOWN
    text = f"{'≈' if approximate else ''}{number:,.0f} hp"
    if rpm:
        text += f" @ {rpm:,.0f} rpm"
    return text


@register.filter
def mpg(spec: Any) -> str:
    """'19/26 mpg' (city/highway); one known figure shows '—' for the other."""
    if spec is None:
        return UNKNOWN
    city, highway = _number(getattr(spec, "mpg_city", None)), _number(getattr(spec, "mpg_highway", None))
    if city is None and highway is None:
        return UNKNOWN
    return f"{city if city is not None else UNKNOWN}/{highway if highway is not None else UNKNOWN} mpg"


@register.filter
def or_unknown(value: Any) -> Any:
    return UNKNOWN if _unknown(value) else value
