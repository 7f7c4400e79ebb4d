"""Element-wise ops: activations, sign and the residual add."""
from __future__ import annotations

import numpy as np

from ..spec import Attr, OpSpec, check_vectors, declare
from . import refmath

RELU = declare(OpSpec(
    "relu", "max(x, 0).", lambda v, n: np.maximum(v[0], np.float32(0))))

PRELU = declare(OpSpec(
    "prelu", "x where x >= 0, else x * slope[c].",
    lambda v, n: np.where(v[0] >= 0, v[0], v[0] * refmath.pick(n.attrs["slope"], None, v[0].ndim)).astype(np.float32),
    attrs={"slope": Attr("array", "(C,)")},
    check=lambda n, ins, modal: check_vectors(n, ("slope",), ins[0].shape[1], False)))

SIGN = declare(OpSpec(
    "sign", "+1 where x >= 0, else -1 (sign(0) = +1, as Larq).",
    lambda v, n: np.where(v[0] >= 0, np.float32(1), np.float32(-1)),
    attrs={"site": Attr("str", "the name verification reports its sign flips under", required=False)}))


def _check_add(n, ins, modal):
    if ins[0].shape != ins[1].shape:
        return f"add needs two inputs of one shape, got {[t.shape for t in ins]}"
    return None


ADD = declare(OpSpec(
    "add", "a + b, same shapes.", lambda v, n: (np.asarray(v[0]) + np.asarray(v[1])).astype(np.float32),
    inputs=("a", "b"), check=_check_add))


SIGMOID = declare(OpSpec(
    "sigmoid", "1 / (1 + exp(-x)) (the channel gate of squeeze-excitation blocks).",
    lambda v, n: (1.0 / (1.0 + np.exp(-np.asarray(v[0], np.float64)))).astype(np.float32)))


def _check_scale_channels(n, ins, modal):
    x, g = ins[0].shape, ins[1].shape
    if len(x) != 4 or tuple(g) != tuple(x[:2]):
        return f"scale_channels needs x (N, C, H, W) and gate (N, C), got {x} and {g}"
    return None


SCALE_CHANNELS = declare(OpSpec(
    "scale_channels", "x[n, c, h, w] * gate[n, c]: a per-sample channel gate (squeeze-excitation).",
    lambda v, n: (np.asarray(v[0]) * np.asarray(v[1])[:, :, None, None]).astype(np.float32),
    inputs=("x", "gate"), check=_check_scale_channels))
