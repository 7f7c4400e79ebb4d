"""Read the text form of `dump` back into a Graph, so pass tests can be written as the IR they
start from and the IR they expect (as TVM's transform tests and LCE's CHECK lines are).

Constants written by value (`<2 float32: 0.5 -1>`) are exact. A constant written by shape only
(`<64x3x3x3 float32>`) has no values in the text: `placeholder(node id, attribute, shape,
dtype)` supplies them (by default seeded random floats in [0.5, 1.5), positive so that a
variance is one, and ones for integers)."""
from __future__ import annotations

import ast
import re
import zlib
from typing import Callable

import numpy as np

from .graph import Graph
from .node import Node

_NODE = re.compile(r"%(?P<id>[^:\s]+): (?P<dtype>\w+)\[(?P<shape>[^\]]*)\] = (?P<op>\w+)(?: @(?P<mod>\w+))?"
                   r"\((?P<ins>[^)]*)\)(?: \{(?P<attrs>.*)\})?")
_ARRAY = re.compile(r"<(?P<shape>[\dx]*|scalar) (?P<dtype>\w+)(?:: (?P<values>[^>]*))?>")
_KEY = re.compile(r"([{,]\s*)([A-Za-z_]\w*)(\s*:)")


class ParseError(ValueError):
    pass


def default_placeholder(nid: str, attr: str, shape: tuple, dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind != "f":
        return np.ones(shape, dtype)
    rng = np.random.default_rng(zlib.crc32(f"{nid}.{attr}".encode()))
    return rng.uniform(0.5, 1.5, shape).astype(dtype)


def _shape(text: str) -> tuple:
    return tuple(d if d == "N" else int(d) for d in text.split("x")) if text else ()


def _value(node: ast.AST, arrays: list, where: str):
    """A literal, or one of the arrays the text named (as `__array__(k)`)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand, arrays, where)
    if isinstance(node, ast.Tuple):
        return tuple(_value(e, arrays, where) for e in node.elts)
    if isinstance(node, ast.Dict):
        return {_value(k, arrays, where): _value(v, arrays, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__array__":
        return arrays[node.args[0].value]
    raise ParseError(f"{where}: cannot read {ast.unparse(node)!r}")


def parse_attrs(text: str, nid: str, placeholder: Callable = default_placeholder) -> dict:
    arrays: list = []

    def array(m: re.Match) -> str:
        shape = () if m["shape"] == "scalar" else _shape(m["shape"])
        if m["values"] is not None:
            arrays.append(np.array(m["values"].split(), dtype=m["dtype"]).reshape(shape))
        else:
            arrays.append(None)  # filled below, once the attribute's name is known
        shapes.append((shape, m["dtype"]))
        return f"__array__({len(arrays) - 1})"

    shapes: list = []
    src = _KEY.sub(lambda m: f"{m[1]}{m[2]!r}{m[3]}", _ARRAY.sub(array, text))
    try:
        call = ast.parse(f"f({src})", mode="eval").body
    except SyntaxError as e:
        raise ParseError(f"%{nid}: attributes {text!r}: {e.msg}") from None
    out = {}
    for kw in call.keywords:
        used = [int(c.args[0].value) for c in ast.walk(kw.value)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "__array__"]
        for k in used:
            if arrays[k] is None:
                arrays[k] = placeholder(nid, kw.arg, *shapes[k])
        out[kw.arg] = _value(kw.value, arrays, f"%{nid}.{kw.arg}")
    return out


def parse(text: str, placeholder: Callable = default_placeholder) -> Graph:
    """The Graph a `dump` describes; raises ParseError naming the line it cannot read."""
    g, outputs = None, None
    for k, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#") or line == "}":
            continue
        if line.startswith("graph "):
            g = Graph(line[len("graph "):].rstrip("{ ").strip())
            continue
        if line.startswith("return"):
            outputs = [o.strip().lstrip("%") for o in line[len("return"):].split(",") if o.strip()]
            continue
        body, _, src = line.partition("  # ")   # the source comment: everything after the first "  # "
        m = _NODE.fullmatch(body)
        if m is None or g is None:
            raise ParseError(f"line {k}: not a node of the IR text form: {line!r}")
        attrs = parse_attrs(m["attrs"], m["id"], placeholder) if m["attrs"] else {}
        ins = tuple(i.strip().lstrip("%") for i in m["ins"].split(",") if i.strip())
        try:
            g.add(m["id"], Node(m["op"], ins, _shape(m["shape"]), m["dtype"], attrs, src,
                                m["mod"] or "any"), order=len(g))
        except (KeyError, ValueError) as e:
            raise ParseError(f"line {k}: {e}") from None
    if g is None or outputs is None:
        raise ParseError("no `graph NAME {` ... `return %...` in the text")
    g.outputs = outputs
    return g
