"""Pooling as Relax ops in the blocked layout; the global poolings leave it as (N, C)."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op

from ..registry import Lowered, lowers


@lowers(Op.MAXPOOL2D)
def _maxpool(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    return Lowered(low.emit(relax.op.nn.max_pool2d(ins[0], n.attrs["kernel"], n.attrs["stride"],
                                                   n.attrs["padding"], ceil_mode=bool(n.attr("ceil_mode")),
                                                   layout=f"NCHW{cb}c")), cb)


@lowers(Op.AVGPOOL2D)
def _avgpool(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    return Lowered(low.emit(relax.op.nn.avg_pool2d(ins[0], n.attrs["kernel"], n.attrs["stride"],
                                                   layout=f"NCHW{cb}c")), cb)


@lowers(Op.GLOBAL_AVGPOOL)
def _global_avgpool(low, nid, n, ins):
    y = low.emit(relax.op.mean(ins[0], axis=[2, 3]))
    return Lowered(low.emit(relax.op.reshape(y, (low.n, n.shape[1]))), 0)


@lowers(Op.GLOBAL_MAXPOOL)
def _global_maxpool(low, nid, n, ins):
    y = low.emit(relax.op.max(ins[0], axis=[2, 3]))
    return Lowered(low.emit(relax.op.reshape(y, (low.n, n.shape[1]))), 0)


@lowers(Op.GEM_POOL)
def _gem_pool(low, nid, n, ins):
    p, eps = (relax.const(np.float32(n.attrs[k])) for k in ("p", "eps"))
    y = low.emit(relax.op.power(relax.op.maximum(ins[0], eps), p))
    y = low.emit(relax.op.reshape(relax.op.mean(y, axis=[2, 3]), (low.n, n.shape[1])))
    return Lowered(low.emit(relax.op.power(y, relax.const(np.float32(1.0 / n.attrs["p"])))), 0)
