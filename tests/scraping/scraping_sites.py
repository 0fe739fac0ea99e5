"""The local sites the scraping tests crawl, and what crawling them must produce."""

import struct
import zlib
from decimal import Decimal

from bench.devsite import FixtureSite, TccCar, build_tcc_site, photo, tcc_image_path, tcc_spec_path

MAX_IMAGE_BYTES = 150_000
BLOCKED_SPEC = "/ford_ranger/specifications/"


def decompression_bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims width×height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * 4)) + chunk(b"IEND", b"")


AUDI_A4 = TccCar(
    make="Audi",
    make_slug="audi",
    model="A4",
    model_slug="a4",
    year=2023,
    msrp="$39,100",
    rows=[
        ("SAE Net Horsepower @ RPM", "201 @ 5000"),
        ("SAE Net Torque @ RPM", "236 @ 1600"),
        ("Displacement", "2.0L/121"),
        ("Engine Type", "Turbocharged Gas I4"),
        ("Gas Mileage", "25 mpg City/34 mpg Hwy"),
        ("Drivetrain", "All Wheel Drive"),
        ("Transmission", "7-Speed Automatic w/OD"),
        ("Passenger Capacity", "5"),
        ("Passenger Doors", "4"),
        ("Body Style", "4dr Car"),
        ("EPA Classification", "Compact Cars"),
        ("Front Wheel Size (in)", "18 x 8"),
        ("Width, Max w/o mirrors (in)", "73.0"),
        ("Height, Overall (in)", "56.2"),
        ("Length, Overall (in)", "187.5"),
    ],
    images=[
        photo(1),
        photo(2),
        photo(1),  # exact duplicate of the first
        photo(2, fmt="PNG", brightness=3),  # near-duplicate of the second
    ],
)
AUDI_A4_2024 = TccCar(
    make="Audi", make_slug="audi", model="A4", model_slug="a4", year=2024, msrp="$40,000", images=[photo(3)]
)
VW_ID4 = TccCar(
    make="Volkswagen",
    make_slug="volkswagen",
    model="ID.4",
    model_slug="id-4",
    year=2023,
    msrp="$38,995",
    rows=[
        ("SAE Net Horsepower @ RPM", "201"),
        ("SAE Net Torque @ RPM", "229 @ 0-1500"),
        ("Engine Type", "Electric"),
        ("Electric Range", "275 mi"),
        ("Gas Mileage", "107 MPGe City/91 MPGe Hwy"),
        ("Drivetrain", "Rear Wheel Drive"),
        ("Body Style", "Sport Utility"),
        ("Passenger Capacity", "5"),
        ("Frobnicator Index", "7"),
    ],
    images=[
        photo(4),
        b"<html>this is not an image</html>",
        photo(5) + b"\0" * MAX_IMAGE_BYTES,  # over the download cap
        decompression_bomb_png(),
        photo(6, size=(20, 20)),  # too small
    ],
)
FORD_F150 = TccCar(
    make="Ford",
    make_slug="ford",
    model="F-150",
    model_slug="f-150",
    year=2023,
    msrp=None,  # the page publishes no MSRP
    rows=[
        ("SAE Net Horsepower @ RPM", "400 @ 6000"),
        ("SAE Net Torque @ RPM", "410 @ 4250"),
        ("Displacement", "5.0L/302"),
        ("Engine Type", "Gas V8"),
        ("Drivetrain", "Four Wheel Drive"),
        ("Body Style", "Crew Cab Pickup - Short Bed"),
        ("Passenger Doors", "4"),
    ],
    images=[photo(7), photo(8), photo(9)],
)
FORD_RANGER = TccCar(make="Ford", make_slug="ford", model="Ranger", model_slug="ranger", year=2023, msrp="$27,400")
FORD_MAVERICK = TccCar(
    make="Ford", make_slug="ford", model="Maverick", model_slug="maverick", year=2023, msrp="$22,195"
)
KIA_TELLURIDE = TccCar(
    make="Kia",
    make_slug="kia",
    model="Telluride",
    model_slug="telluride",
    year=2023,
    msrp="$35,690",
    rows=[("Passenger Capacity", "8"), ("Gas Mileage", "20 mpg City/26 mpg Hwy")],
    images=[photo(10)],
)
KIA_BROKEN = TccCar(make="Kia", make_slug="kia", model="Broken", model_slug="broken", year=2023)

ALL_CARS = [AUDI_A4, AUDI_A4_2024, VW_ID4, FORD_F150, FORD_RANGER, FORD_MAVERICK, KIA_TELLURIDE, KIA_BROKEN]


