"""The source adapter interface: how one site's pages are found and read.

An adapter is pure parsing: it gets a page's URL and HTML and returns links and data. Fetching,
politeness, scoping and catalog writes are the crawler's business (``scraping.services``).
"""

from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import lxml.html
from lxml import etree


class ParseError(ValueError):
    """The page does not have the structure the adapter expects; the message says what is missing."""


class NotACarPage(ParseError):
    """The page is fine but describes no car (e.g. an 'About' page linked from an index)."""


@dataclass(frozen=True)
class Link:
    """A page to fetch next. ``kind`` is a PageKind value; make/year let the crawler apply the scope early."""

    kind: str
    url: str
    make: str = ""
    year: int | None = None

    def as_dict(self) -> dict:
        return {"kind": self.kind, "url": self.url, "make": self.make, "year": self.year}

    @classmethod
    def from_dict(cls, data: dict) -> "Link":
        return cls(kind=data["kind"], url=data["url"], make=data.get("make") or "", year=data.get("year"))


@dataclass
class SpecPage:
    make: str
    model: str
    year: int
    rows: list[tuple[str, str]] = field(default_factory=list)  # (name, value) as published, MSRP included
    image_urls: list[str] = field(default_factory=list)  # images found on the spec page itself
    gallery_url: str = ""  # where more images are, if the site has a separate gallery


class SourceAdapter(Protocol):
    name: ClassVar[str]
    label: ClassVar[str]

    def index_url(self, base_url: str) -> str:
        """The first page of a crawl."""
        ...

    def discover(self, kind: str, url: str, html: str) -> list[Link]:
        """Links found on an index, make or model page."""
        ...

    def parse_spec(self, url: str, html: str) -> SpecPage:
        """Make, model, year and spec rows of one model-year page; raises ParseError."""
        ...

    def parse_gallery(self, url: str, html: str) -> list[str]:
        """Absolute URLs of the full-size images on a gallery page, in page order, without repeats."""
        ...


def unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def parse_html(html: str, url: str) -> etree._Element:
    """The page as an lxml document (links resolve against ``url``); ParseError when it is not HTML."""
    if not html or not html.strip():
        raise ParseError("The page is empty.")
    try:
        return lxml.html.document_fromstring(html, base_url=url)
    except (etree.ParserError, ValueError) as exc:
        raise ParseError(f"The page is not readable HTML ({exc}).") from exc
