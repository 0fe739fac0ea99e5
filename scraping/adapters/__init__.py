"""Registry of source adapters by name. Adding a site means adding one module and one line here."""

from scraping.adapters.base import Link, NotACarPage, ParseError, SourceAdapter, SpecPage
from scraping.adapters.jsonld import JsonLdAdapter
from scraping.adapters.tcc import CarConnectionAdapter

ADAPTERS: dict[str, type[SourceAdapter]] = {adapter.name: adapter for adapter in (CarConnectionAdapter, JsonLdAdapter)}


class UnknownSource(ValueError):
    pass


def get_adapter(name: str) -> SourceAdapter:
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise UnknownSource(f"Unknown source {name!r}; known: {', '.join(sorted(ADAPTERS))}.") from None


def source_choices() -> list[tuple[str, str]]:
    return [(name, adapter.label) for name, adapter in sorted(ADAPTERS.items())]


__all__ = ["ADAPTERS", "Link", "NotACarPage", "ParseError", "SourceAdapter", "SpecPage", "UnknownSource", "get_adapter"]
