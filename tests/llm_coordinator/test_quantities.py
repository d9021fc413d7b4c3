"""Quantities with units in work orders (llm_coordinator.quantities)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llm_coordinator.quantities import (
    Quantity,
    QuantityError,
    check_range,
    describe_conversion,
    find_quantities,
    parse_quantity,
)


def _pairs(text: str) -> list[tuple[float, str]]:
    return [(q.value, q.unit) for q in find_quantities(text)]


def test_digits_and_spans_refer_to_the_original_text() -> None:
    text = "Fill 5 l, then add 500 ml."
    found = find_quantities(text)
    assert [(q.value, q.unit, q.text) for q in found] == [(5, "l", "5 l"), (500, "ml", "500 ml")]
    for q in found:
        assert text[q.start : q.end] == q.text


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("0,5 l", 0.5, "l"),
        ("0.5 l", 0.5, "l"),
        ("2,5 kg", 2.5, "kg"),
        ("2.5 kg", 2.5, "kg"),
        ("1.5e3 ml", 1500, "ml"),
        ("5L", 5, "L"),
        ("2.5kg", 2.5, "kg"),
        ("1,500 ml", 1500, "ml"),
        ("-5 °C", -5, "°C"),
    ],
)
def test_decimals_with_comma_and_dot(text: str, value: float, unit: str) -> None:
    [q] = find_quantities(text)
    assert q.value == pytest.approx(value)
    assert q.unit == unit
    assert q.text == text


def test_number_words_in_english() -> None:
    text = "Mix three parts with twenty-five litres of water"
    found = find_quantities(text)
    assert [(q.value, q.unit, q.text) for q in found] == [(3, "", "three"), (25, "litres", "twenty-five litres")]
    assert all(text[q.start : q.end] == q.text for q in found)


def test_number_words_in_french() -> None:
    found = find_quantities("Verser cinq litres puis vingt-cinq ml")
    assert [(q.value, q.unit, q.text) for q in found] == [(5, "litres", "cinq litres"), (25, "ml", "vingt-cinq ml")]


def test_dozen_and_pair() -> None:
    assert _pairs("a dozen bolts, two dozen nuts, a pair of gloves, three pairs") == [
        (12, ""),
        (24, ""),
        (2, ""),
        (6, ""),
    ]
    [q] = find_quantities("une douzaine de vis")
    assert (q.value, q.text) == (12, "une douzaine")


def test_half_a_dozen_is_six() -> None:
    assert [(q.value, q.text) for q in find_quantities("Machine half a dozen blanks, program 15")] == [
        (6, "half a dozen"),
        (15, "15"),
    ]
    assert [(q.value, q.text) for q in find_quantities("une demi-douzaine de vis")] == [(6, "une demi-douzaine")]
    assert [(q.value, q.text) for q in find_quantities("ein halbes Dutzend Teile")] == [(6, "ein halbes Dutzend")]
    assert parse_quantity("half a dozen").value == 6


def test_a_count_of_times_in_one_word() -> None:
    assert _pairs("Prime the doser twice") == [(2, "")]
    assert _pairs("Prime the doser twice, then home the arm") == [(2, "")]
    assert parse_quantity("thrice").value == 3
    # Only where it ends a clause: otherwise it is no count of times.
    assert _pairs("Fill the bottle twice as fast") == []
    assert _pairs("Dose twice the usual volume") == []
    assert _pairs("Seal the twice-filtered product") == []
    # "Once" is as often "as soon as": never a count of its own.
    assert _pairs("Run it once") == []


def test_a_number_word_of_another_language_does_not_make_the_order_that_language() -> None:
    # "once" is eleven in Spanish; the English function words around it say which language this is.
    assert _pairs("Once the door is shut, home the arm") == []
    assert _pairs("Machine a blank once") == []
    # A unit after a number is no function word ("l" is one in English lists).
    assert _pairs("Drei Flaschen à 0,5 l füllen") == [(3, ""), (0.5, "l")]
    assert _pairs("Llenar dos botellas") == [(2, "")]
    assert [(q.value, q.text) for q in find_quantities("Remplir et sceller quatre bouteilles")] == [(4, "quatre")]


@pytest.mark.parametrize(
    "unit",
    ["l", "ml", "mm", "kg", "s", "min", "rpm", "°C", "bar", "m/s", "litres", "liters", "Litres", "seconds", "%"],
)
def test_units_and_plurals(unit: str) -> None:
    assert _pairs(f"set it to 7 {unit} now") == [(7, unit)]


def test_words_that_are_not_units_leave_a_bare_count() -> None:
    assert _pairs("pack 4 boxes with 3 parts in 2 are") == [(4, ""), (3, ""), (2, "")]


def test_identifiers_and_ordinals_are_not_quantities() -> None:
    assert _pairs("cnc_1 hands to ur5e, see plan27 and cell-2") == []
    assert _pairs("run program 7") == [(7, "")]
    assert _pairs("the first and second robot, the 3rd station, the twenty-fifth box") == []
    assert _pairs("one of them") == []


def test_conversions() -> None:
    assert parse_quantity("500 ml").to("l") == pytest.approx(0.5)
    assert parse_quantity("2 min").to("s") == pytest.approx(120)
    assert parse_quantity("5 Litres").to("ml") == pytest.approx(5000)
    assert parse_quantity("20 °C").to("K") == pytest.approx(293.15)
    assert describe_conversion(parse_quantity("500 ml"), "l") == "500 ml = 0.5 l"
    assert describe_conversion(parse_quantity("5 l"), "l") == "5 l"


def test_dimension_mismatch_and_unknown_unit() -> None:
    with pytest.raises(QuantityError, match=r"5 l.*'kg'.*incompatible dimensions"):
        parse_quantity("5 l").to("kg")
    with pytest.raises(QuantityError, match=r"unknown unit 'blorp'"):
        parse_quantity("5 l").to("blorp")
    with pytest.raises(QuantityError, match=r"unknown unit 'blorps'"):
        parse_quantity("5 blorps")


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [("500 ml", 500, "ml"), ("0.5", 0.5, ""), ("five litres", 5, "litres"), ("one", 1, ""), ("a dozen", 12, "")],
)
def test_parse_quantity(text: str, value: float, unit: str) -> None:
    q = parse_quantity(text)
    assert (q.value, q.unit) == (value, unit)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty"), ("   ", "empty"), ("1 2", "several"), ("nan", "finite"), ("inf ml", "finite"), ("1.2.3", "not a")],
)
def test_parse_quantity_errors(text: str, reason: str) -> None:
    with pytest.raises(QuantityError, match=reason):
        parse_quantity(text)
    assert issubclass(QuantityError, ValueError)


def test_range_errors_name_the_limits() -> None:
    with pytest.raises(QuantityError, match=r"^volume: 7 l is above the maximum 5 l$"):
        check_range(parse_quantity("7 l"), unit="l", min=0.1, max=5, name="volume")
    with pytest.raises(QuantityError, match=r"^volume: 50 ml = 0.05 l is below the minimum 0.1 l$"):
        check_range(parse_quantity("50 ml"), unit="l", min=0.1, max=5, name="volume")
    with pytest.raises(QuantityError, match=r"^volume: .*incompatible dimensions"):
        check_range(parse_quantity("5 kg"), unit="l", min=None, max=None, name="volume")
    assert check_range(parse_quantity("5000 ml"), unit="l", min=0.1, max=5, name="volume") == pytest.approx(5)
    assert check_range(parse_quantity("3"), unit="l", min=0.1, max=5, name="volume") == 3


def test_import_is_cheap() -> None:
    code = "import sys, llm_coordinator.quantities; print('pint' in sys.modules, 'text_to_num' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


_UNITS = ["", "ml", "l", "kg", "mm", "s", "min", "rpm", "bar", "°C", "m/s", "litres"]


@given(
    value=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False),
    unit=st.sampled_from(_UNITS),
)
def test_formatted_value_and_unit_round_trip(value: float, unit: str) -> None:
    text = f"{value!r} {unit}".strip()
    q = parse_quantity(text)
    assert q == Quantity(value, unit, text, 0, len(text))
    if unit:
        assert math.isclose(q.to(unit), value, rel_tol=1e-12, abs_tol=1e-12)
        assert find_quantities(f"take {text} now") == [Quantity(value, unit, text, 5, 5 + len(text))]


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("Zero the check-weigher", []),  # a verb: "zero" before an article
        ("Remettre à zéro la balance", []),
        ("Fill zero bottles", [0.0]),  # a count, refused later as no count of at least 1
        ("Set the speed to zero", [0.0]),
        ("0 the scale", [0.0]),  # digits are always a number
        ("Machine zero parts", [0.0]),  # (found by a review: "part" is on the stop-word list)
        ("Machine one blank with program zero on the CNC", [0.0]),
    ],
)
def test_zero_before_an_article_is_a_verb(text: str, values: list[float]) -> None:
    assert [q.value for q in find_quantities(text)] == values
