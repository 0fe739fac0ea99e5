"""Any site that publishes schema.org JSON-LD for its cars (``--source jsonld``).

The index page (the base URL) links the car pages, as plain links or as a JSON-LD ``ItemList``.
A car page carries a ``Car``, ``Vehicle`` or ``Product`` object; its properties are turned into
rows named like The Car Connection's so the same cleaning rules read them. Units the rules do not
understand are kept in the row name (e.g. "Width (CMT)") so they are reported, not misread.
"""

import json
import re
from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit

from lxml import etree

from scraping.adapters.base import Link, NotACarPage, ParseError, SpecPage, parse_html, unique

VEHICLE_TYPES = ("Car", "Vehicle", "MotorizedBicycle", "BusOrCoach", "Motorcycle")
_YEAR = re.compile(r"\b(19[0-9]{2}|20[0-9]{2}|2100)\b")
_INCHES = {"INH", "IN", "INCH", "INCHES"}


def _json_ld_objects(document: etree._Element) -> list[dict]:
    objects: list[dict] = []
    for script in document.xpath("//script[@type='application/ld+json']"):
        try:
            data = json.loads(script.text or "")
        except json.JSONDecodeError:
            continue  # one broken block must not hide the others
        stack = data if isinstance(data, list) else [data]
        while stack:
            item = stack.pop(0)
            if isinstance(item, dict):
                objects.append(item)
                graph = item.get("@graph")
                if isinstance(graph, list):
                    stack.extend(graph)
    return objects


def _types(item: dict) -> set[str]:
    value = item.get("@type", [])
    return {str(t).rsplit("/", 1)[-1] for t in (value if isinstance(value, list) else [value])}


