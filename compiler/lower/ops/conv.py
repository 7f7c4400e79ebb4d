"""Float conv2d through reidc's TE kernel (bias and whatever follows fuse into its epilogue),
and dense as a Relax matmul."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op
from reidc.kernels.conv2d import conv2d_nchwc, depthwise_nchwc, pack_depthwise, pack_weight

from ..registry import Lowered, LoweringError, lowers


@lowers(Op.CONV2D)
def _conv2d(low, nid, n, ins):
    cb, ob = low.cb[n.inputs[0]], low.block(n.shape[1])
    w = low.const(pack_weight(np.asarray(n.attrs["weight"]), cb, ob))
    args = [ins[0], w, tuple(n.attrs["stride"]), tuple(n.attrs["padding"])]
    kw = {}
    if n.attrs["weight"].ndim == 5:
        kw["modality"] = ins[1]
    if n.attr("pad_value") is not None:
        kw["pad_value"] = low.const(np.asarray(n.attrs["pad_value"], np.float32))
    y = low.bb.emit_te(conv2d_nchwc, *args, **kw, primfunc_name_hint="conv2d", primfunc_attrs={"op_pattern": 4})
    bias = n.attr("bias")
    bias = np.zeros(n.shape[1], np.float32) if bias is None else np.asarray(bias)
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, bias))), ob)


@lowers(Op.DENSE)
def _dense(low, nid, n, ins):
    if low.cb[n.inputs[0]]:
        raise LoweringError(f"dense at {n.source or nid} needs a 2-D input")
    y = low.emit(relax.op.matmul(ins[0], low.const(np.asarray(n.attrs["weight"]).T)))
    b = n.attr("bias")
    return Lowered(low.emit(relax.op.add(y, relax.const(np.asarray(b).reshape(1, -1)))) if b is not None else y, 0)


@lowers(Op.DEPTHWISE_CONV2D)
def _depthwise(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    w = low.const(pack_depthwise(np.asarray(n.attrs["weight"]), cb))
    y = low.bb.emit_te(depthwise_nchwc, ins[0], w, tuple(n.attrs["stride"]), tuple(n.attrs["padding"]),
                       primfunc_name_hint="depthwise_conv2d", primfunc_attrs={"op_pattern": 4})
    bias = n.attr("bias")
    bias = np.zeros(n.shape[1], np.float32) if bias is None else np.asarray(bias)
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, cb, bias))), cb)
