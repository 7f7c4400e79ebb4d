"""The per-channel affine (what every BN folds into); batch_norm itself never reaches lowering."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op

from ..registry import Lowered, LoweringError, lowers


@lowers(Op.AFFINE)
def _affine(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    y = low.emit(relax.op.multiply(ins[0], low.per_channel(n, cb, np.asarray(n.attrs["scale"]))))
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, cb, np.asarray(n.attrs["bias"])))), cb)


@lowers(Op.BATCH_NORM)
def _batch_norm(low, nid, n, ins):
    raise LoweringError(f"batch_norm at {n.source or nid} reached lowering: the BN folds "
                        f"(compiler/passes/fold_*bn*.py) turn every BN into a conv or an affine")


@lowers(Op.INSTANCE_NORM)
def _instance_norm(low, nid, n, ins):
    """Statistics over H and W of each (sample, channel) in the blocked layout; channels past
    the first K keep their input (a per-channel select)."""
    cb, c, k = low.cb[n.inputs[0]], n.shape[1], n.attrs["scale"].shape[0]
    x = ins[0]
    mean = low.emit(relax.op.mean(x, axis=[2, 3], keepdims=True))
    centred = low.emit(relax.op.subtract(x, mean))
    var = low.emit(relax.op.mean(relax.op.multiply(centred, centred), axis=[2, 3], keepdims=True))
    inv = low.emit(relax.op.rsqrt(relax.op.add(var, relax.const(np.float32(n.attrs["eps"])))))
    full = lambda v, fill: np.concatenate([np.asarray(v, np.float32), np.full(c - k, fill, np.float32)])  # noqa: E731
    y = low.emit(relax.op.multiply(relax.op.multiply(centred, inv), low.per_channel(n, cb, full(n.attrs["scale"], 1))))
    y = low.emit(relax.op.add(y, low.per_channel(n, cb, full(n.attrs["bias"], 0))))
    if k == c:
        return Lowered(y, cb)
    mask = low.per_channel(n, cb, np.arange(c) < k, dtype="bool")
    return Lowered(low.emit(relax.op.where(mask, y, x)), cb)
