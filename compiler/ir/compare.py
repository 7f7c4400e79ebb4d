"""Structural comparison of two graphs, as TVM's `assert_structural_equal`: node ids may differ
(matched by walking both graphs from their outputs along inputs); ops, dtypes, shapes,
placements, attributes and sources (where the expected graph names one) must agree. An
expected constant given by shape only (`Shape`) matches any array of that shape and dtype."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph
from .parse import parse


@dataclass(frozen=True)
class Shape:
    """A constant of the expected IR written by shape and dtype only."""
    shape: tuple
    dtype: str


def _same(a, b, rtol: float) -> bool:
    if isinstance(b, Shape):
        return isinstance(a, np.ndarray) and a.shape == b.shape and str(a.dtype) == b.dtype
    if isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and a.shape == b.shape and a.dtype == b.dtype
                and np.allclose(a, b, rtol=rtol, atol=rtol * 1e-2, equal_nan=False))
    if hasattr(b, "items"):
        return hasattr(a, "items") and set(a) == set(b) and all(_same(a[k], b[k], rtol) for k in b)
    if isinstance(b, tuple):
        return isinstance(a, tuple) and len(a) == len(b) and all(_same(x, y, rtol) for x, y in zip(a, b))
    return a == b


def _describe(v) -> str:
    from .dump import fmt_value
    return f"<{'x'.join(map(str, v.shape))} {v.dtype}>" if isinstance(v, Shape) else fmt_value(v, inline=16)


def ir_diff(actual: Graph, expected: Graph, rtol: float = 1e-6) -> str | None:
    """None when the graphs agree, else the first difference, naming both nodes."""
    if len(actual.outputs) != len(expected.outputs):
        return f"{len(actual.outputs)} outputs, expected {len(expected.outputs)}"
    seen: dict[str, str] = {}   # expected id -> actual id
    stack = list(zip(actual.outputs, expected.outputs))
    while stack:
        a_id, e_id = stack.pop()
        if e_id in seen:
            if seen[e_id] != a_id:
                return f"%{e_id} is matched by both %{seen[e_id]} and %{a_id}"
            continue
        seen[e_id] = a_id
        a, e = actual[a_id], expected[e_id]
        where = f"%{a_id} (expected %{e_id})"
        for field in ("op", "dtype", "shape", "modality"):
            if getattr(a, field) != getattr(e, field):
                return f"{where}: {field} {getattr(a, field)}, expected {getattr(e, field)}"
        if e.source and a.source != e.source:
            return f"{where}: source {a.source!r}, expected {e.source!r}"
        if set(a.attrs) != set(e.attrs):
            return f"{where}: attributes {sorted(a.attrs)}, expected {sorted(e.attrs)}"
        for k in sorted(e.attrs):
            if not _same(a.attrs[k], e.attrs[k], rtol):
                return f"{where}: {k}={_describe(a.attrs[k])}, expected {_describe(e.attrs[k])}"
        if len(a.inputs) != len(e.inputs):
            return f"{where}: {len(a.inputs)} inputs, expected {len(e.inputs)}"
        stack.extend(zip(a.inputs, e.inputs))
    if len(actual) != len(expected):
        extra = sorted(set(actual.node_ids()) - set(seen.values()))
        return f"{len(actual)} nodes, expected {len(expected)}; not reached from the outputs: {extra}"
    return None


def parse_expected(text: str) -> Graph:
    """The expected IR of a test: constants written by shape only match by shape and dtype."""
    return parse(text, placeholder=lambda nid, attr, shape, dtype: Shape(shape, dtype))


def assert_ir(actual: Graph, expected_text: str, rtol: float = 1e-6) -> None:
    diff = ir_diff(actual, parse_expected(expected_text), rtol)
    if diff:
        from .dump import dump
        raise AssertionError(f"{diff}\n--- actual IR:\n{dump(actual)}")
