"""Validation shared by the options dataclasses (training, loss and evaluation arguments)."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(flag: str, value: str, choices: Iterable[str]) -> None:
    """Raise ``ValueError`` naming ``flag`` when ``value`` is not one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{flag} must be one of {', '.join(choices)}; got {value!r}.")
