"""Range and choice checks for the params dataclasses' validate() methods: each failure names the key."""
from __future__ import annotations

from typing import Any

from tinygpt.core.errors import ParamsError

DEVICES = ("auto", "cpu", "cuda", "mps")  # as tinygpt.core.device resolves them (which imports torch)
PRECISIONS = ("auto", "fp32", "bf16")


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def positive(key: str, value: float) -> None:
    require(value > 0, key, "a number > 0", value)


def non_negative(key: str, value: float) -> None:
    require(value >= 0, key, "a number >= 0", value)


def fraction(key: str, value: float) -> None:
    """Strictly inside (0, 1)."""
    require(0 < value < 1, key, "a fraction strictly between 0 and 1", value)


def unit_interval(key: str, value: float) -> None:
    """Inside [0, 1]."""
    require(0 <= value <= 1, key, "a number in [0, 1]", value)


def one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    require(value in choices, key, "one of " + ", ".join(choices), value)
