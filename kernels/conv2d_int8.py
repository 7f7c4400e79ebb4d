"""int8 conv2d in the blocked channel layout: uint8 activations x int8 weights -> exact int32.

Layouts:
  data    (N, C // cb, H, W, cb) uint8, cb a multiple of 4   (the producer's channel block)
  weight  (O // ob, C // cb, KH, KW, cb // 4, ob, 4) int8   packed by `pack_weight_int8`
  or per-modality weight (2, O // ob, ...) with an int32 modality (N,)
  output  (N, O // ob, OH, OW, ob) int32; ob = 64 where O allows (`output_block`), else 16
Sixteen output channels x 4 input channels is what one `vpdpbusd` (AVX-512 VNNI) computes: 16
int32 lanes += four u8 x s8 products each; with cb = 64 and stride 1, (up to 16 pixels) x 16
output channels x 64 input channels is one AMX `tdpbusd` on tiles loaded straight from these
layouts. The schedule (cpu_schedules.py) tensorizes with AMX, else VNNI where the target has
them, else on AVX2 with vpmaddubsw + vpmaddwd (8 lanes x 4 with weights within [-63, 63], x 8
with [-31, 31]), and lets
LLVM vectorise the same loops elsewhere. Padding takes the activations' zero point, so a padded tap contributes
exactly what a zero input would after the zero-point correction (`weight_sums`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import te, tirx as tir

from .conv2d import implicit_gemm

QCONV_BLOCK = "reidc_conv2d_int8"
QPAD_BLOCK = "reidc_pad_u8"
QWMMA_BLOCK = "reidc_conv2d_int8_wmma"
FOLD_BLOCK = "reidc_fold_columns"
LANES, GROUP = 16, 4   # output channels per block, input channels per dot-product group


def output_block(o: int) -> int:
    """Output channels per block: 64 where they divide (one AMX tile row of the next layer's
    uint8 input), else 16 (one vpdpbusd)."""
    return 64 if o % 64 == 0 else LANES


def pack_weight_int8(w: np.ndarray, cb: int, ob: int = LANES, order: str = "dot4") -> np.ndarray:
    """(O, C, KH, KW) int8 -> (O//ob, C//cb, KH, KW, cb//4) + the group's layout: (ob, 4) for
    "dot4", (4, ob) for "lanes"; a leading modality axis is kept."""
    lead = w.shape[:-4]
    o, c, kh, kw = w.shape[-4:]
    v = w.reshape(lead + (o // ob, ob, c // cb, cb // GROUP, GROUP, kh, kw))
    k = len(lead)
    # axes after lead: 0 ob-block, 1 lane, 2 c-block, 3 group, 4 in-group, 5 kh, 6 kw
    inner = {"dot4": (1, 4), "lanes": (4, 1)}[order]
    perm = tuple(range(k)) + tuple(k + a for a in (0, 2, 5, 6, 3) + inner)
    return np.ascontiguousarray(v.transpose(perm)).astype(np.int8)


def weight_sums(w: np.ndarray) -> np.ndarray:
    """Per output channel, the sum of its int8 weights as int32: (O,) or (2, O)."""
    return w.astype(np.int32).sum(axis=(-3, -2, -1))


@dataclass(frozen=True)
class Int8Flavour:
    """How the int8 conv's arithmetic is written for an ISA (the lowering picks it per target):
    signed: inputs enter as data - 128 in int8 (dot products of s8 x s8: ARM sdot, CUDA's int8
      tensor cores), so the sum
      is sum(data * weight) - 128 * sum(weight), which the lowering adds back;
    order: how a group's 4 input channels x `ob` lanes of weights are stored: "dot4" (ob, 4),
      a 4-way dot product's operand (vpdpbusd, tdpbusd, sdot; AVX2's vpmaddubsw + vpmaddwd);
      "lanes" (4, ob), plain SIMD;
    weight_max: the weights' bound, |w| <= weight_max: 63 where the dot product is AVX2's
      vpmaddubsw, whose int16 pair sums saturate above 32767 (2 * 255 * 63 = 32130 fits,
      2 * 255 * 127 does not); the lowering refuses a weight beyond it, and the schedule
      uses vpmaddubsw only for kernels annotated with weight_max <= 63;
    paired_max: weights within it let the dot product add two groups' int16 pair sums before
      widening (AVX2: 31, 2 * 2 * 255 * 31 = 31620 fits int16; two vpmaddubsw per vpmaddwd,
      3 multiply uops per 64 products instead of 4); what the int8 pass quantizes to by
      default; the lowering annotates a conv whose weights are within it with weight_max =
      paired_max, and the schedule pairs the groups of kernels so annotated; 0: no such step;
    row_tiles: the dot product takes 16-row tiles (AMX): a stride-1 conv on a map narrower
      than 16 (OW 8, 4, 2) reads its padded input copied once per column tap,
      src[c, kx, y, x] = padded[c, y, x + kx], so for every tap whole image rows of OW pixels
      are consecutive and 16 // OW of them fill a tile (cpu_schedules.py);
    narrow_by_add: a quantize's float -> uint8 is one float add and a truncating narrow
      (narrow_u8.py; AVX-512's vpmovdb), not rint + convert + an int32 clamp;
    tensor_cores: CUDA's s8 x s8 WMMA (`conv2d_nchwc_int8_wmma`, kernels/cuda_int8_wmma.py)
      instead of dp4a; always signed."""

    signed: bool = False
    order: str = "dot4"      # the 4 input channels x lanes of a weight group (`pack_weight_int8`)
    weight_max: int = 127    # the int8 pass quantizes weights to [-weight_max, weight_max] at most
    paired_max: int = 0      # ... and by default to [-paired_max, paired_max], where non-zero
    row_tiles: bool = False  # AMX: narrow maps' padded inputs laid out per column tap
    narrow_by_add: bool = False   # AVX-512: quantize narrows x + 1.5 * 2^23's low byte
    tensor_cores: bool = False    # CUDA: implicit-GEMM convs on s8 WMMA fragments


def column_fold(stride: tuple, kernel: tuple, cb: int) -> tuple[int, int] | None:
    """(row taps, column taps per phase) where a strided conv on `cb`-channel input blocks can
    fold its stride phases, column taps and channels into one 64-byte row (the image's stem:
    7x7 stride 2 on 4 channels: 2 x 2 phases x 4 column taps x 4 channels), else None."""
    (sh, sw), (kh, kw) = stride, kernel
    kyq, kxq = -(-kh // sh), -(-kw // sw)
    return (kyq, kxq) if (sh, sw) != (1, 1) and sh * sw * kxq * cb == 64 else None


def fold_weight(w: np.ndarray, stride: tuple, kyq: int, kxq: int) -> np.ndarray:
    """(O, C, KH, KW) -> (O, 64, kyq, 1): the weight of tap (ky' sh + py, kx' sw + px), channel c
    at input channel ((py sw + px) kxq + kx') C + c of row tap ky'; zero where the tap is past
    the kernel. A conv of these over `fold_columns` equals the strided conv."""
    o, c, kh, kw = w.shape
    sh, sw = stride
    out = np.zeros((o, sh, sw, kxq, c, kyq), w.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out[:, ky % sh, kx % sw, kx // sw, :, ky // sh] = w[:, :, ky, kx]
    return out.reshape(o, sh * sw * kxq * c, kyq, 1)


def fold_columns(data: te.Tensor, stride: tuple, padding: tuple, kernel: tuple, zero_point: int) -> te.Tensor:
    """uint8 (N, 1, H, W, cb) -> (N, 1, OH + kyq - 1, OW, 64): row yy, pixel x, channel
    ((py sw + px) kxq + kx') cb + c holds the padded input at (yy sh + py, (x + kx') sw + px),
    so the strided conv is a unit-stride (kyq x 1) conv on 64-channel rows (`fold_weight`):
    AMX's tile rows. Padding takes the zero point, as in conv2d_nchwc_int8."""
    n, _, h, w, cb = data.shape
    (sh, sw), (ph, pw), (kh, kw) = stride, padding, kernel
    kyq, kxq = column_fold(stride, kernel, int(cb))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1

    def value(b, z, yy, x, k):
        c, rest = k % cb, k // cb
        kx, phase = rest % kxq, rest // kxq
        y, xx = yy * sh + phase // sw - ph, (x + kx) * sw + phase % sw - pw
        return tir.if_then_else(tir.all(y >= 0, y < h, xx >= 0, xx < w), data[b, z, y, xx, c],
                                tir.const(zero_point, data.dtype))
    return te.compute((n, 1, oh + kyq - 1, ow, 64), value, name=FOLD_BLOCK)


def _padded(data: te.Tensor, padding: tuple, zero_point: int, signed: bool):
    """The uint8 input at padded coordinates (b, c, y, x, i), its border the zero point; signed:
    as int8 q - 128 (border zero_point - 128), for s8 x s8 dot products."""
    _, _, h, w, _ = data.shape
    ph, pw = padding
    fill = tir.const(zero_point - 128 if signed else zero_point, "int8" if signed else data.dtype)

    def value(b, c, y, x, i):
        v = data[b, c, y, x, i]
        return (v.astype("int32") - 128).astype("int8") if signed else v

    def padded(b, c, y, x, i):
        return tir.if_then_else(tir.all(y >= ph, y < h + ph, x >= pw, x < w + pw), value(b, c, y - ph, x - pw, i), fill)
    return padded


def conv2d_nchwc_int8(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple, zero_point: int,
                      modality: te.Tensor | None = None, flavour: Int8Flavour = Int8Flavour()) -> te.Tensor:
    """int32 sum over taps and channels of data * weight, padding with `zero_point` (see
    Int8Flavour for the ISA variants)."""
    signed = flavour.signed
    n, cc, h, w, cb = data.shape
    order = flavour.order
    oc, _, kh, kw, groups = weight.shape[-7:-2]
    lanes = weight.shape[-2] if order == "dot4" else weight.shape[-1]
    group = GROUP
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    padded = _padded(data, padding, zero_point, signed)
    if sh > 1 or sw > 1:
        # a strided conv reads its input split into phases: src[b, c, py, px, yq, xq] is the
        # padded input at (yq * sh + py, xq * sw + px), so a tap (ry, rx) reads phase
        # (ry % sh, rx % sw) at (y + ry // sh, x + rx // sw): consecutive output pixels read
        # consecutive pixels (one AMX tile load of rows 64 bytes apart); only the phases the
        # taps use are made (a 1x1 stride-2 conv copies a quarter of its input)
        nph, npw = min(kh, sh), min(kw, sw)
        src = te.compute((n, cc, nph, npw, oh + (kh - 1) // sh, ow + (kw - 1) // sw, cb),
                         lambda b, c, py, px, yq, xq, i: padded(b, c, yq * sh + py, xq * sw + px, i), name=QPAD_BLOCK)

        def tap(b, c, y, x, ry, rx, i):
            return src[b, c, ry % sh, rx % sw, y + ry // sh, x + rx // sw, i]
    elif flavour.row_tiles and kw > 1 and ow < 16 and 16 % ow == 0:
        src = te.compute((n, cc, kw, h + 2 * ph, ow, cb), lambda b, c, rx, y, x, i: padded(b, c, y, x + rx, i),
                         name=QPAD_BLOCK)

        def tap(b, c, y, x, ry, rx, i):
            return src[b, c, rx, y + ry, x, i]
    else:
        src = te.compute((n, cc, h + 2 * ph, w + 2 * pw, cb), padded, name=QPAD_BLOCK) if ph or pw or signed else data

        def tap(b, c, y, x, ry, rx, i):
            return src[b, c, y + ry, x + rx, i]
    rc = te.reduce_axis((0, cc), "rc")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    rg = te.reduce_axis((0, groups), "rg")
    ri = te.reduce_axis((0, group), "ri")

    def wt(b, o, c, y, x, g, v, i):
        last = {"dot4": (v, i), "lanes": (i, v)}[order]
        return weight[(o, c, y, x, g) + last] if modality is None else weight[(modality[b], o, c, y, x, g) + last]

    def product(a, b):
        return a.astype("int32") * b.astype("int32")

    return te.compute((n, oc, oh, ow, lanes), lambda b, o, y, x, v: te.sum(
        product(tap(b, rc, y, x, ry, rx, rg * group + ri), wt(b, o, rc, ry, rx, rg, v, ri)),
        axis=[rc, ry, rx, rg, ri]), name=QCONV_BLOCK,
        attrs={"reidc_int8_order": order, "reidc_int8_signed": int(signed), "reidc_int8_weight_max": flavour.weight_max})


def pack_weight_gemm(w: np.ndarray) -> np.ndarray:
    """(O, C, KH, KW) int8 -> (O, KH, KW, C): each output channel's taps in the order of the
    implicit GEMM's K (`conv2d_nchwc_int8_wmma`), contiguous; a leading modality axis is kept."""
    w = np.asarray(w, np.int8)
    return np.ascontiguousarray(np.moveaxis(w, -3, -1))


def conv2d_nchwc_int8_wmma(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple, zero_point: int,
                           ob: int, modality: te.Tensor | None = None) -> te.Tensor:
    """The int8 conv for CUDA tensor cores as an implicit GEMM of s8 x s8 -> s32: data
    (N, C//cb, H, W, cb) uint8 enters as data - 128 (int8; padding as zero_point - 128, so the
    lowering subtracts (zero_point - 128) * sum(w), exact), weight (O, KH, KW, C) int8
    (`pack_weight_gemm`; or (2, O, KH, KW, C) with an int32 modality (N,), the sample's weight
    set read per sample); output (N, O//ob, OH, OW, ob) int32. The int32 sum casts each operand
    before the product: the matmul form the WMMA rule tensorizes. K runs over (ky, kx, input
    channel), the channel innermost, so a K tile's staging reads runs of contiguous bytes of the
    input and of each output channel's weights. The weights are read per sample, so the batch is
    an axis of all three operands (the rule's batch of matmuls, grid z; a symbolic batch inside
    I would break its padding)."""
    n, cc, h, w, cb = data.shape
    oc, kh, kw, _ = weight.shape[-4:]
    ph, pw = padding
    src = te.compute((n, cc, h + 2 * ph, w + 2 * pw, cb), _padded(data, padding, zero_point, True), name=QPAD_BLOCK)
    wt = te.compute((n, oc, kh, kw, cc * cb), lambda b, *i: weight(*i) if modality is None else weight(modality[b], *i),
                    name="reidc_weight_s8")
    return implicit_gemm(src, wt, stride, ob, "int32", QWMMA_BLOCK)
