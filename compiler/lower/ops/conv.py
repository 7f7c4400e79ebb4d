"""Float conv2d, depthwise and grouped, through reidc's TE kernels (bias and whatever follows
fuse into their epilogues), and dense as a Relax matmul."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op
from reidc.compiler.ir.opset.conv import WINOGRAD_TILES
from reidc.kernels.conv2d import conv2d_nchwc, depthwise_nchwc, group_conv2d_nchwc, pack_depthwise, pack_weight
from reidc.kernels.schedule_utils import largest_divisor_at_most
from reidc.kernels.winograd import conv2d_winograd_nchwc, transform_weight

from ..registry import Lowered, LoweringError, lowers


@lowers(Op.CONV2D)
def _conv2d(low, nid, n, ins):
    cb, ob = low.cb[n.inputs[0]], low.block(n.shape[1])
    m = WINOGRAD_TILES.get(n.attr("algorithm"))
    if m:   # choose_winograd's pick: the transformed weight of F(m x m, 3 x 3), one kernel
        u = low.const(transform_weight(np.asarray(n.attrs["weight"]), ob, m))
        y = low.bb.emit_te(conv2d_winograd_nchwc, ins[0], u, primfunc_name_hint="conv2d_winograd",
                           primfunc_attrs={"op_pattern": 4})
        return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, _bias(n)))), ob)
    w = low.const(pack_weight(np.asarray(n.attrs["weight"]), cb, ob))
    args = [ins[0], w, tuple(n.attrs["stride"]), tuple(n.attrs["padding"])]
    kw = {}
    if n.attrs["weight"].ndim == 5:
        kw["modality"] = ins[1]
    if n.attr("pad_value") is not None:
        kw["pad_value"] = low.const(np.asarray(n.attrs["pad_value"], np.float32))
    y = low.bb.emit_te(conv2d_nchwc, *args, **kw, primfunc_name_hint="conv2d", primfunc_attrs={"op_pattern": 4})
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, _bias(n)))), ob)


def _bias(n) -> np.ndarray:
    """The conv's bias, zeros where it has none: (O,) or per modality (2, O)."""
    bias = n.attr("bias")
    return np.zeros(n.shape[1], np.float32) if bias is None else np.asarray(bias)


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
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, cb, _bias(n)))), cb)


def _group_block(c: int, prefer: int) -> int:
    """A channel block dividing c, one group's channels: `prefer` where it does, else 16 or 8,
    else the largest divisor of c up to 16."""
    for b in (prefer, 16, 8):
        if b > 0 and c % b == 0:
            return b
    return largest_divisor_at_most(c, 16)


@lowers(Op.GROUP_CONV2D)
def _group_conv2d(low, nid, n, ins):
    """The input in a block dividing its channels per group (relaid out where its own block does
    not), the output in a block dividing the output channels per group: each output block then
    reads one group's input blocks."""
    src, groups = n.inputs[0], int(n.attrs["groups"])
    o, ig = n.attrs["weight"].shape[:2]
    cb, ob = _group_block(ig, low.cb[src]), _group_block(o // groups, low.block(o))
    w = low.const(pack_weight(np.asarray(n.attrs["weight"]), cb, ob))
    y = low.bb.emit_te(group_conv2d_nchwc, low.relayout(ins[0], src, cb), w, tuple(n.attrs["stride"]),
                       tuple(n.attrs["padding"]), groups, primfunc_name_hint="group_conv2d",
                       primfunc_attrs={"op_pattern": 4})
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, _bias(n)))), ob)
