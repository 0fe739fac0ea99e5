"""The Car Connection layout (``--source tcc``).

- ``/new-cars`` links every make as ``/make/new,<make-slug>``;
- a make page lists its models in ``div.name > a``;
- a model page's ``div.year-selector`` links model-year "overview" pages; replacing ``overview``
  with ``specifications`` gives the spec page and with ``photos`` the gallery;
- a spec page has breadcrumbs ``a#a_bc_1..3`` (make, model, year), ``span.msrp`` and
  ``div.specs-set-item`` rows of two spans (name, value);
- a gallery shows thumbnails ``…sml…_s.jpg``; the same path ending ``_l.jpg`` is the large image.
"""

import re
from typing import ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from lxml import etree

from scraping.adapters.base import Link, ParseError, SpecPage, parse_html, unique

_MAKE_HREF = re.compile(r"/make/new,([^/?#]+)")
_YEAR = re.compile(r"\b(19[0-9]{2}|20[0-9]{2}|2100)\b")
_THUMBNAIL_END = re.compile(r"_s\.jpg", re.I)
_URL_DELIMITERS = frozenset(" \t\r\n\"'<>()\\,;=")
_MAX_URL = 2000


def _has_class(name: str) -> str:
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


def _text(element: etree._Element) -> str:
    return " ".join(element.text_content().split())


def _replace_last_segment_word(url: str, old: str, new: str) -> str:
    parts = urlsplit(url)
    path = parts.path
    index = path.rfind(old)
    if index < 0:
        return ""
    return urlunsplit((parts.scheme, parts.netloc, path[:index] + new + path[index + len(old) :], parts.query, ""))


def spec_url_for(overview_url: str) -> str:
    return _replace_last_segment_word(overview_url, "overview", "specifications")


def gallery_url_for(spec_url: str) -> str:
    return _replace_last_segment_word(spec_url, "specifications", "photos")


class CarConnectionAdapter:
    name: ClassVar[str] = "tcc"
    label: ClassVar[str] = "The Car Connection layout"

    def index_url(self, base_url: str) -> str:
        return urljoin(base_url.rstrip("/") + "/", "new-cars")

    def discover(self, kind: str, url: str, html: str) -> list[Link]:
        document = parse_html(html, url)
        if kind == "index":
            return self._makes(document, url)
        if kind == "make":
            hrefs = document.xpath(f"//div[{_has_class('name')}]/a/@href")
            return [Link("model", urljoin(url, href.strip())) for href in unique(hrefs) if href.strip()]
        if kind == "model":
            return self._model_years(document, url)
        raise ValueError(f"{kind} pages have no links to discover")

    def _makes(self, document: etree._Element, url: str) -> list[Link]:
        links: dict[str, Link] = {}
        for anchor in document.xpath("//a[@href]"):
            href = anchor.get("href").strip()
            match = _MAKE_HREF.search(href)
            if match:
                absolute = urljoin(url, href)
                links.setdefault(absolute, Link("make", absolute, make=match.group(1)))
        return list(links.values())

    def _model_years(self, document: etree._Element, url: str) -> list[Link]:
        links: dict[str, Link] = {}
        for anchor in document.xpath(f"//div[{_has_class('year-selector')}]//a[@href]"):
            overview = urljoin(url, anchor.get("href").strip())
            spec_url = spec_url_for(overview)
            if not spec_url:
                continue
            year_match = _YEAR.search(_text(anchor)) or _YEAR.search(urlsplit(overview).path)
            links.setdefault(spec_url, Link("spec", spec_url, year=int(year_match.group(1)) if year_match else None))
        return list(links.values())

    def parse_spec(self, url: str, html: str) -> SpecPage:
        document = parse_html(html, url)
        crumbs = []
        for number in (1, 2, 3):
            found = document.xpath(f"//a[@id='a_bc_{number}']")
            crumbs.append(_text(found[0]) if found else "")
        make, model, year_text = crumbs
        if not make or not model:
            raise ParseError("The spec page has no make/model breadcrumbs (a#a_bc_1, a#a_bc_2).")
        year_match = _YEAR.search(year_text)
        if not year_match:
            raise ParseError(f"The spec page's year breadcrumb (a#a_bc_3) is {year_text!r}, not a year.")
        rows: list[tuple[str, str]] = []
        msrp = document.xpath(f"//span[{_has_class('msrp')}]")
        if msrp and _text(msrp[0]):
            rows.append(("MSRP", _text(msrp[0])))
        for item in document.xpath(f"//div[{_has_class('specs-set-item')}]"):
            spans = item.xpath("./span")
            if len(spans) >= 2:
                name = _text(spans[0])
                if name:
                    rows.append((name, _text(spans[1])))
        return SpecPage(
            make=make, model=model, year=int(year_match.group(1)), rows=rows, gallery_url=gallery_url_for(url)
        )

    def parse_gallery(self, url: str, html: str) -> list[str]:
        # Scan for "_s.jpg" and walk back to the start of the URL: linear in the page size, where a
        # regex like "[^"]*sml[^"]*_s.jpg" backtracks quadratically over long script strings.
        text = (html or "").replace("\\/", "/")
        large = []
        for match in _THUMBNAIL_END.finditer(text):
            start = match.start()
            limit = max(0, start - _MAX_URL)
            while start > limit and text[start - 1] not in _URL_DELIMITERS:
                start -= 1
            thumbnail = text[start : match.start()]
            if "sml" not in thumbnail.lower() or not thumbnail:
                continue
            absolute = urljoin(url, thumbnail.replace("&amp;", "&") + "_s.jpg")
            large.append(absolute[: -len("_s.jpg")] + "_l.jpg")
        return unique(large)
