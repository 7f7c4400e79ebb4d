"""Element-wise ops as Relax ops, which TVM fuses into the conv epilogues."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op

from ..registry import Lowered, LoweringError, lowers


def _f32(v: float):
    return relax.const(np.float32(v))


@lowers(Op.RELU)
def _relu(low, nid, n, ins):
    return Lowered(low.emit(relax.op.nn.relu(ins[0])), low.cb[n.inputs[0]])


@lowers(Op.PRELU)
def _prelu(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    neg = low.emit(relax.op.multiply(relax.op.minimum(ins[0], _f32(0)),
                                     low.per_channel(n, cb, np.asarray(n.attrs["slope"]))))
    return Lowered(low.emit(relax.op.add(relax.op.maximum(ins[0], _f32(0)), neg)), cb)


@lowers(Op.SIGN)
def _sign(low, nid, n, ins):
    pos = relax.op.astype(relax.op.greater_equal(ins[0], _f32(0)), "float32")
    return Lowered(low.emit(relax.op.subtract(relax.op.multiply(pos, _f32(2)), _f32(1))), low.cb[n.inputs[0]])


@lowers(Op.ADD)
def _add(low, nid, n, ins):
    a, b = n.inputs
    if low.cb[a] != low.cb[b]:
        if min(low.cb[a], low.cb[b]) <= 0:
            raise LoweringError(f"add at {n.source or nid}: operands in layouts c{low.cb[a]} and c{low.cb[b]}")
        # e.g. a binary conv's output (16-channel blocks) + an int8 shortcut conv's (64)
        return Lowered(low.emit(relax.op.add(ins[0], low.relayout(ins[1], b, low.cb[a]))), low.cb[a])
    return Lowered(low.emit(relax.op.add(ins[0], ins[1])), low.cb[a])


@lowers(Op.SIGMOID)
def _sigmoid(low, nid, n, ins):
    return Lowered(low.emit(relax.op.sigmoid(ins[0])), low.cb[n.inputs[0]])


@lowers(Op.HARD_SIGMOID)
def _hard_sigmoid(low, nid, n, ins):
    y = relax.op.minimum(relax.op.maximum(relax.op.add(ins[0], _f32(3)), _f32(0)), _f32(6))
    return Lowered(low.emit(relax.op.divide(y, _f32(6))), low.cb[n.inputs[0]])

@lowers(Op.SCALE_CHANNELS)
def _scale_channels(low, nid, n, ins):
    cb, (_, c, _, _) = low.cb[n.inputs[0]], n.shape
    if low.cb[n.inputs[1]] != 0 or cb <= 0:
        raise LoweringError(f"scale_channels at {n.source or nid}: needs a blocked 4-D x and a 2-D gate")
    gate = low.emit(relax.op.reshape(ins[1], (low.n, c // cb, 1, 1, cb)))
    return Lowered(low.emit(relax.op.multiply(ins[0], gate)), cb)


@lowers(Op.CLAMP)
def _clamp(low, nid, n, ins):
    lo, hi = n.attr("min"), n.attr("max")
    y = ins[0]
    if lo is not None:
        y = low.emit(relax.op.maximum(y, _f32(lo)))
    if hi is not None:
        y = low.emit(relax.op.minimum(y, _f32(hi)))
    return Lowered(y, low.cb[n.inputs[0]])


@lowers(Op.L2_NORMALIZE)
def _l2_normalize(low, nid, n, ins):
    x = ins[0]
    norm = low.emit(relax.op.sqrt(relax.op.sum(relax.op.multiply(x, x), axis=[1], keepdims=True)))
    return Lowered(low.emit(relax.op.divide(x, relax.op.maximum(norm, _f32(n.attrs["eps"])))), 0)


@lowers(Op.CONCAT)
def _concat(low, nid, n, ins):
    if any(low.cb[i] for i in n.inputs):
        raise LoweringError(f"concat at {n.source or nid} joins 2-D features only")
    return Lowered(low.emit(relax.op.concat(list(ins), axis=1)), 0)


@lowers(Op.MULTIPLY)
def _multiply(low, nid, n, ins):
    a, b = n.inputs
    if low.cb[a] != low.cb[b]:
        raise LoweringError(f"multiply at {n.source or nid}: operands in layouts c{low.cb[a]} and c{low.cb[b]}")
    return Lowered(low.emit(relax.op.multiply(ins[0], ins[1])), low.cb[a])
