"""A readable text form of the IR: one line per node, constants shown by shape."""
from __future__ import annotations

import numpy as np

from .graph import Graph


def _fmt(v) -> str:
    if isinstance(v, np.ndarray):
        return f"<{'x'.join(map(str, v.shape)) or 'scalar'} {v.dtype}>"
    if isinstance(v, dict) or hasattr(v, "items"):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, tuple) and v and isinstance(v[0], np.ndarray):
        return "(" + ", ".join(_fmt(x) for x in v) + ")"
    return repr(v)


def dump(g: Graph) -> str:
    lines = [f"graph {g.name} {{"]
    for k, v in g.meta.items():
        lines.append(f"  # {k}: {v}")
    for nid, n in g.items():
        shape = "x".join(str(d) for d in n.shape)
        attrs = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(n.attrs.items()))
        mod = f" @{n.modality}" if n.modality != "any" else ""
        src = f"  # {n.source}" if n.source else ""
        lines.append(f"  %{nid}: {n.dtype}[{shape}] = {n.op}{mod}({', '.join('%' + i for i in n.inputs)})"
                     f"{' {' + attrs + '}' if attrs else ''}{src}")
    lines.append(f"  return {', '.join('%' + o for o in g.outputs)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
