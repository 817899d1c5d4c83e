"""Field rules and pseudonyms, value by value."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from hub.domain.errors import PolicyError
from hub.policy import PseudonymKeys, Retention
from hub.policy.loader import parse_retention
from hub.policy.transform import generalise, mask


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("07700900123", "*********23"),
        ("AB", "**"),
        ("", ""),
        ("a long free-text note that says far too much", "[withheld]"),
    ],
)
def test_mask(value: str, expected: str) -> None:
    assert mask(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (dt.date(2015, 3, 17), dt.date(2015, 3, 1)),
        (dt.datetime(2015, 3, 17, 9, 30, tzinfo=dt.UTC), dt.datetime(2015, 3, 1, tzinfo=dt.UTC)),
        (
            dt.datetime(2015, 4, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            dt.datetime(2015, 3, 1, tzinfo=dt.UTC),
        ),
        (47, 40),
        (-3, -10),
        (12.6, 13.0),
        (decimal.Decimal("48211.50"), decimal.Decimal("48000.00")),
        ("24", "20-29"),
        ("L32 7XY", "L32"),
        ("m1 1ae", "M1"),
        ("Kirkby", "[generalised]"),
    ],
)
def test_generalise(value: object, expected: object) -> None:
    assert generalise(value) == expected


def test_booleans_are_not_generalised() -> None:
    with pytest.raises(PolicyError):
        generalise(True)


def test_pseudonyms_are_stable_per_audience_and_differ_between_audiences() -> None:
    keys = PseudonymKeys(b"0123456789abcdef")
    again = PseudonymKeys(b"0123456789abcdef")
    other = PseudonymKeys(b"fedcba9876543210")
    p = keys.pseudonym("mals", "hs-1")
    assert p == again.pseudonym("mals", "hs-1")
    assert len(p) == 64 and int(p, 16) >= 0
    assert p != keys.pseudonym("ljmu", "hs-1")
    assert p != keys.pseudonym("mals", "hs-2")
    assert p != other.pseudonym("mals", "hs-1")
    assert keys.value("mals", "hs-1") != p  # field pseudonyms are a separate domain


def test_a_short_master_secret_is_refused() -> None:
    with pytest.raises(PolicyError):
        PseudonymKeys(b"short")


@pytest.mark.parametrize(
    ("text", "start", "until"),
    [
        ("P2Y", dt.date(2016, 2, 29), dt.date(2018, 2, 28)),
        ("P6M", dt.date(2015, 8, 31), dt.date(2016, 2, 29)),
        ("P1Y6M10D", dt.date(2015, 1, 1), dt.date(2016, 7, 11)),
        (30, dt.date(2015, 1, 1), dt.date(2015, 1, 31)),
    ],
)
def test_retention(text: object, start: dt.date, until: dt.date) -> None:
    retention = parse_retention(text)
    assert isinstance(retention, Retention)
    assert retention.until(start) == until


def test_bad_retention() -> None:
    with pytest.raises(PolicyError, match="bad retention"):
        parse_retention("two years")
