"""Immutable IR nodes. Constants (weights, BN statistics) live in attrs as read-only numpy arrays."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from reidc.compiler.base.modes import Placement
from .ops import Op


def const(a) -> np.ndarray:
    """A read-only float32 (or int) numpy copy, safe to share between graphs."""
    arr = np.array(a, dtype=np.float32 if np.asarray(a).dtype.kind == "f" else None, copy=True)
    arr.setflags(write=False)
    return arr


def _freeze(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.flags.writeable:
            v = v.copy()
            v.setflags(write=False)
        return v
    if isinstance(v, dict):
        return MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


@dataclass(frozen=True, eq=False)
class Node:
    """One op application. Never mutated: passes build replacements with `with_`."""

    op: Op
    inputs: tuple[str, ...]
    shape: tuple
    dtype: str = "float32"
    attrs: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""       # module path in the PyTorch model, for error messages and dumps
    modality: Placement = Placement.ANY  # where its constants come from (compiler/base/modes.py)

    def __post_init__(self):
        object.__setattr__(self, "op", Op(self.op))
        object.__setattr__(self, "modality", Placement(self.modality))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "shape", tuple(self.shape))
        object.__setattr__(self, "attrs", _freeze(dict(self.attrs)))

    def with_(self, **changes) -> "Node":
        if "attrs" in changes:
            changes["attrs"] = dict(changes["attrs"])
        return replace(self, **changes)

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)