def _name(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name", "")
    if isinstance(value, list):
        value = value[0] if value else ""
    return " ".join(str(value or "").split())


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _quantity(value: Any) -> tuple[str, str]:
    """(value, unit) of a QuantitativeValue, a number or a text."""
    if isinstance(value, dict):
        unit = str(value.get("unitCode") or value.get("unitText") or "").strip()
        return str(value.get("value", value.get("minValue", ""))).strip(), unit
    return str(value if value is not None else "").strip(), ""


def _number_text(value: str) -> str:
    return value[:-2] if value.endswith(".0") else value


class JsonLdAdapter:
    name: ClassVar[str] = "jsonld"
    label: ClassVar[str] = "schema.org JSON-LD (Car / Vehicle / Product)"

    def index_url(self, base_url: str) -> str:
        return base_url

    def discover(self, kind: str, url: str, html: str) -> list[Link]:
        if kind != "index":
            raise ValueError(f"{kind} pages have no links to discover")
        document = parse_html(html, url)
        host = urlsplit(url).netloc.lower()
        candidates: list[str] = []
        for item in _json_ld_objects(document):
            if "ItemList" in _types(item):
                for element in item.get("itemListElement") or []:
                    if isinstance(element, dict):
                        target = element.get("url") or _first(element.get("item"))
                        target = target.get("url") or target.get("@id") if isinstance(target, dict) else target
                        if target:
                            candidates.append(str(target))
        candidates += [href for href in document.xpath("//a/@href")]
        links = []
        for candidate in unique([urljoin(url, c.strip()).split("#", 1)[0] for c in candidates if c.strip()]):
            parts = urlsplit(candidate)
            if parts.scheme in ("http", "https") and parts.netloc.lower() == host and candidate != url:
                links.append(Link("spec", candidate))
        return links

    def parse_spec(self, url: str, html: str) -> SpecPage:
        document = parse_html(html, url)
        objects = _json_ld_objects(document)
        vehicle = next((o for o in objects if _types(o) & set(VEHICLE_TYPES)), None)
        vehicle = vehicle or next((o for o in objects if "Product" in _types(o)), None)
        if vehicle is None:
            raise NotACarPage("The page has no JSON-LD Car, Vehicle or Product.")
        make = _name(vehicle.get("brand")) or _name(vehicle.get("manufacturer"))
        title = _name(vehicle.get("name"))
        model = _name(vehicle.get("model"))
        year_source = " ".join(
            str(vehicle.get(key) or "") for key in ("vehicleModelDate", "modelDate", "productionDate", "releaseDate")
        )
        year_match = _YEAR.search(year_source) or _YEAR.search(title)
        if not model and make and title:
            # "2023 Audi A4" → "A4": the name minus its year and make.
            model = " ".join(w for w in title.split() if w != (year_match.group(1) if year_match else None))
            model = model[len(make) :].strip() if model.lower().startswith(make.lower()) else ""
        if not make or not model:
            raise ParseError("The JSON-LD object names no brand/manufacturer and model.")
        if not year_match:
            raise ParseError("The JSON-LD object gives no model year (vehicleModelDate, modelDate, name).")
        return SpecPage(
            make=make,
            model=model,
            year=int(year_match.group(1)),
            rows=self._rows(vehicle),
            image_urls=self._images(vehicle, url),
        )

    def _rows(self, vehicle: dict) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        offers = _first(vehicle.get("offers"))
        if isinstance(offers, dict):
            price = offers.get("price", offers.get("lowPrice"))
            currency = str(offers.get("priceCurrency") or "USD").upper()
            if price not in (None, ""):
                rows.append(("MSRP", f"${price}") if currency == "USD" else (f"Price ({currency})", str(price)))
        engine = _first(vehicle.get("vehicleEngine"))
        fuel = _name(vehicle.get("fuelType"))
        if isinstance(engine, dict):
            fuel = fuel or _name(engine.get("fuelType"))
            value, unit = _quantity(engine.get("engineDisplacement"))
            if value:
                unit_key = unit.upper()
                if unit_key in ("LTR", "L", ""):
                    rows.append(("Displacement", f"{value} L"))
                elif unit_key in ("CMQ", "CC", "CM3"):
                    rows.append(("Displacement", f"{value} cc"))
                else:
                    rows.append((f"Displacement ({unit})", value))
            value, unit = _quantity(engine.get("enginePower"))
            if value:
                name = "SAE Net Horsepower @ RPM" if unit.upper() in ("BHP", "HP", "") else f"Engine Power ({unit})"
                rows.append((name, _number_text(value)))
            value, unit = _quantity(engine.get("torque"))
            if value:
                name = "SAE Net Torque @ RPM" if unit.upper() in ("F17", "LBF FT", "LB-FT", "") else f"Torque ({unit})"
                rows.append((name, _number_text(value)))
            description = " ".join(filter(None, [fuel, _name(engine.get("engineType")) or _name(engine.get("name"))]))
            if description:
                rows.append(("Engine Type", description))
        elif fuel:
            rows.append(("Engine Type", fuel))
        rows += self._efficiency(vehicle.get("fuelEfficiency"))
        drive = _name(vehicle.get("driveWheelConfiguration"))
        if drive:
            drive = drive.rsplit("/", 1)[-1]
            rows.append(("Drivetrain", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", drive).replace("Configuration", "").strip()))
        for key, name in (("vehicleTransmission", "Transmission"), ("bodyType", "Body Style")):
            if _name(vehicle.get(key)):
                rows.append((name, _name(vehicle.get(key))))
        for key, name in (("seatingCapacity", "Passenger Capacity"), ("numberOfDoors", "Passenger Doors")):
            value, _unit = _quantity(vehicle.get(key))
            if value:
                rows.append((name, _number_text(value)))
        for key, name in (
            ("width", "Width, Max w/o mirrors (in)"),
            ("height", "Height, Overall (in)"),
            ("depth", "Length, Overall (in)"),
        ):
            value, unit = _quantity(vehicle.get(key))
            if value:
                rows.append((name, value) if unit.upper() in _INCHES | {""} else (f"{key.title()} ({unit})", value))
        for prop in vehicle.get("additionalProperty") or []:
            if isinstance(prop, dict) and prop.get("name"):
                unit = str(prop.get("unitText") or "").strip()
                rows.append((_name(prop["name"]), " ".join(filter(None, [str(prop.get("value", "")), unit]))))
        return rows

    def _efficiency(self, value: Any) -> list[tuple[str, str]]:
        if not value:
            return []
        items = value if isinstance(value, list) else [value]
        texts = [i for i in items if isinstance(i, str)]
        if texts:
            return [("Gas Mileage", t) for t in texts]
        parts = []
        for item in items:
            if isinstance(item, dict):
                figure, unit = _quantity(item)
                label = _name(item.get("name")) or str(item.get("description") or "")
                parts.append(f"{_number_text(figure)} {unit or 'mpg'} {label}".strip())
        return [("Gas Mileage", "/".join(parts))] if parts else []

    def _images(self, vehicle: dict, url: str) -> list[str]:
        images = vehicle.get("image") or []
        urls = []
        for image in images if isinstance(images, list) else [images]:
            if isinstance(image, dict):
                image = image.get("contentUrl") or image.get("url") or ""
            if isinstance(image, str) and image.strip():
                urls.append(urljoin(url, image.strip()))
        return unique(urls)

    def parse_gallery(self, url: str, html: str) -> list[str]:
        return self.parse_spec(url, html).image_urls
