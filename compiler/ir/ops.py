"""The closed op set of reidc's IR.

Layout is NCHW for 4-D tensors; the batch dimension is the symbol "N".
Modality codes: 0 visible, 1 infrared. "Per-modality" constants stack the visible and the
infrared value along a new leading axis of size 2 and are selected per sample by the
graph's `modality` input.
"""
from enum import Enum


class Op(str, Enum):
    INPUT = "input"              # attrs: name. The images (N,C,H,W) or the modality vector (N,) int32
    CONV2D = "conv2d"            # inputs: x[, modality]; attrs: weight (O,I,kh,kw) or (2,O,I,kh,kw), bias?, stride, padding
    BATCH_NORM = "batch_norm"    # inputs: x[, modality]; attrs: eps, params {modality: (gamma, beta, mean, var)}
    AFFINE = "affine"            # inputs: x[, modality]; attrs: scale, bias, (C,) or per-modality (2,C)
    RELU = "relu"
    ADD = "add"                  # inputs: a, b (same shape)
    MAXPOOL2D = "maxpool2d"      # attrs: kernel, stride, padding
    GLOBAL_AVGPOOL = "global_avgpool"  # (N,C,H,W) -> (N,C)
    DENSE = "dense"              # attrs: weight (O,I), bias?
    SIGN = "sign"                # +1 where x >= 0 else -1 (sign(0) = +1, as Larq)
    PRELU = "prelu"              # attrs: slope (C,)
    AVGPOOL2D = "avgpool2d"      # attrs: kernel, stride (no padding)
    # binarization, explicit as in Larq Compute Engine:
    BITPACK = "bitpack"          # inputs: x[, modality] float -> dtype "bits" (N,C,H,W): bit = 1 means -1.
                                 # attrs: threshold, flip ((C,) or (2,C)): bit = x > thr if flip else x < thr
    BCONV2D = "bconv2d"          # inputs: packed bits[, modality]; attrs: signs (O,C,kh,kw) int8 +-1, stride,
                                 # padding (zero padding of the +-1 input, as PyTorch), scale, bias ((O,) or (2,O)):
                                 # out = dot * scale + bias, dot = exact integer sum of sign products;
                                 # after bitpack_weights also packed (O,kh,kw,words) and word

    def __str__(self) -> str:
        return self.value


ELEMENTWISE = frozenset({Op.RELU, Op.ADD, Op.AFFINE, Op.SIGN, Op.PRELU})
BITS = "bits"  # dtype of a bit-packed tensor; its shape stays the logical (N, C, H, W)
#: BN placements that carry one set of statistics, or one per modality
SHARED, SPLIT = "shared", "split"
