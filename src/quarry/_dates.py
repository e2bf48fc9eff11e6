"""Reading a date from what users and files give: a date, a datetime or ISO text."""

from __future__ import annotations

from datetime import date, datetime

__all__ = ["to_date"]


def to_date(value: object) -> date | None:
    """The date ``value`` names (a datetime's date; ``YYYY-MM-DD`` text), or None if it names
    none, so that each caller can say in its own words what it expected."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None
