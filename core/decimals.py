"""What a DecimalField column can hold, derived from its max_digits and decimal_places."""

from __future__ import annotations

from decimal import Context, Decimal

from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator

from core.types import DecimalSpec


def decimal_step(spec: DecimalSpec) -> Decimal:
    """The smallest positive value the column stores."""
    return Decimal(1).scaleb(-spec["decimal_places"])


def decimal_limit(spec: DecimalSpec) -> Decimal:
    """The first magnitude the column cannot store (10 ** its integer digits)."""
    return Decimal(1).scaleb(spec["max_digits"] - spec["decimal_places"])


def decimal_fit(value: Decimal, spec: DecimalSpec) -> Decimal | None:
    """``value`` rounded to the column's places, or None when the column cannot hold it.

    Values are rounded here, before they are written, so what is compared and sized is what
    is stored: SQLite would keep a too-large value and fail every later read of the row,
    PostgreSQL would refuse the insert.
    """
    if not value.is_finite() or value.adjusted() >= spec["max_digits"] - spec["decimal_places"]:
        return None  # checked first: quantizing 10**400 would need 400 digits of precision
    # One digit more than the column: rounding 999…9.9999 up carries into a new digit.
    rounded = value.quantize(decimal_step(spec), context=Context(prec=spec["max_digits"] + 1))
    try:
        DecimalValidator(spec["max_digits"], spec["decimal_places"])(rounded)
    except ValidationError:
        return None
    return rounded
