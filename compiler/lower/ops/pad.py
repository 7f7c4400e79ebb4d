"""Padding with a per-channel value, in the blocked layout: one TE compute (an injective
prologue TVM schedules as any other)."""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

from reidc.compiler.ir import Op

from ..registry import Lowered, lowers


def _pad_nchwc(x: te.Tensor, value: te.Tensor, ph: int, pw: int) -> te.Tensor:
    n, cc, h, w, cb = x.shape

    def fill(b, c, i, j, l):
        inside = tir.all(i >= ph, i < h + ph, j >= pw, j < w + pw)
        return tir.if_then_else(inside, x[b, c, i - ph, j - pw, l], value[c * cb + l])
    return te.compute((n, cc, h + 2 * ph, w + 2 * pw, cb), fill, name="pad_value")


@lowers(Op.PAD)
def _pad(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    ph, pw = n.attrs["padding"]
    value = low.const(np.asarray(n.attrs["value"], np.float32))
    return Lowered(low.bb.emit_te(_pad_nchwc, ins[0], value, ph, pw, primfunc_name_hint="pad_value"), cb)
