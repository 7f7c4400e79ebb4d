"""A readable text form of the IR, one line per node, that `parse` (compiler/ir/parse.py) reads
back:

    %c1: float32[Nx8x6x6] = conv2d @split(%x, %modality) {bias=<2x8 float32>, padding=(1, 1), ...}  # layer1.conv

Constants show by shape and dtype, `<64x3x3x3 float32>`; small ones (at most `inline`
elements) also by value, `<2 float32: 0.5 -1>`, so a pass test can state the numbers it expects.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph

INLINE = 8  # constants of at most this many elements print their values


def _array(a: np.ndarray, inline: int) -> str:
    head = f"{'x'.join(map(str, a.shape)) or 'scalar'} {a.dtype}"
    if a.size == 0 or a.size > inline:
        return f"<{head}>"
    return f"<{head}: {' '.join(str(v) for v in a.reshape(-1))}>"


def fmt_value(v, inline: int = INLINE) -> str:
    if isinstance(v, np.ndarray):
        return _array(v, inline)
    if isinstance(v, dict) or hasattr(v, "items"):
        return "{" + ", ".join(f"{k}: {fmt_value(x, inline)}" for k, x in v.items()) + "}"
    if isinstance(v, tuple):
        return "(" + ", ".join(fmt_value(x, inline) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, str):
        return repr(str(v))
    if isinstance(v, np.generic):
        return repr(v.item())
    return repr(v)


def node_line(nid: str, n, inline: int = INLINE) -> str:
    shape = "x".join(str(d) for d in n.shape)
    attrs = ", ".join(f"{k}={fmt_value(v, inline)}" for k, v in sorted(n.attrs.items()))
    mod = f" @{n.modality}" if n.modality != "any" else ""
    src = f"  # {n.source}" if n.source else ""
    return (f"%{nid}: {n.dtype}[{shape}] = {n.op}{mod}({', '.join('%' + i for i in n.inputs)})"
            f"{' {' + attrs + '}' if attrs else ''}{src}")


def dump(g: Graph, inline: int = INLINE) -> str:
    lines = [f"graph {g.name} {{"]
    for k, v in g.meta.items():
        lines.append(f"  # {k}: {v}")
    lines += ["  " + node_line(nid, n, inline) for nid, n in g.items()]
    lines.append(f"  return {', '.join('%' + o for o in g.outputs)}")
    lines.append("}")
    return "\n".join(lines) + "\n"
