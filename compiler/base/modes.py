"""reidc's modality vocabulary, defined once: the two modalities and their codes, the run modes
an artifact has entries for, and where a node's constants come from (`Placement`).

All three are `StrEnum`s: a member equals, prints and serialises (JSON, manifests) as its
value, so "visible" read from a manifest or a command line and `Modality.VISIBLE` are the same.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Iterable

from .errors import InputError


class Modality(StrEnum):
    """A sample's modality. Its code is what the `modality` input vector holds."""

    VISIBLE = "visible"
    INFRARED = "infrared"

    @property
    def code(self) -> int:
        return CODES[self]

    @classmethod
    def from_code(cls, code: int) -> "Modality":
        for m, c in CODES.items():
            if c == int(code):
                return m
        raise ValueError(f"modality code {code!r}: expected {', '.join(f'{c} ({m})' for m, c in CODES.items())}")


#: the integer codes of the `modality` input: 0 visible, 1 infrared (CM-NAS's RGB / thermal order)
CODES = {Modality.VISIBLE: 0, Modality.INFRARED: 1}


class RunMode(StrEnum):
    """An entry of a compiled model: a batch of one modality, a mixed batch with a per-sample
    modality vector, or `main`, the one entry of a modality-agnostic program (.pt2)."""

    VISIBLE = "visible"
    INFRARED = "infrared"
    MIXED = "mixed"
    MAIN = "main"

    @property
    def modality(self) -> Modality | None:
        """The one modality a batch of this mode holds; None for mixed and main."""
        return Modality(self.value) if self.value in Modality.__members__.values() else None

    @classmethod
    def parse(cls, text, allowed: Iterable["RunMode"] | None = None, what: str = "mode") -> "RunMode":
        """The run mode `text` names, or one InputError (a ValueError) naming it and the choices."""
        choices = tuple(allowed) if allowed is not None else tuple(cls)
        try:
            mode = cls(text)
        except ValueError:
            mode = None
        if mode not in choices:
            raise InputError(f"unknown {what} {text!r}; expected one of {', '.join(choices)}")
        return mode


#: the entries a CM-NAS or BiRe-ID model compiles to (a .pt2 has `main` only)
MODEL_MODES = (RunMode.VISIBLE, RunMode.INFRARED, RunMode.MIXED)


class Placement(StrEnum):
    """Where a node's constants come from: `shared` (one set for both modalities), `split` (one
    per modality, picked per sample by the modality input), one modality's own set after
    specialisation, or `any` for ops without modality-dependent constants."""

    ANY = "any"
    SHARED = "shared"
    SPLIT = "split"
    VISIBLE = "visible"
    INFRARED = "infrared"
