"""Graph inputs: the image enters NCHW and is blocked to NCHW{cb}c; the modality vector as is."""
from __future__ import annotations

from tvm import relax

from reidc.compiler.ir import Op

from ..registry import Lowered, lowers


@lowers(Op.INPUT)
def _input(low, nid, n, ins):
    if n.attrs["name"] == "modality":
        return Lowered(low.m, 0)
    _, c, h, w = n.shape
    cb = low.block(c)
    v = low.emit(relax.op.reshape(low.x, (low.n, c // cb, cb, h, w)))
    return Lowered(low.emit(relax.op.permute_dims(v, [0, 1, 3, 4, 2])), cb)
