"""int8 ops: quantize as Relax element-wise ops (TVM fuses it into the producing conv's
epilogue: requantisation in registers, uint8 to memory), the int8 conv through reidc's TE
kernel (kernels/conv2d_int8.py) with its dequantisation epilogue."""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
from tvm import relax

from reidc.compiler.ir import Op
from reidc.compiler.ir.opset.quant import inverse_scale
from reidc.kernels.conv2d_int8 import (GROUP, LANES, column_fold, conv2d_nchwc_int8, conv2d_nchwc_int8_wmma, fold_columns,
                                      fold_weight, output_block, pack_weight_gemm, pack_weight_int8, weight_sums)
from reidc.kernels.narrow_u8 import narrow_u8

from ..registry import Lowered, LoweringError, lowers


def _per_sample(low, n, table: np.ndarray, cb: int) -> relax.Expr:
    """A per-tensor (1,) or per-modality (2,) float32 scalar, shaped to broadcast over a value of
    n's shape in channel block cb."""
    rank = 5 if cb else len(n.shape)
    if table.shape == (1,):
        return low.const(table.reshape((1,) * rank).astype("float32"))
    if low.m is None:
        raise LoweringError(f"per-modality scale at {n.source} outside the mixed entry")
    picked = low.emit(relax.op.take(low.const(table.astype("float32")), low.m, axis=0, mode="clip"))
    return low.emit(relax.op.reshape(picked, (low.n,) + (1,) * (rank - 1)))


