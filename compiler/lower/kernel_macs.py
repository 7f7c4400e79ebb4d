"""What a conv kernel computes, from TVM's fused-function name and its weight and output shapes
(pure: shapes in, counts out). Both the profile (shapes of the arrays a run passed) and the
kernel listing (shapes of the Relax module, without building it) count MACs here."""
from __future__ import annotations

import numpy as np


PACKS_OUTPUT = "_bitpack"   # a binary conv that also bit-packs its output (fuse_bitpack.py) ends so


def output_index(name: str) -> int:
    """Where a conv kernel's output is among its arguments: last, or before the bits of a conv
    that also bit-packs it (its arguments end (output, bits))."""
    return -2 if name.endswith(PACKS_OUTPUT) else -1


def kernel_kind(name: str) -> str | None:
    """The unit a fused function's anchor runs on, from TVM's fused-function name."""
    for key, kind in (("bconv2d", "binary"), ("conv2d_int8", "int8"), ("conv2d_bf16", "bf16"),
                      ("depthwise_conv2d", "fp32"), ("group_conv2d", "fp32"), ("conv2d", "fp32")):
        if key in name:
            return kind
    return None


def per_modality(kind: str, weight_shape: tuple[int, ...]) -> bool:
    """Whether a conv's weight stacks two modality sets (a leading axis of 2): fp32 NCHWc
    weights are 6-D for one set; int8 7-D ("dot4" (.., ob, 4), "lanes" (.., 4, ob)), or 4-D
    (O, KH, KW, C) for CUDA's tensor cores; bf16 and binary weights are never stacked."""
    nd = len(weight_shape)
    if kind == "fp32":
        return nd == 7
    if kind == "int8":
        return nd in (5, 8)
    return False


def conv_macs(name: str, weight_shape: tuple[int, ...], weight_dtype: str, out_shape: tuple[int, ...]) -> int | None:
    """Multiply-accumulates of one call of a conv kernel (None for other kernels and for an
    output not in the blocked (N, C/cb, OH, OW, cb) layout): the weight's elements (a binary
    weight's words x their bits; one modality's set where a weight stacks two) x the output's
    pixels x its batch."""
    kind = kernel_kind(name)
    if kind is None or len(out_shape) != 5:
        return None
    n, _, oh, ow, _ = (int(v) for v in out_shape)
    count = int(np.prod([int(v) for v in weight_shape]))
    if kind == "binary":
        count *= np.dtype(weight_dtype).itemsize * 8
    if "depthwise" not in name and per_modality(kind, weight_shape):
        count //= 2
    if "winograd" in name:   # U is (m + 2, m + 2, O // ob, C, ob): the direct conv's 3 x 3 MACs, so rates compare
        t = int(weight_shape[0])
        count = count // (t * t) * 9
    return count * n * oh * ow
