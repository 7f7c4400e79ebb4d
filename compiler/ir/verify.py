"""The IR verifier: run after every pass in tests and by `reidc compile --dump-ir`."""
from __future__ import annotations

import networkx as nx
import numpy as np

from .graph import Graph
from .ops import BITS, Op


class IRError(ValueError):
    pass


def _fail(nid, node, msg):
    src = f" ({node.source})" if node.source else ""
    raise IRError(f"IR node {nid!r} [{node.op}]{src}: {msg}")


def _channels(shape):
    return shape[1]


def verify(g: Graph) -> Graph:
    """Check acyclicity, arities, shapes, dtypes and modality tags; return g."""
    if not nx.is_directed_acyclic_graph(g.g):
        raise IRError(f"graph {g.name!r} has a cycle")
    if not g.outputs:
        raise IRError(f"graph {g.name!r} has no outputs")
    for o in g.outputs:
        if o not in g:
            raise IRError(f"output {o!r} is not a node")
    for nid, n in g.items():
        ins = [g[i] for i in n.inputs]
        if list(g.g.predecessors(nid)) and set(g.g.predecessors(nid)) != set(n.inputs):
            _fail(nid, n, "edges disagree with the node's inputs")
        if n.op == Op.INPUT:
            if ins:
                _fail(nid, n, "an input has no inputs")
            continue
        if not ins:
            _fail(nid, n, "has no inputs")
        x = ins[0]
        want_in = {Op.BCONV2D: (BITS,), Op.BITPACK: ("float32", "int32")}.get(n.op, ("float32",))
        if x.dtype not in want_in:
            _fail(nid, n, f"data input has dtype {x.dtype}, expected {' or '.join(want_in)}")
        want_out = BITS if n.op == Op.BITPACK else ("int32" if n.attr("accumulator") else "float32")
        if n.dtype != want_out:
            _fail(nid, n, f"output dtype {n.dtype}, expected {want_out}")
        modal = len(ins) > 1 and n.op != Op.ADD
        if modal and (ins[1].dtype != "int32" or len(ins[1].shape) != 1):
            _fail(nid, n, "second input must be the int32 modality vector (N,)")
        if n.op == Op.CONV2D:
            w = n.attrs["weight"]
            per_mod = w.ndim == 5
            if per_mod != modal:
                _fail(nid, n, "per-modality weights need the modality input, and only they do")
            o, i, kh, kw = w.shape[-4:]
            if per_mod and w.shape[0] != 2:
                _fail(nid, n, f"per-modality weight must stack 2 modalities, has {w.shape[0]}")
            if i != _channels(x.shape):
                _fail(nid, n, f"weight expects {i} input channels, input has {_channels(x.shape)}")
            (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
            want = (x.shape[0], o, (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1)
            if n.shape != want:
                _fail(nid, n, f"shape {n.shape} but conv of {x.shape} gives {want}")
            b = n.attr("bias")
            if b is not None and b.shape != w.shape[:-4][:1] + (o,) and b.shape != (o,):
                _fail(nid, n, f"bias shape {b.shape} does not fit {o} channels")
        elif n.op == Op.BATCH_NORM:
            params = n.attrs["params"]
            want_keys = {"shared"} if n.modality == "shared" else {"visible", "infrared"}
            if set(params) != want_keys:
                _fail(nid, n, f"modality {n.modality!r} needs params {sorted(want_keys)}, has {sorted(params)}")
            if (n.modality == "split") != modal:
                _fail(nid, n, "a split BN needs the modality input, and only it does")
            for k, p in params.items():
                if len(p) != 4 or any(a.shape != (_channels(x.shape),) for a in p):
                    _fail(nid, n, f"{k} statistics must be 4 vectors of {_channels(x.shape)}")
            if n.shape != x.shape:
                _fail(nid, n, "shape must equal the input's")
        elif n.op == Op.AFFINE:
            c = _channels(x.shape)
            want = (2, c) if modal else (c,)
            for k in ("scale", "bias"):
                if n.attrs[k].shape != want:
                    _fail(nid, n, f"{k} has shape {n.attrs[k].shape}, expected {want}")
            if n.shape != x.shape:
                _fail(nid, n, "shape must equal the input's")
        elif n.op in (Op.RELU, Op.SIGN):
            if n.shape != x.shape:
                _fail(nid, n, "shape must equal the input's")
        elif n.op == Op.PRELU:
            if n.shape != x.shape or n.attrs["slope"].shape != (_channels(x.shape),):
                _fail(nid, n, f"slope {n.attrs['slope'].shape} does not fit {x.shape}")
        elif n.op == Op.AVGPOOL2D:
            k, s = n.attrs["kernel"], n.attrs["stride"]
            want = x.shape[:2] + tuple((x.shape[2 + d] - k[d]) // s[d] + 1 for d in (0, 1))
            if n.shape != want:
                _fail(nid, n, f"shape {n.shape} but pooling {x.shape} gives {want}")
        elif n.op == Op.BITPACK:
            c = _channels(x.shape)
            want = (2, c) if modal else (c,)
            if n.shape != x.shape or len(x.shape) not in (2, 4):
                _fail(nid, n, f"packs a 4-D or 2-D tensor to its own logical shape, got {x.shape} -> {n.shape}")
            for k in ("threshold", "flip"):
                if n.attrs[k].shape != want:
                    _fail(nid, n, f"{k} has shape {n.attrs[k].shape}, expected {want}")
        elif n.op == Op.BCONV2D:
            signs = n.attrs["signs"]
            o, i, kh, kw = signs.shape
            if i != _channels(x.shape):
                _fail(nid, n, f"weights expect {i} input channels, input has {_channels(x.shape)}")
            if not np.isin(signs, (-1, 1)).all():
                _fail(nid, n, "binary weights must be +-1")
            (sh, sw), (ph, pw) = n.attrs["stride"], n.attrs["padding"]
            if len(x.shape) == 2:  # binary dense: a 1x1 bconv on (N, C)
                want = (x.shape[0], o)
                if (kh, kw, sh, sw, ph, pw) != (1, 1, 1, 1, 0, 0):
                    _fail(nid, n, "a binary dense must be 1x1, stride 1, no padding")
            else:
                want = (x.shape[0], o, (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1)
            if n.shape != want:
                _fail(nid, n, f"shape {n.shape} but bconv of {x.shape} gives {want}")
            aff = (2, o) if modal else (o,)
            for k in ("scale", "bias") if not n.attr("accumulator") else ():
                if n.attrs[k].shape != aff:
                    _fail(nid, n, f"{k} has shape {n.attrs[k].shape}, expected {aff}")
            packed = n.attr("packed")
            if packed is not None:
                bits = {"uint32": 32, "uint64": 64}[n.attrs["word"]]
                if packed.shape != (o, kh, kw, -(-i // bits)) or packed.dtype != np.dtype(n.attrs["word"]):
                    _fail(nid, n, f"packed weights {packed.shape} {packed.dtype} do not fit {i} channels "
                                  f"in {n.attrs['word']} words")
        elif n.op == Op.ADD:
            if len(ins) != 2 or ins[0].shape != ins[1].shape or n.shape != x.shape:
                _fail(nid, n, f"add needs two inputs of one shape, got {[t.shape for t in ins]}")
        elif n.op == Op.MAXPOOL2D:
            k, s, p = n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
            want = x.shape[:2] + tuple((x.shape[2 + d] + 2 * p[d] - k[d]) // s[d] + 1 for d in (0, 1))
            if n.shape != want:
                _fail(nid, n, f"shape {n.shape} but pooling {x.shape} gives {want}")
        elif n.op == Op.GLOBAL_AVGPOOL:
            if len(x.shape) != 4 or n.shape != x.shape[:2]:
                _fail(nid, n, f"expects (N,C,H,W) -> (N,C), got {x.shape} -> {n.shape}")
        elif n.op == Op.DENSE:
            w = n.attrs["weight"]
            if len(x.shape) != 2 or w.shape[1] != x.shape[1] or n.shape != (x.shape[0], w.shape[0]):
                _fail(nid, n, f"dense {w.shape} does not fit input {x.shape} -> {n.shape}")
        for k, v in n.attrs.items():
            if isinstance(v, np.ndarray) and v.dtype.kind == "f" and not np.isfinite(v).all():
                _fail(nid, n, f"constant {k!r} holds NaN or Inf")
    return g
