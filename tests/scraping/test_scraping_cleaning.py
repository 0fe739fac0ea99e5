"""Every cleaning rule, table-driven: published text in, typed values (or a reported reason) out."""

from decimal import Decimal

import pytest

from scraping.cleaning import clean_specs, raw_rows_as_dict

D = Decimal

# (spec name, published value, expected Specification values, expected CarModel values, reason fragment or None)
CASES = [
    ("MSRP", "$49,550", {}, {"msrp_usd": 49550}, None),
    ("MSRP", "Starting at $1,049,550", {}, {"msrp_usd": 1049550}, None),
    ("MSRP", "$49,550 - $60,100", {}, {}, "more than one amount"),
    ("MSRP", "$49,550.50", {}, {}, "not a whole number"),
    ("SAE Net Horsepower @ RPM", "290 @ 6200", {"horsepower": 290, "horsepower_rpm": 6200}, {}, None),
    ("SAE Net Horsepower @ RPM", "1,020 @ 7,500", {"horsepower": 1020, "horsepower_rpm": 7500}, {}, None),
    ("SAE Net Horsepower @ RPM", "201", {"horsepower": 201}, {}, None),
    ("SAE Net Horsepower @ RPM", "about three hundred", {}, {}, "not '<figure> @ <rpm>'"),
    ("SAE Net Torque @ RPM", "258 @ 4800", {"torque_lb_ft": 258, "torque_rpm": 4800}, {}, None),
    ("SAE Net Torque @ RPM", "273 @ 1600-4500", {"torque_lb_ft": 273}, {}, "rpm '1600-4500'"),
    ("Displacement", "3.5L/212", {"displacement_l": D("3.5")}, {}, None),
    ("Displacement", "2.0 L", {"displacement_l": D("2.0")}, {}, None),
    ("Displacement", "1998 cc", {}, {}, "more precision"),
    ("Displacement", "2000 cc", {"displacement_l": D("2.0")}, {}, None),
    ("Displacement", "big", {}, {}, "no litres figure"),
    ("Engine Type", "Gas V6", {"engine_type": "gas", "cylinders": 6, "engine_description": "Gas V6"}, {}, None),
    ("Engine Type", "Electric", {"engine_type": "electric", "engine_description": "Electric"}, {}, None),
    (
        "Engine Type",
        "Gas/Electric I-4",
        {"engine_type": "hybrid", "cylinders": 4, "engine_description": "Gas/Electric I-4"},
        {},
        None,
    ),
    (
        "Engine Type",
        "Regular Unleaded H-4",
        {"engine_type": "gas", "cylinders": 4, "engine_description": "Regular Unleaded H-4"},
        {},
        None,
    ),
    (
        "Engine Type",
        "Diesel Turbo I6",
        {"engine_type": "diesel", "cylinders": 6, "engine_description": "Diesel Turbo I6"},
        {},
        None,
    ),
    ("Engine Type", "Rotary", {"engine_description": "Rotary"}, {}, "unknown engine type"),
    ("Engine Type", "X" * 101, {}, {}, "longer than 100"),
    ("Gas Mileage", "19 mpg City/26 mpg Hwy", {"mpg_city": 19, "mpg_highway": 26}, {}, None),
    ("Gas Mileage", "22 mpg City", {"mpg_city": 22}, {}, None),
    ("Gas Mileage", "121 MPGe City/108 MPGe Hwy", {}, {}, "MPGe"),
    ("Gas Mileage", "lots", {}, {}, "no city or highway"),
    ("Electric Range", "303 mi", {"electric_range_mi": 303}, {}, None),
    ("EPA Electric Range (mi)", "250", {"electric_range_mi": 250}, {}, None),
    ("Electric Range", "480 km", {}, {}, "not a range in miles"),
    ("Drivetrain", "Front Wheel Drive", {"drivetrain": "FWD"}, {}, None),
    ("Drivetrain", "Rear-Wheel Drive", {"drivetrain": "RWD"}, {}, None),
    ("Drivetrain", "All Wheel Drive", {"drivetrain": "AWD"}, {}, None),
    ("Drivetrain", "4x4", {"drivetrain": "4WD"}, {}, None),
    ("Drivetrain", "Four Wheel Drive", {"drivetrain": "4WD"}, {}, None),
    ("Drivetrain", "Hovercraft", {}, {}, "unknown drivetrain"),
    ("Transmission", "8-Speed  Automatic w/OD", {"transmission": "8-Speed Automatic w/OD"}, {}, None),
    ("Transmission", "T" * 101, {}, {}, "longer than 100"),
    ("Passenger Capacity", "5", {"seats": 5}, {}, None),
    ("Passenger Capacity", "5-7", {}, {}, "not a single count"),
    ("Passenger Doors", "4", {"doors": 4}, {}, None),
    ("Body Style", "4dr Car", {}, {"body_style": "sedan"}, None),
    ("Body Style", "Sport Utility", {}, {"body_style": "suv"}, None),
    ("Body Style", "Crew Cab Pickup - Short Bed", {}, {"body_style": "pickup"}, None),
    ("Body Style", "Spaceship", {}, {}, "unknown body style"),
    (
        "EPA Classification",
        "Small Sport Utility Vehicle 4WD",
        {"epa_class": "Small Sport Utility Vehicle 4WD"},
        {},
        None,
    ),
    ("Front Wheel Size (in)", "19 x 8.5", {"front_wheel_size_in": D("19.0")}, {}, None),
    ("Front Wheel Size (in)", "18", {"front_wheel_size_in": D("18.0")}, {}, None),
    ("Width, Max w/o mirrors (in)", "73.0", {"width_in": D("73.0")}, {}, None),
    ("Height, Overall (in)", "56.2", {"height_in": D("56.2")}, {}, None),
    ("Length, Overall (in)", "191.45", {}, {}, "more precision"),
    ("Length, Overall (in)", "191.4 in", {"length_in": D("191.4")}, {}, None),
    ("Frobnicator Index", "7", {}, {}, "unknown spec name"),
    ("Displacement", "N/A", {}, {}, None),  # a placeholder sets nothing and is not an error
    ("MSRP", "-TBD-", {}, {}, None),
]


