"""Pooling: windowed max and average, and the global poolings that end a backbone."""
from __future__ import annotations

import numpy as np

from ..spec import Attr, OpSpec, declare, window_out
from . import refmath


def _ceil_out(size: int, k: int, s: int, p: int) -> int:
    """PyTorch's ceil_mode: a last partial window counts if it starts inside the input or its
    left padding."""
    out = -(-(size + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= size + p else out


def _pool_shape(ins, a, padded):
    x, k, s = ins[0], a["kernel"], a["stride"]
    p = a["padding"] if padded else (0, 0)
    if a.get("ceil_mode"):
        return x[:2] + tuple(_ceil_out(x[2 + d], k[d], s[d], p[d]) for d in (0, 1))
    return x[:2] + tuple(window_out(x[2 + d], k[d], s[d], p[d]) for d in (0, 1))


def _maxpool_ref(v, n):
    x, (kh, kw), (sh, sw), (ph, pw) = np.asarray(v[0]), n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"]
    oh, ow = n.shape[2:]
    # ceil_mode's last windows reach past the padded input: more -inf on the bottom and right
    eh, ew = max(0, (oh - 1) * sh + kh - x.shape[2] - 2 * ph), max(0, (ow - 1) * sw + kw - x.shape[3] - 2 * pw)
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)), constant_values=-np.inf)
    return refmath.windows(x, (kh, kw), (sh, sw), (0, 0))[:, :, :oh, :ow].max(axis=(4, 5))


def _four_d(n, ins, modal):
    return None if len(ins[0].shape) == 4 else f"expects (N, C, H, W), got {ins[0].shape}"


MAXPOOL2D = declare(OpSpec(
    "maxpool2d", "Max over kh x kw windows; padding never wins (-inf).",
    _maxpool_ref,
    attrs={"kernel": Attr("pair", "(kh, kw)"), "stride": Attr("pair", "(sh, sw)"),
           "padding": Attr("pair", "(ph, pw)"),
           "ceil_mode": Attr("bool", "output size rounded up, as PyTorch's ceil_mode", required=False)},
    shape=lambda ins, a: _pool_shape(ins, a, True), check=_four_d))

AVGPOOL2D = declare(OpSpec(
    "avgpool2d", "Mean over kh x kw windows, no padding.",
    lambda v, n: refmath.windows(np.asarray(v[0], np.float64), n.attrs["kernel"], n.attrs["stride"])
    .mean(axis=(4, 5)).astype(np.float32),
    attrs={"kernel": Attr("pair", "(kh, kw)"), "stride": Attr("pair", "(sh, sw)")},
    shape=lambda ins, a: _pool_shape(ins, a, False), check=_four_d))

GLOBAL_AVGPOOL = declare(OpSpec(
    "global_avgpool", "Mean over H and W: (N, C, H, W) -> (N, C).",
    lambda v, n: np.asarray(v[0], np.float64).mean(axis=(2, 3)).astype(np.float32),
    shape=lambda ins, a: ins[0][:2], check=_four_d))


GLOBAL_MAXPOOL = declare(OpSpec(
    "global_maxpool", "Max over H and W: (N, C, H, W) -> (N, C).",
    lambda v, n: np.asarray(v[0]).max(axis=(2, 3)),
    shape=lambda ins, a: ins[0][:2], check=_four_d))


def _check_gem(n, ins, modal):
    if not n.attrs["p"] > 0 or not n.attrs["eps"] > 0:
        return f"p and eps must be positive, are {n.attrs['p']} and {n.attrs['eps']}"
    return _four_d(n, ins, modal)


def _gem_ref(v, n):
    x = np.maximum(np.asarray(v[0], np.float64), n.attrs["eps"])
    return ((x ** n.attrs["p"]).mean(axis=(2, 3)) ** (1.0 / n.attrs["p"])).astype(np.float32)


GEM_POOL = declare(OpSpec(
    "gem_pool", "Generalized-mean pooling over H and W (Radenovic et al. 2018; fast-reid's "
                "GeneralizedMeanPooling): (mean(max(x, eps)^p))^(1/p), (N, C, H, W) -> (N, C).",
    _gem_ref, attrs={"p": Attr("float", "the power: 1 is the average, large p nears the max"),
                     "eps": Attr("float", "inputs are clamped to at least eps")},
    shape=lambda ins, a: ins[0][:2], check=_check_gem))
