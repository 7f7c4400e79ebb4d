"""The IR verifier: run after every pass in tests and by `reidc compile --dump-ir`.

What is checked comes from each op's spec (compiler/ir/spec.py): arity, attributes, input and
output dtypes, the shape rule and the op's own check; plus what holds for every graph
(acyclic, outputs exist, edges agree with inputs, finite constants)."""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .spec import I32, spec_of


class IRError(ValueError):
    pass


def _fail(nid, node, msg):
    src = f" ({node.source})" if node.source else ""
    raise IRError(f"IR node {nid!r} [{node.op}]{src}: {msg}")


_ARRAY_KINDS = "fiub"   # numeric constants (bool for flags)
_MIN = {"stride": 1, "kernel": 1, "padding": 0}


def _kind_error(kind: str, key: str, v) -> str | None:
    """What is wrong with attribute `key` of the given kind (compiler/ir/spec.py: Attr), or None."""
    if kind == "array":
        ok = isinstance(v, np.ndarray) and v.dtype.kind in _ARRAY_KINDS
        return None if ok else f"attribute {key!r} must be a numeric array, is {type(v).__name__}"
    if kind == "pair":
        lo = _MIN.get(key, 0)
        ok = (isinstance(v, tuple) and len(v) == 2 and all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                                                            and d >= lo for d in v))
        return None if ok else f"attribute {key!r} must be two integers >= {lo}, is {v!r}"
    if kind == "float":
        ok = isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) and np.isfinite(v)
        return None if ok else f"attribute {key!r} must be a finite number, is {v!r}"
    if kind == "str":
        return None if isinstance(v, str) else f"attribute {key!r} must be a string, is {v!r}"
    if kind == "bool":
        return None if isinstance(v, (bool, np.bool_)) else f"attribute {key!r} must be True or False, is {v!r}"
    if kind == "params":
        return None if hasattr(v, "items") else f"attribute {key!r} must map placements to statistics"
    return f"attribute {key!r} has an unknown kind {kind!r}"


def _check_node(g: Graph, nid: str, n) -> None:
    spec = spec_of(n.op)
    ins = [g[i] for i in n.inputs]
    if set(g.producers(nid)) != set(n.inputs):
        _fail(nid, n, "edges disagree with the node's inputs")
    arity = len(spec.inputs)
    modal = spec.modal and len(ins) == arity + 1
    if len(ins) != arity and not modal:
        want = f"{arity}" + (f" or {arity + 1} (with the modality vector)" if spec.modal else "")
        _fail(nid, n, f"has {len(ins)} inputs, expected {want}")
    if modal and (ins[-1].dtype != I32 or len(ins[-1].shape) != 1):
        _fail(nid, n, "last input must be the int32 modality vector (N,)")
    missing = [k for k, a in spec.attrs.items() if a.required and k not in n.attrs]
    unknown = [k for k in n.attrs if k not in spec.attrs]
    if missing or unknown:
        _fail(nid, n, f"attributes: missing {missing}, unknown {unknown}" if missing and unknown else
              f"missing attribute {missing[0]!r}" if missing else f"unknown attribute {unknown[0]!r}")
    for k, a in spec.attrs.items():
        if k in n.attrs:
            bad = _kind_error(a.kind, k, n.attrs[k])
            if bad:
                _fail(nid, n, bad)
    if ins and ins[0].dtype not in spec.in_dtypes:
        _fail(nid, n, f"data input has dtype {ins[0].dtype}, expected {' or '.join(spec.in_dtypes)}")
    want_dtype = spec.out_dtype(n.attrs)
    if n.dtype != want_dtype:
        _fail(nid, n, f"output dtype {n.dtype}, expected {want_dtype}")
    bad = spec.check(n, ins, modal) if spec.check else None
    if bad:
        _fail(nid, n, bad)
    if spec.shape is not None:
        try:
            want = tuple(spec.shape([t.shape for t in ins], n.attrs))
        except (TypeError, ValueError, IndexError, KeyError, ZeroDivisionError) as e:
            _fail(nid, n, f"cannot infer its shape from inputs {[t.shape for t in ins]}: {e}")
        if n.shape != want:
            _fail(nid, n, f"shape {n.shape} but {n.op} of {ins[0].shape} gives {want}")
    for k, v in n.attrs.items():
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all():
            _fail(nid, n, f"constant {k!r} holds NaN or Inf")


def verify(g: Graph) -> Graph:
    """Check acyclicity, arities, attributes, shapes, dtypes and modality tags; return g."""
    if not g.is_acyclic():
        raise IRError(f"graph {g.name!r} has a cycle")
    if not g.outputs:
        raise IRError(f"graph {g.name!r} has no outputs")
    for o in g.outputs:
        if o not in g:
            raise IRError(f"output {o!r} is not a node")
    for nid, n in g.items():
        _check_node(g, nid, n)
    return g
