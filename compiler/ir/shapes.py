"""Output shapes of IR ops (batch dimension symbolic as "N"), from each op's declared rule."""
from __future__ import annotations

from .spec import spec_of


def infer(op, ins: list[tuple], attrs: dict) -> tuple:
    rule = spec_of(op).shape
    if rule is None:
        raise ValueError(f"{op} has no shape rule: its shape is given")
    return tuple(rule([tuple(s) for s in ins], attrs))
