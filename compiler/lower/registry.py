"""Lowering registered per op: `@lowers(Op.X)` marks the function that turns one IR node into
Relax. Each gets the `Lowerer` (compiler/lower/to_relax.py: emit, constants, per-channel
tables, the layout of every value), the node id, the node and its inputs' Relax values, and
returns the node's value and its channel block (`Lowered`). The functions live in
compiler/lower/ops/, one file per family of ops, mirroring compiler/ir/opset/."""
from __future__ import annotations

from typing import Callable, NamedTuple

from reidc.compiler.ir import Op


class LoweringError(ValueError):
    pass


class Lowered(NamedTuple):
    value: object   # relax.Expr
    block: int      # channel block of a 4-D value in NCHW{block}c; 0 for 2-D; -1 for packed bits


LOWERINGS: dict[Op, Callable] = {}


def lowers(op: Op):
    def register(fn):
        if op in LOWERINGS:
            raise ValueError(f"two lowerings for {op}")
        LOWERINGS[op] = fn
        return fn
    return register