@lowers(Op.QUANTIZE)
def _quantize(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    inv = inverse_scale(n.attrs["scale"])
    y = ins[0] if inv.shape == (1,) and inv[0] == 1 else \
        low.emit(relax.op.multiply(ins[0], _per_sample(low, n, inv, cb)))   # a step its producer took: none
    zp = float(n.attrs["zero_point"])
    if low.int8.narrow_by_add:
        return Lowered(low.bb.emit_te(narrow_u8, y, int(zp), primfunc_name_hint="narrow_u8",
                                      primfunc_attrs={"op_pattern": 0}), cb)   # element-wise: fused
    y = low.emit(relax.op.round(y))
    if zp:
        y = low.emit(relax.op.add(y, relax.const(np.float32(zp))))
    # the clip in int32, after the convert, the top bound in float first (no float beyond
    # int32's range): LLVM narrows a clamped i32 -> u8 with packs (AVX2: vpackssdw + vpackuswb,
    # where the narrowing of a float clip was 2 vpshufb + vpunpckldq and a float max), or
    # vpmaxsd + vpmovusdb (AVX-512, one for one with the float max + vpmovdb)
    y = low.emit(relax.op.astype(relax.op.minimum(y, relax.const(np.float32(255))), "int32"))
    return Lowered(low.emit(relax.op.astype(relax.op.clip(y, 0, 255), "uint8")), cb)


@lowers(Op.DEQUANTIZE)
def _dequantize(low, nid, n, ins):
    cb = low.cb[n.inputs[0]]
    y = low.emit(relax.op.astype(ins[0], "float32"))
    zp = float(n.attrs["zero_point"])
    if zp:
        y = low.emit(relax.op.subtract(y, relax.const(np.float32(zp))))
    scale = np.asarray(n.attrs["scale"], np.float32)
    return Lowered(low.emit(relax.op.multiply(y, _per_sample(low, n, scale, cb))), cb)


@lowers(Op.CONV2D_INT8)
def _conv2d_int8(low, nid, n, ins):
    cb, o = low.cb[n.inputs[0]], n.shape[1]
    data = ins[0]
    w = n.attrs["weight"]
    if cb == low.g[n.inputs[0]].shape[1] and w.shape[-3] > cb:   # the image: channels padded to a group
        pad = [0, 0] * 4 + [0, w.shape[-3] - cb]
        data = low.emit(relax.op.nn.pad(data, pad, pad_value=float(n.attrs["zero_point"])))
        cb = w.shape[-3]
    src = low.g[n.inputs[0]]
    if low.int8.row_tiles and w.ndim == 4 and cb in (16, 32) and src.shape[1] % 64 == 0:
        # AMX takes 64-channel rows: the uint8 input re-blocked (a quarter of the float's bytes)
        data, cb = low.reblock(data, src.shape, cb, 64), 64
    if cb <= 0 or cb % GROUP or o % LANES:
        raise LoweringError(f"conv2d_int8 at {n.source or nid}: needs input channel blocks of a multiple of "
                            f"{GROUP} and output channels a multiple of {LANES} (has c{cb}, {o} outputs)")
    # the target's int8 dot product is exact only for |w| <= weight_max (AVX2's vpmaddubsw: 63, its
    # int16 pair sums saturate beyond): quantize_int8 keeps the weights there, this guards it
    wmax, peak = low.int8.weight_max, int(np.abs(np.asarray(w, np.int32)).max(initial=0))
    if wmax < 127 and peak > wmax:
        raise LoweringError(f"conv2d_int8 at {n.source or nid}: an int8 weight of magnitude {peak}, beyond the "
                            f"target's {wmax} (its int8 dot product saturates above; quantize_int8 takes weight_max)")
    zp = int(n.attrs["zero_point"])
    ob = output_block(o)
    stride, padding, taps = tuple(n.attrs["stride"]), tuple(n.attrs["padding"]), tuple(w.shape[-2:])
    fold = column_fold(stride, taps, cb) if low.int8.row_tiles and w.ndim == 4 and cb == w.shape[1] else None
    if fold is not None:   # the stem on AMX: phases and column taps folded into 64-channel rows
        data = low.bb.emit_te(fold_columns, data, stride, padding, taps, zp, primfunc_name_hint="fold_columns",
                              primfunc_attrs={"op_pattern": 8})   # its own kernel: the quantize stays vectorised
        packed = pack_weight_int8(fold_weight(np.asarray(w), stride, *fold), 64, ob, low.int8.order)
        stride, padding = (1, 1), (0, 0)
    elif low.int8.tensor_cores:   # CUDA: an s8 x s8 implicit GEMM (its weights in K order)
        packed = pack_weight_gemm(w)
    else:
        packed = pack_weight_int8(np.asarray(w), cb, ob, low.int8.order)
    args = [data, low.const(packed), stride, padding, zp]
    modality = ins[1] if w.ndim == 5 else None
    flavour = low.int8
    if flavour.paired_max and peak <= flavour.paired_max:   # AVX2: two groups per vpmaddwd
        flavour = replace(flavour, weight_max=flavour.paired_max)
    if flavour.tensor_cores:
        acc = low.bb.emit_te(conv2d_nchwc_int8_wmma, *args, ob, modality=modality, primfunc_name_hint="conv2d_int8",
                             primfunc_attrs={"op_pattern": 4})
    else:
        acc = low.bb.emit_te(partial(conv2d_nchwc_int8, flavour=flavour), *args, modality=modality,
                             primfunc_name_hint="conv2d_int8", primfunc_attrs={"op_pattern": 4})
    shift = zp - 128 if low.int8.signed else zp   # what the kernel's input values carry beyond q - zp
    if shift:  # the zero point's share of the sum, exact in int32
        acc = low.emit(relax.op.subtract(acc, low.per_channel(n, ob, shift * weight_sums(np.asarray(w)), "int32")))
    y = low.emit(relax.op.astype(acc, "float32"))
    ws = np.asarray(n.attrs["weight_scale"], np.float64)
    xs = np.asarray(n.attrs["input_scale"], np.float64)
    scale = ws * xs[:, None] if xs.shape == (2,) else ws * xs[0]   # (O,) or (2, O)
    y = low.emit(relax.op.multiply(y, low.per_channel(n, ob, scale.astype(np.float32))))
    b = n.attr("bias")
    if b is not None:
        y = low.emit(relax.op.add(y, low.per_channel(n, ob, np.asarray(b))))
    return Lowered(y, ob)
