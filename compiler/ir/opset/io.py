"""Graph inputs: the images and the per-sample modality vector."""
from __future__ import annotations

from ..spec import F32, I32, Attr, OpSpec, declare

NAMES = {"x": F32, "modality": I32}


def _check(n, ins, modal):
    name = n.attrs["name"]
    if name not in NAMES:
        return f"input name {name!r}: expected one of {', '.join(NAMES)}"
    if name == "modality" and len(n.shape) != 1:
        return f"the modality vector is (N,), not {n.shape}"
    return None


def _reference(values, n):
    raise TypeError("graph inputs are fed, not computed")


INPUT = declare(OpSpec(
    "input", "A graph input: `x`, the images (N, C, H, W) float32, or `modality`, the (N,) int32 "
             "vector of modality codes (compiler/base/modes.py).",
    _reference, inputs=(), attrs={"name": Attr("str", "x or modality")},
    out_dtype=lambda attrs: NAMES.get(attrs["name"], F32), shape=None, check=_check))
