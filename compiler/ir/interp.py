"""A reference interpreter for reidc's IR in numpy: runs each op's declared reference semantics
(compiler/ir/opset). Tests check every pass with it against the PyTorch model, without TVM; it
is also the slow, plain answer a kernel is compared with."""
from __future__ import annotations

import numpy as np

from .graph import Graph
from .spec import spec_of


def run_all(g: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every node's value; `feeds` maps input names (x, modality) to arrays."""
    m, x = feeds.get("modality"), feeds.get("x")
    if m is not None:
        m = np.asarray(m)
        if m.shape != (len(x),) or not np.isin(m, (0, 1)).all():
            raise ValueError(f"modality must be {len(x)} codes of 0 (visible) or 1 (infrared), got {m.tolist()}")
    vals: dict[str, np.ndarray] = {}
    for nid, n in g.items():
        if n.attrs.get("name") is not None and not n.inputs:
            name = n.attrs["name"]  # an unused modality input may stay unfed (None)
            if feeds.get(name) is None and (name == "x" or g.consumers(nid)):
                raise ValueError(f"graph {g.name!r} needs input {name!r}")
            vals[nid] = None if feeds.get(name) is None else np.asarray(feeds[name])
        else:
            vals[nid] = spec_of(n.op).reference([vals[i] for i in n.inputs], n)
    return vals


def run(g: Graph, x: np.ndarray, modality: np.ndarray | None = None) -> np.ndarray:
    """The graph's first output for images x (and the modality codes, for mixed graphs)."""
    feeds = {"x": x} if modality is None else {"x": x, "modality": modality}
    return run_all(g, feeds)[g.outputs[0]]
