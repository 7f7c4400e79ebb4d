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


HARD_SIGMOID = declare(OpSpec(
    "hard_sigmoid", "min(max(x + 3, 0), 6) / 6 (PyTorch's Hardsigmoid: MobileNetV3's and the hard channel gates).",
    lambda v, n: (np.clip(np.asarray(v[0], np.float64) + 3.0, 0.0, 6.0) / 6.0).astype(np.float32)))

def _check_scale_channels(n, ins, modal):
    x, g = ins[0].shape, ins[1].shape
    if len(x) != 4 or tuple(g) != tuple(x[:2]):
        return f"scale_channels needs x (N, C, H, W) and gate (N, C), got {x} and {g}"
    return None


SCALE_CHANNELS = declare(OpSpec(
    "scale_channels", "x[n, c, h, w] * gate[n, c]: a per-sample channel gate (squeeze-excitation).",
    lambda v, n: (np.asarray(v[0]) * np.asarray(v[1])[:, :, None, None]).astype(np.float32),
    inputs=("x", "gate"), check=_check_scale_channels))


def _check_clamp(n, ins, modal):
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    if lo is None and hi is None:
        return "clamp needs min, max or both"
    if lo is not None and hi is not None and not lo <= hi:
        return f"min {lo} is above max {hi}"
    return None


def _clamp_ref(v, n):
    x = np.asarray(v[0], np.float32)
    lo, hi = n.attrs.get("min"), n.attrs.get("max")
    return np.clip(x, -np.inf if lo is None else np.float32(lo), np.inf if hi is None else np.float32(hi))


CLAMP = declare(OpSpec(
    "clamp", "min(max(x, min), max); either bound may be absent (ReLU6, hardtanh, clamp).",
    _clamp_ref, attrs={"min": Attr("float", "lower bound", required=False),
                       "max": Attr("float", "upper bound", required=False)},
    check=_check_clamp))


def _check_2d(n, ins, modal):
    return None if len(ins[0].shape) == 2 else f"expects (N, C) features, got {ins[0].shape}"


L2_NORMALIZE = declare(OpSpec(
    "l2_normalize", "x / max(||x||_2, eps) over the channels of (N, C) features (F.normalize).",
    lambda v, n: (np.asarray(v[0], np.float64) / np.maximum(
        np.linalg.norm(np.asarray(v[0], np.float64), axis=1, keepdims=True), n.attrs["eps"])).astype(np.float32),
    attrs={"eps": Attr("float", "the smallest norm divided by")}, check=_check_2d))


def _check_concat(n, ins, modal):
    if any(len(t.shape) != 2 for t in ins) or len({t.shape[0] for t in ins}) != 1:
        return f"concat joins (N, C) features, got {[t.shape for t in ins]}"
    return None


CONCAT = declare(OpSpec(
    "concat", "(N, Ca) and (N, Cb) features joined along the channels: (N, Ca + Cb).",
    lambda v, n: np.concatenate([np.asarray(a, np.float32) for a in v], axis=1),
    inputs=("a", "b"), shape=lambda ins, a: (ins[0][0], ins[0][1] + ins[1][1]), check=_check_concat))


MULTIPLY = declare(OpSpec(
    "multiply", "a * b, same shapes.", lambda v, n: (np.asarray(v[0]) * np.asarray(v[1])).astype(np.float32),
    inputs=("a", "b"), check=_check_add))
