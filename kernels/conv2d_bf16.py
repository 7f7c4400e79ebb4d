"""bf16 conv2d in the blocked channel layout: bf16 activations x bf16 weights -> float32.

bf16 values travel as their 16 bit patterns (uint16): TVM's LLVM codegen needs no bfloat type,
numpy (the IR's reference) has none either, and a bf16 is exactly the top half of a float32:
    decode(b) = reinterpret_f32(b << 16)          (exact)
    encode(x) = (bits(x) + 0x7FFF + ((bits(x) >> 16) & 1)) >> 16   (round to nearest even)
(numpy's twins, the IR's meaning: compiler/ir/opset/refmath.py `to_bf16_bits`, `from_bf16_bits`).
Layouts:
  data    (N, C // cb, H, W, cb) uint16 (bf16 bits), cb even
  weight  (O // ob, C // cb, KH, KW, cb // 2, ob, 2) uint16   packed by `pack_weight_bf16`
  output  (N, O // ob, OH, OW, ob) float32, ob = 64 where O allows
A product of two bf16 is exact in float32, so only the order of the float32 sums differs from
the reference. With cb = 64, (up to 16 pixels) x 16 output channels x 32 input channels is one
AMX `tdpbf16ps` on tiles loaded straight from these layouts (cpu_schedules.py); a strided conv
first splits its input into the stride's phases (`phases`), so the tiles always read
unit-stride rows. Without AMX, AVX512-BF16's `vdpbf16ps` takes the same layouts with any even cb:
one input pixel's channel pair broadcast x the 16 output channels' pairs of weights.
"""
from __future__ import annotations

from enum import Enum

import numpy as np
from tvm import te, tirx as tir

from .conv2d import conv2d_nchwc, implicit_gemm, padded_copy

BCONV16_BLOCK = "reidc_conv2d_bf16"
BPAD16_BLOCK = "reidc_pad_bf16"
WMMA_BLOCK = "reidc_conv2d_bf16_wmma"
PAIR = 2   # input channels per bf16 dot-product pair


class Bf16Conv(Enum):
    """Which kernel a bf16 conv lowers to (compiler/lower/build.py `bf16_conv` picks per target)."""
    TILES = "amx-bf16"      # `conv2d_nchwc_bf16`: AMX-BF16 tiles
    DOT = "avx512-bf16"     # `conv2d_nchwc_bf16`: AVX512-BF16 vdpbf16ps, 16 lanes x a channel pair
    WMMA = "wmma"           # `conv2d_nchwc_wmma`: CUDA tensor cores, sm_80+
    DECODED = "decoded"     # `conv2d_nchwc_decoded`: float32 convs of the decoded values


def decode(v: tir.PrimExpr) -> tir.PrimExpr:
    """A uint16 bf16 pattern as float32 (exact)."""
    return tir.reinterpret("float32", tir.shift_left(v.astype("uint32"), tir.const(16, "uint32")))


def encode(x: tir.PrimExpr) -> tir.PrimExpr:
    """float32 -> uint16 bf16 pattern, round to nearest even (as refmath.to_bf16_bits)."""
    b = tir.reinterpret("uint32", x)
    one = tir.const(1, "uint32")
    half = tir.const(0x7FFF, "uint32")
    return tir.shift_right(b + half + tir.bitwise_and(tir.shift_right(b, tir.const(16, "uint32")), one),
                           tir.const(16, "uint32")).astype("uint16")


def phases(kernel: tuple, stride: tuple) -> list[tuple[int, int]]:
    """The input phases (row, column offsets modulo the stride) a strided conv reads: a conv of
    stride s is the sum over phases of unit-stride convs on the phases' sub-grids, with kernels
    of ceil(k / s) taps (what lets AMX, whose tile rows are unit-stride pixels, take it)."""
    (kh, kw), (sh, sw) = kernel, stride
    return [(py, px) for py in range(min(sh, kh)) for px in range(min(sw, kw))]


