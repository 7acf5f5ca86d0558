"""Option values: coercers for ``usage.Options`` rows whose errors name the option."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def number(
    kind: type[Number], name: str, low: float | None = None, high: float | None = None
) -> Callable[[str], Number]:
    """A coercer to ``kind`` whose error names ``--name`` (usage's generic message does not),
    checking ``low <= value <= high`` when they are given."""

    def coerce(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            noun = "a whole number" if kind is int else "a number"
            raise ValueError(f"--{name} takes {noun}, got {text!r}") from None
        if low is not None and high is not None and not low <= value <= high:
            raise ValueError(f"--{name} must be between {low} and {high}, got {value}")
        return value

    return coerce
