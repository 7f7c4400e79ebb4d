"""bf16 ops: rounding to bf16 (TVM fuses it into the producing kernel's epilogue where the
channel block stays; a change of block to the AMX kernel's 64 is a kernel of its own), and the
bf16 conv through reidc's TE kernel (kernels/conv2d_bf16.py) with its scale and bias epilogue:
the one `Lowerer.bf16` names: AMX-BF16 tiles, AVX512-BF16 vdpbf16ps (the tiles' layouts), CUDA
tensor cores (bf16 WMMA), or the float32 conv of the decoded values."""
from __future__ import annotations

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op
from reidc.compiler.ir.opset.refmath import from_bf16_bits, to_bf16_bits
from reidc.kernels.conv2d import pack_weight
from reidc.kernels.conv2d_bf16 import (PAIR, Bf16Conv, conv2d_nchwc_bf16, conv2d_nchwc_decoded, conv2d_nchwc_wmma,
                                       decode, pack_weight_bf16, pack_weight_wmma, phase_weight,
                                       to_bf16_nchwc)
from reidc.kernels.conv2d_int8 import output_block
from reidc.kernels.winograd import conv2d_winograd_nchwc, pair_weight, transform_weight

from ..registry import Lowered, LoweringError, lowers

ROW = 64   # channels per AMX tile row of bf16 input (two 32-channel halves)


@lowers(Op.TO_BF16)
def _to_bf16(low, nid, n, ins):
    cb, c = low.cb[n.inputs[0]], n.shape[1]
    if not cb or len(n.shape) != 4:
        raise LoweringError(f"to_bf16 at {n.source or nid} needs a 4-D blocked input")
    out = ROW if low.bf16 is Bf16Conv.TILES and c % ROW == 0 else cb   # the others keep fp32's blocks
    y = low.bb.emit_te(to_bf16_nchwc, ins[0], out, primfunc_name_hint="to_bf16",
                       primfunc_attrs={"op_pattern": 0 if out == cb else 2})
    return Lowered(y, out)


@lowers(Op.FROM_BF16)
def _from_bf16(low, nid, n, ins):
    from tvm import te
    y = low.bb.emit_te(lambda t: te.compute(t.shape, lambda *i: decode(t(*i)), name="reidc_from_bf16"), ins[0],
                       primfunc_name_hint="from_bf16", primfunc_attrs={"op_pattern": 0})
    return Lowered(y, low.cb[n.inputs[0]])


@lowers(Op.CONV2D_BF16)
def _conv2d_bf16(low, nid, n, ins):
    cb, o = low.cb[n.inputs[0]], n.shape[1]
    if not cb:
        raise LoweringError(f"conv2d_bf16 at {n.source or nid} needs a 4-D blocked input")
    tiles = low.bf16 in (Bf16Conv.TILES, Bf16Conv.DOT)   # the same TE and layouts
    if tiles and (cb % PAIR or o % 16):
        raise LoweringError(f"conv2d_bf16 at {n.source or nid}: the {low.bf16.value} kernel needs input channel "
                            f"blocks of a multiple of {PAIR} and output channels a multiple of 16 (has c{cb}, {o} "
                            "outputs)")
    weight, stride, padding = np.asarray(n.attrs["weight"]), tuple(n.attrs["stride"]), tuple(n.attrs["padding"])
    if n.attr("algorithm") not in (None, "direct"):   # choose_winograd's F(2x2, 3x3): U rounded to bf16
        if low.bf16 is not Bf16Conv.DOT or cb % PAIR:
            raise LoweringError(f"conv2d_bf16 at {n.source or nid}: Winograd needs the AVX512-BF16 kernel and even "
                                f"input channel blocks (has the {low.bf16.value} kernel, c{cb})")
        ob = low.block(o)
        u = pair_weight(to_bf16_bits(transform_weight(from_bf16_bits(weight), ob, 2)))
        y = low.bb.emit_te(conv2d_winograd_nchwc, ins[0], low.const(u), primfunc_name_hint="conv2d_bf16_winograd",
                           primfunc_attrs={"op_pattern": 4})
    elif tiles:
        ob = output_block(o)
        w = low.const(pack_weight_bf16(phase_weight(weight, stride), cb, ob))
        y = low.bb.emit_te(conv2d_nchwc_bf16, ins[0], w, stride, padding, weight.shape[2:],
                           primfunc_name_hint="conv2d_bf16", primfunc_attrs={"op_pattern": 4})
    elif low.bf16 is Bf16Conv.WMMA:   # bf16 weights, as TVM's tensor-core matmul reads them
        ob = low.block(o)
        y = low.bb.emit_te(conv2d_nchwc_wmma, ins[0], low.const(pack_weight_wmma(weight)), stride, padding, ob,
                           primfunc_name_hint="conv2d_bf16", primfunc_attrs={"op_pattern": 4})
    else:   # no bf16 dot product: the float32 conv of the decoded values
        ob = low.block(o)
        w = low.const(pack_weight(from_bf16_bits(weight), cb, ob))
        y = low.bb.emit_te(conv2d_nchwc_decoded, ins[0], w, stride, padding,
                           primfunc_name_hint="conv2d_bf16", primfunc_attrs={"op_pattern": 4})
    s = n.attr("out_scale")
    if s is not None:
        y = low.emit(relax.op.multiply(y, low.per_channel(n, ob, np.asarray(s, np.float32))))
    b = n.attr("bias")
    b = np.zeros(o, np.float32) if b is None else np.asarray(b, np.float32)
    return Lowered(low.emit(relax.op.add(y, low.per_channel(n, ob, b))), ob)