def phase_weight(w: np.ndarray, stride: tuple) -> np.ndarray:
    """(O, C, KH, KW) -> (O, P * C, ceil(KH / sh), ceil(KW / sw)): the weights of the
    unit-stride conv on the phases' sub-grids (channel p * C + c reads phase p of channel c; a
    tap past the kernel's edge is 0). Stride 1 leaves w as it is."""
    (sh, sw), (o, c, kh, kw) = stride, w.shape
    if (sh, sw) == (1, 1):
        return w
    th, tw = -(-kh // sh), -(-kw // sw)
    ps = phases((kh, kw), stride)
    out = np.zeros((o, len(ps) * c, th, tw), w.dtype)
    for k, (py, px) in enumerate(ps):
        sub = w[:, :, py::sh, px::sw]
        out[:, k * c:(k + 1) * c, :sub.shape[2], :sub.shape[3]] = sub
    return out


def pack_weight_bf16(w: np.ndarray, cb: int, ob: int) -> np.ndarray:
    """(O, C, KH, KW) uint16 -> (O//ob, C//cb, KH, KW, cb//2, ob, 2): per input-channel pair,
    `ob` output channels of 2 (AMX-BF16's B tile rows)."""
    o, c, kh, kw = w.shape
    v = w.reshape(o // ob, ob, c // cb, cb // PAIR, PAIR, kh, kw)
    return np.ascontiguousarray(v.transpose(0, 2, 5, 6, 3, 1, 4)).astype(np.uint16)


def conv2d_nchwc_bf16(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple, kernel: tuple) -> te.Tensor:
    """float32 sum over taps and channel pairs of decode(data) * decode(weight), zero padding.
    `kernel` is the conv's (KH, KW); `weight` is packed from `phase_weight` of it, so a strided
    conv runs as a unit-stride one on its input's phases (one stage that pads and splits)."""
    n, cc, h, w, cb = data.shape
    oc, pcc, th, tw, pairs, lanes, _ = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kernel[0]) // sh + 1
    ow = (w + 2 * pw - kernel[1]) // sw + 1
    ps = phases(kernel, stride)
    if ph or pw or (sh, sw) != (1, 1):
        def phase_of(k):   # the phase of channel block k, as expressions (the phases are few)
            py = px = tir.const(0, "int32")
            for j, (qy, qx) in enumerate(ps[1:], 1):
                py = tir.if_then_else(k // cc == j, qy, py)
                px = tir.if_then_else(k // cc == j, qx, px)
            return py, px

        def value(b, k, y, x, i):
            py, px = phase_of(k)
            yy, xx = y * sh + py - ph, x * sw + px - pw
            return tir.if_then_else(tir.all(yy >= 0, yy < h, xx >= 0, xx < w),
                                    data[b, k % cc, yy, xx, i], tir.const(0, "uint16"))
        src = te.compute((n, len(ps) * cc, oh + th - 1, ow + tw - 1, cb), value, name=BPAD16_BLOCK)
    else:
        src = data
    rc = te.reduce_axis((0, pcc), "rc")
    ry = te.reduce_axis((0, th), "ry")
    rx = te.reduce_axis((0, tw), "rx")
    rg = te.reduce_axis((0, pairs), "rg")
    ri = te.reduce_axis((0, PAIR), "ri")
    return te.compute((n, oc, oh, ow, lanes), lambda b, o, y, x, v: te.sum(
        decode(src[b, rc, y + ry, x + rx, rg * PAIR + ri]) * decode(weight[o, rc, ry, rx, rg, v, ri]),
        axis=[rc, ry, rx, rg, ri]), name=BCONV16_BLOCK)


def conv2d_nchwc_decoded(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple) -> te.Tensor:
    """The bf16 conv on a target without a bf16 dot product: conv2d.py's float32 conv (and its
    schedules) of the decoded bf16 input, with float32 weights that hold bf16 values
    (`conv2d.pack_weight` of the decoded weights). Every product is exact, as on AMX-BF16, and
    the sums are float32: the numbers of the tiles up to the order of the sums, at about the
    speed of fp32's direct convs (decoding each weight where it is used instead ran 3.6x slower
    than fp32 on a Zen 3)."""
    # decoded once per element into the padded copy the float32 schedules stage (a 1x1 conv
    # decoding where it reads ran 1.3x slower than fp32 on a Zen 3)
    src = padded_copy(data, *padding, read=lambda *i: decode(data[i]), dtype="float32")
    return conv2d_nchwc(src, weight, stride, (0, 0))


def pack_weight_wmma(w: np.ndarray) -> np.ndarray:
    """(O, C, KH, KW) bf16 patterns -> (O, KH, KW, C): each output channel's taps in the order of
    the implicit GEMM's K (`conv2d_nchwc_wmma`), contiguous."""
    return np.ascontiguousarray(np.asarray(w).transpose(0, 2, 3, 1)).astype(np.uint16)


def conv2d_nchwc_wmma(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple, ob: int) -> te.Tensor:
    """The bf16 conv for CUDA tensor cores (sm_80+) as an implicit GEMM: data (N, C//cb, H, W, cb)
    and weight (O, KH, KW, C) (`pack_weight_wmma`) hold bf16 patterns; both are read as
    `bfloat16` and the float32 sum casts each before the product, the matmul form TVM's WMMA rule
    tensorizes (kernels/cuda_wmma.py): bf16 x bf16 products, float32 accumulation; output
    (N, O//ob, OH, OW, ob). K runs over (ky, kx, input channel), the channel innermost, so the
    staging of a K tile reads runs of contiguous channels of the input and of each output
    channel's weights."""
    n, cc, h, w, cb = data.shape
    ph, pw = padding
    src = padded_copy(data, ph, pw, read=lambda *i: tir.reinterpret("bfloat16", data[i]), dtype="bfloat16")
    # the weights as read per sample: the batch is then an axis of all three operands, the
    # rule's batch of matmuls (grid z), not part of I (a symbolic batch in I breaks its padding)
    wt = te.compute((n,) + tuple(weight.shape), lambda b, *i: tir.reinterpret("bfloat16", weight(*i)),
                    name="reidc_weight_bf16")
    return implicit_gemm(src, wt, stride, ob, "float32", WMMA_BLOCK)


def to_bf16_nchwc(x: te.Tensor, cb_out: int) -> te.Tensor:
    """float32 (N, C//cb, H, W, cb) -> bf16 patterns (N, C//cb_out, H, W, cb_out): rounding, and
    a change of channel block where cb_out differs (the AMX kernel reads 64-channel rows)."""
    n, cc, h, w, cb = x.shape
    c = cc * cb
    if int(cb) == cb_out:
        return te.compute(x.shape, lambda *i: encode(x(*i)), name="reidc_to_bf16")
    return te.compute((n, c // cb_out, h, w, cb_out), lambda b, k, y, z, i: encode(
        x[b, (k * cb_out + i) // cb, y, z, (k * cb_out + i) % cb]), name="reidc_to_bf16")