@pytest.mark.parametrize(("name", "value", "values", "car_model_values", "reason"), CASES)
def test_cleaning_rule(name, value, values, car_model_values, reason):
    result = clean_specs([(name, value)])
    assert result.values == values
    assert result.car_model_values == car_model_values
    if reason is None:
        assert result.unparsed == []
    else:
        assert len(result.unparsed) == 1
        reported_name, reported_value, reported_reason = result.unparsed[0]
        assert (reported_name, reported_value) == (name, " ".join(value.split()))
        assert reason in reported_reason


def test_model_names_and_figures_are_never_truncated():
    # The original cut horsepower to three characters and "ID.4" to "ID".
    result = clean_specs([("SAE Net Horsepower @ RPM", "1,020 @ 7500"), ("Transmission", "10-Speed Automatic")])
    assert result.values["horsepower"] == 1020
    assert result.values["transmission"] == "10-Speed Automatic"


def test_conflicting_rows_keep_the_first_and_report_the_second():
    result = clean_specs([("Passenger Doors", "4"), ("Doors", "2")])
    assert result.values == {"doors": 4}
    assert result.unparsed == [("Doors", "2", "conflicts with an earlier doors of 4; first kept")]


def test_raw_rows_keep_repeated_names():
    raw = raw_rows_as_dict([("Engine Type", "Gas V6"), ("Engine Type", "Gas V8"), ("Doors", " 4 ")])
    assert raw == {"Engine Type": "Gas V6", "Engine Type (2)": "Gas V8", "Doors": "4"}
