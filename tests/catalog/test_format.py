"""Template filters that print catalog figures for people."""

from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.template import Context, Template

from catalog.templatetags import carsite_format as fmt


@pytest.mark.parametrize(
    ("value", "expected"), [(49550, "$49,550"), (249900, "$249,900"), (0, "$0"), (None, "—"), ("", "—")]
)
def test_usd(value, expected):
    assert fmt.usd(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(Decimal("3.5"), "3.5 L"), (Decimal("2"), "2.0 L"), (None, "—")])
def test_litres(value, expected):
    assert fmt.litres(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(Decimal("19.0"), "19 in"), (Decimal("198.4"), "198.4 in"), (20, "20 in"), (None, "—")]
)
def test_inches(value, expected):
    assert fmt.inches(value) == expected


def test_horsepower_variants():
    assert (
        fmt.horsepower(SimpleNamespace(horsepower=290, horsepower_rpm=None, horsepower_approximate=False)) == "290 hp"
    )
    assert (
        fmt.horsepower(SimpleNamespace(horsepower=290, horsepower_rpm=None, horsepower_approximate=True)) == "≈290 hp"
    )
    exact = SimpleNamespace(horsepower=1020, horsepower_rpm=6200, horsepower_approximate=False)
    assert fmt.horsepower(exact) == "1,020 hp @ 6,200 rpm"
    assert fmt.horsepower(SimpleNamespace(horsepower=None, horsepower_rpm=None, horsepower_approximate=True)) == "—"
    assert fmt.horsepower(None) == "—" and fmt.horsepower(300) == "300 hp"


def test_mpg_variants():
    assert fmt.mpg(SimpleNamespace(mpg_city=19, mpg_highway=26)) == "19/26 mpg"
    assert fmt.mpg(SimpleNamespace(mpg_city=None, mpg_highway=None)) == "—"
    assert fmt.mpg(SimpleNamespace(mpg_city=None, mpg_highway=30)) == "—/30 mpg"
    assert fmt.mpg(None) == "—"


def test_filters_in_a_template():
    template = Template("{% load carsite_format %}{{ price|usd }} {{ size|litres }} {{ missing|or_unknown }}")
    assert template.render(Context({"price": 49550, "size": Decimal("3.5"), "missing": None})) == "$49,550 3.5 L —"
