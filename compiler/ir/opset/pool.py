"""Pooling: windowed max and average, and the global poolings that end a backbone."""
from __future__ import annotations

import numpy as np

from ..spec import Attr, OpSpec, declare, window_out
from . import refmath


def _pool_shape(ins, a, padded):
    x, k, s = ins[0], a["kernel"], a["stride"]
    p = a["padding"] if padded else (0, 0)
    return x[:2] + tuple(window_out(x[2 + d], k[d], s[d], p[d]) for d in (0, 1))


def _four_d(n, ins, modal):
    return None if len(ins[0].shape) == 4 else f"expects (N, C, H, W), got {ins[0].shape}"


MAXPOOL2D = declare(OpSpec(
    "maxpool2d", "Max over kh x kw windows; padding never wins (-inf).",
    lambda v, n: refmath.windows(np.asarray(v[0]), n.attrs["kernel"], n.attrs["stride"], n.attrs["padding"],
                                 -np.inf).max(axis=(4, 5)),
    attrs={"kernel": Attr("pair", "(kh, kw)"), "stride": Attr("pair", "(sh, sw)"),
           "padding": Attr("pair", "(ph, pw)")},
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
