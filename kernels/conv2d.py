"""conv2d in a blocked channel layout (NCHW[x]c) and its x86 schedule.

Layouts:
  data    (N, C // cb, H, W, cb)                     cb: the producer's channel block
  weight  (O // ob, C // cb, KH, KW, cb, ob)         packed at compile time by `pack_weight`
  or per-modality weight (2, O // ob, C // cb, KH, KW, cb, ob) with an int32 modality (N,)
  output  (N, O // ob, OH, OW, ob)
A grouped conv's weight (O, C/groups, KH, KW) packs the same way, to (O // ob, C/groups // cb,
KH, KW, cb, ob), with cb dividing C/groups and ob dividing O/groups: each output block then lies
in one group and reads that group's input blocks only.
The compute is plain TE; the schedule is a dlight rule that TVM applies after it has fused
the conv with its elementwise epilogue (bias, per-sample affine, residual add, ReLU).
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

CONV_BLOCK = "reidc_conv2d_nchwc"
PAD_BLOCK = "reidc_pad"


def pack_weight(w: np.ndarray, cb: int, ob: int) -> np.ndarray:
    """(O, C, KH, KW) -> (O//ob, C//cb, KH, KW, cb, ob); a leading modality axis is kept."""
    lead = w.shape[:-4]
    o, c, kh, kw = w.shape[-4:]
    v = w.reshape(lead + (o // ob, ob, c // cb, cb, kh, kw))
    k = len(lead)
    perm = tuple(range(k)) + (k, k + 2, k + 4, k + 5, k + 3, k + 1)
    return np.ascontiguousarray(v.transpose(perm))


def conv2d_nchwc(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple,
                 modality: te.Tensor | None = None, pad_value: te.Tensor | None = None) -> te.Tensor:
    """Direct convolution; `modality` selects a per-sample weight set when weight is 7-D;
    `pad_value` (C,): the border's value per input channel (default zeros)."""
    n, cc, h, w, cb = data.shape
    oc, _, kh, kw, _, ob = weight.shape[-6:]
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    if ph or pw:
        src = te.compute((n, cc, h + 2 * ph, w + 2 * pw, cb), lambda b, c, y, x, i: tir.if_then_else(
            tir.all(y >= ph, y < h + ph, x >= pw, x < w + pw), data[b, c, y - ph, x - pw, i],
            tir.const(0.0, data.dtype) if pad_value is None else pad_value[c * cb + i]), name=PAD_BLOCK)
    else:
        src = data
    ic = te.reduce_axis((0, cc * cb), "ic")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")

    def wt(b, o, c, y, x, i, v):
        return weight[o, c, y, x, i, v] if modality is None else weight[modality[b], o, c, y, x, i, v]

    return te.compute((n, oc, oh, ow, ob), lambda b, o, y, x, v: te.sum(
        src[b, ic // cb, y * sh + ry, x * sw + rx, ic % cb] * wt(b, o, ic // cb, ry, rx, ic % cb, v),
        axis=[ic, ry, rx]), name=CONV_BLOCK)


def padded_copy(data: te.Tensor, ph: int, pw: int, read=None, dtype: str | None = None) -> te.Tensor:
    """data (N, C//cb, H, W, cb), or `read(b, c, y, x, i)` of it in `dtype` (e.g. a decode), with
    ph zero rows and pw zero columns on each side: the padding stage the schedules find by its
    name, made even where there is no border."""
    n, cc, h, w, cb = data.shape
    read = read or (lambda *i: data[i])
    zero = tir.const(0, dtype or data.dtype)

    def value(b, c, y, x, i):
        return tir.if_then_else(tir.all(y >= ph, y < h + ph, x >= pw, x < w + pw), read(b, c, y - ph, x - pw, i), zero)
    return te.compute((n, cc, h + 2 * ph, w + 2 * pw, cb), value, name=PAD_BLOCK)


def implicit_gemm(src: te.Tensor, wt: te.Tensor, stride: tuple, ob: int, acc: str, name: str) -> te.Tensor:
    """A conv as the matmul tensor cores take: src (N, C//cb, HP, WP, cb) already padded, wt
    (N, O, KH, KW, C) read per sample (the batch is an axis of all three operands: a batch of
    matmuls); out (N, O//ob, OH, OW, ob) in `acc`, each operand cast to it before the product.
    K runs over (ky, kx, input channel), the channel innermost, so staging a K tile reads runs of
    contiguous input channels and of each output channel's weights."""
    n, cc, hp, wp, cb = src.shape
    _, oc, kh, kw, _ = wt.shape
    sh, sw = stride
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    ic = te.reduce_axis((0, cc * cb), "ic")
    return te.compute((n, oc // ob, oh, ow, ob), lambda b, o, y, x, v: te.sum(
        src[b, ic // cb, y * sh + ry, x * sw + rx, ic % cb].astype(acc)
        * wt[b, o * ob + v, ry, rx, ic].astype(acc), axis=[ry, rx, ic]), name=name)


def _zero_padded(data: te.Tensor, ph: int, pw: int) -> te.Tensor:
    """`padded_copy` of data, or data itself where there is no border."""
    return padded_copy(data, ph, pw) if ph or pw else data


DEPTHWISE_BLOCK = "reidc_depthwise_nchwc"


def pack_depthwise(w: np.ndarray, cb: int) -> np.ndarray:
    """(C, 1, KH, KW) -> (C//cb, KH, KW, cb)."""
    c, _, kh, kw = w.shape
    return np.ascontiguousarray(w.reshape(c // cb, cb, kh, kw).transpose(0, 2, 3, 1))


def depthwise_nchwc(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple) -> te.Tensor:
    """Depthwise convolution in the blocked layout: each channel lane with its own kernel."""
    n, cc, h, w, cb = data.shape
    _, kh, kw, _ = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    src = _zero_padded(data, ph, pw)
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute((n, cc, oh, ow, cb), lambda b, c, y, x, v: te.sum(
        src[b, c, y * sh + ry, x * sw + rx, v] * weight[c, ry, rx, v], axis=[ry, rx]), name=DEPTHWISE_BLOCK)


GROUP_CONV_BLOCK = "reidc_group_conv2d_nchwc"


def group_conv2d_nchwc(data: te.Tensor, weight: te.Tensor, stride: tuple, padding: tuple, groups: int) -> te.Tensor:
    """Grouped convolution: `weight` is `pack_weight` of (O, C/groups, KH, KW) with cb dividing
    C/groups and ob dividing O/groups; output block o reads the input blocks g * (C/groups // cb)
    onwards of its group g = o // (O/groups // ob). The loops are conv2d_nchwc's (n, o, y, x, v;
    ic, ry, rx), so the conv schedules take it as they take that."""
    n, _, h, w, cb = data.shape
    oc, icc, kh, kw, _, ob = weight.shape
    per_group = int(oc) // groups   # output blocks per group
    (sh, sw), (ph, pw) = stride, padding
    oh = (h + 2 * ph - kh) // sh + 1
    ow = (w + 2 * pw - kw) // sw + 1
    src = _zero_padded(data, ph, pw)
    ic = te.reduce_axis((0, icc * cb), "ic")
    ry = te.reduce_axis((0, kh), "ry")
    rx = te.reduce_axis((0, kw), "rx")
    return te.compute((n, oc, oh, ow, ob), lambda b, o, y, x, v: te.sum(
        src[b, o // per_group * icc + ic // cb, y * sh + ry, x * sw + rx, ic % cb]
        * weight[o, ic // cb, ry, rx, ic % cb, v], axis=[ic, ry, rx]), name=GROUP_CONV_BLOCK)
