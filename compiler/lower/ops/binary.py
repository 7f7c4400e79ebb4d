"""bitpack and bconv2d through reidc's TE kernels (packed NHWC words between them); the bconv's
float epilogue is Relax, fused by TVM."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op
from reidc.compiler.ir.bits import border_correction
from reidc.kernels.bconv2d import bconv2d_nchwc, pack_binary_weight
from reidc.kernels.bitpack import bitpack_signed_nchwc, signed_bounds

from ..registry import Lowered, lowers


@lowers(Op.BITPACK)
def _bitpack(low, nid, n, ins):
    """Thresholds as (sign, bound) constants (kernels/bitpack.py `signed_bounds`: no branch on
    flip in the kernel); per-modality rows picked per sample here, so the kernel reads (N, C)."""
    src_dtype = low.g[n.inputs[0]].dtype  # float32, or int32 from a bconv accumulator
    data = ins[0]
    if not low.cb[n.inputs[0]]:  # (N, C) -> (N, 1, 1, 1, C): one channel block, 1x1 pixels
        data = low.emit(relax.op.reshape(data, (low.n, 1, 1, 1, n.shape[1])))
    sign, bound = signed_bounds(np.asarray(n.attrs["threshold"], src_dtype), np.asarray(n.attrs["flip"], np.int8))
    sign, bound = low.const(sign), low.const(bound)
    if len(ins) > 1:  # (2, C) -> (N, C) by each sample's modality
        sign, bound = (low.emit(relax.op.take(t, ins[1], axis=0, mode="clip")) for t in (sign, bound))
    return Lowered(low.bb.emit_te(bitpack_signed_nchwc, data, sign, bound, n.shape[1], primfunc_name_hint="bitpack"), -1)


@lowers(Op.BCONV2D)
def _bconv2d(low, nid, n, ins):
    src = low.g[n.inputs[0]]
    ob = low.block(n.shape[1])
    packed, data = np.ascontiguousarray(n.attrs["packed"]), ins[0]
    if low.binary_word == "uint32":
        # uint32 lanes count 16 channels a 512-bit vector with no narrowing before the epilogue
        # (build.binary_word); little-endian, word w's low half holds channels 64w .. 64w + 31
        *lead, cw = data.ty.shape.values
        data = low.emit(relax.op.memory.view(data, [*lead, cw * 2], "uint32"))
        packed = packed.view(np.uint32)
    w = low.const(pack_binary_weight(packed, ob))
    corr = [low.const(a) for a in border_correction(np.asarray(n.attrs["signs"]), src.shape[2:] or (1, 1),
                                                     n.attrs["stride"], n.attrs["padding"])]
    dot = low.bb.emit_te(bconv2d_nchwc, data, w, *corr, src.shape[1], tuple(n.attrs["stride"]),
                         tuple(n.attrs["padding"]), primfunc_name_hint="bconv2d", primfunc_attrs={"op_pattern": 4})
    if len(n.shape) == 2:  # binary dense: (N, O//ob, 1, 1, ob) -> (N, O)
        dot, ob = low.emit(relax.op.reshape(dot, (low.n, n.shape[1]))), 0
    if n.attr("accumulator"):  # a bitpack with an integer threshold reads the int32 dot
        return Lowered(dot, ob)
    y = low.emit(relax.op.multiply(relax.op.astype(dot, "float32"), low.per_channel(n, ob, np.asarray(n.attrs["scale"]))))
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, np.asarray(n.attrs["bias"])))), ob)