def build_fault_site(site: FixtureSite) -> FixtureSite:
    """The Car Connection layout with every fault the crawler must survive."""
    build_tcc_site(site, ALL_CARS, robots=f"User-agent: *\nDisallow: {BLOCKED_SPEC}\n")
    site.resources["/make/new,audi"].faults = ["status:429:1"]
    site.resources["/volkswagen_id-4"].faults = ["status:500"]
    site.resources["/make/new,ford"].faults = ["sleep:1.0"]
    site.resources[tcc_spec_path(FORD_MAVERICK)].always = "sleep:1.0"
    site.resources["/audi_a4/photos/2023_audi_a4"].faults = ["reset"]
    site.resources[tcc_image_path(FORD_F150, 2)].always = "redirect:http://169.254.169.254/latest/meta-data/"
    site.resources[tcc_image_path(FORD_F150, 3)].always = "reset"
    # Malformed but readable: unclosed tags around real rows.
    telluride = site.resources[tcc_spec_path(KIA_TELLURIDE)]
    telluride.body = telluride.body.replace(b"</div>", b"", 3).replace(b"</body></html>", b"<div><span>")
    # Malformed and unreadable as a spec page: no breadcrumbs at all.
    site.add(tcc_spec_path(KIA_BROKEN), "<html><body><div class='specs-set-item'><span>Horse<span>12")
    return site


# What the fault site must produce: (label) → expected car model fields and specification fields.
EXPECTED_MODELS = {
    "2023 Audi A4": {
        "car_model": {"msrp_usd": 39100, "body_style": "sedan"},
        "specs": {
            "horsepower": 201,
            "horsepower_rpm": 5000,
            "torque_lb_ft": 236,
            "torque_rpm": 1600,
            "displacement_l": Decimal("2.0"),
            "engine_type": "gas",
            "engine_description": "Turbocharged Gas I4",
            "cylinders": 4,
            "mpg_city": 25,
            "mpg_highway": 34,
            "drivetrain": "AWD",
            "transmission": "7-Speed Automatic w/OD",
            "seats": 5,
            "doors": 4,
            "epa_class": "Compact Cars",
            "front_wheel_size_in": Decimal("18.0"),
            "width_in": Decimal("73.0"),
            "height_in": Decimal("56.2"),
            "length_in": Decimal("187.5"),
            "electric_range_mi": None,
        },
        "images": [tcc_image_path(AUDI_A4, 1), tcc_image_path(AUDI_A4, 2)],
    },
    "2023 Volkswagen ID.4": {
        "car_model": {"msrp_usd": 38995, "body_style": "suv"},
        "specs": {
            "horsepower": 201,
            "horsepower_rpm": None,
            "torque_lb_ft": 229,
            "torque_rpm": None,
            "engine_type": "electric",
            "engine_description": "Electric",
            "cylinders": None,
            "electric_range_mi": 275,
            "mpg_city": None,
            "mpg_highway": None,
            "drivetrain": "RWD",
            "seats": 5,
        },
        "images": [tcc_image_path(VW_ID4, 1)],
    },
    "2023 Ford F-150": {
        "car_model": {"msrp_usd": None, "body_style": "pickup"},
        "specs": {
            "horsepower": 400,
            "horsepower_rpm": 6000,
            "torque_lb_ft": 410,
            "torque_rpm": 4250,
            "displacement_l": Decimal("5.0"),
            "engine_type": "gas",
            "cylinders": 8,
            "drivetrain": "4WD",
            "doors": 4,
        },
        "images": [tcc_image_path(FORD_F150, 1)],
    },
    "2023 Kia Telluride": {
        "car_model": {"msrp_usd": 35690, "body_style": ""},
        "specs": {"seats": 8, "mpg_city": 20, "mpg_highway": 26},
        "images": [tcc_image_path(KIA_TELLURIDE, 1)],
    },
}

# (path, status, error_code) of every page that must end failed or skipped.
EXPECTED_PROBLEMS = {
    (tcc_spec_path(FORD_RANGER), "skipped", "robots_disallowed"),
    (tcc_spec_path(FORD_MAVERICK), "failed", "timeout"),
    (tcc_spec_path(KIA_BROKEN), "failed", "parse_error"),
    (tcc_image_path(AUDI_A4, 3), "skipped", "duplicate"),
    (tcc_image_path(AUDI_A4, 4), "skipped", "near_duplicate"),
    (tcc_image_path(VW_ID4, 2), "failed", "not_an_image"),
    (tcc_image_path(VW_ID4, 3), "failed", "too_large"),
    (tcc_image_path(VW_ID4, 4), "failed", "too_many_pixels"),
    (tcc_image_path(VW_ID4, 5), "failed", "too_small"),
    (tcc_image_path(FORD_F150, 2), "failed", "private_address"),
    (tcc_image_path(FORD_F150, 3), "failed", "connection"),
}


def catalog_snapshot() -> dict:
    """Everything the crawl writes to the catalog, in comparable form."""
    from catalog.models import CarImage, CarModel, Manufacturer, Specification
    from catalog.services import SPEC_FIELDS

    return {
        "manufacturers": sorted(Manufacturer.objects.values_list("name", "slug")),
        "models": sorted(CarModel.objects.values_list("label", "msrp_usd", "body_style")),
        "specs": sorted(
            (spec.car_model.label, tuple(getattr(spec, f) for f in SPEC_FIELDS), repr(sorted(spec.raw)))
            for spec in Specification.objects.select_related("car_model")
        ),
        "images": sorted(
            CarImage.objects.values_list("car_model__label", "source_url", "sha256", "phash", "width", "height")
        ),
    }
