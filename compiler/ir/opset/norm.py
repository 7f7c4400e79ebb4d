"""Batch normalisation (shared or split by modality) and the per-channel affine it folds into."""
from __future__ import annotations

import numpy as np

from reidc.compiler.base.modes import Modality, Placement
from ..spec import Attr, OpSpec, check_vectors, declare
from . import refmath


def _bn_keys(n) -> set[str]:
    return {str(Placement.SHARED)} if n.modality == Placement.SHARED else {str(m) for m in Modality}


def _check_bn(n, ins, modal):
    params, c = n.attrs["params"], ins[0].shape[1]
    if set(params) != _bn_keys(n):
        return f"modality {n.modality!r} needs params {sorted(_bn_keys(n))}, has {sorted(params)}"
    if (n.modality == Placement.SPLIT) != modal:
        return "a split BN needs the modality input, and only it does"
    if not n.attrs["eps"] >= 0:
        return f"eps must be >= 0, is {n.attrs['eps']}"
    for k, p in params.items():
        if len(p) != 4 or any(a.shape != (c,) for a in p):
            return f"{k} statistics must be 4 vectors of {c}"
        if not (p[3] + n.attrs["eps"] > 0).all():
            return f"{k} variance + eps must be > 0 (channel {int(np.argmin(p[3] + n.attrs['eps']))})"
    return None


def _bn_ref(values, n):
    x = np.asarray(values[0], np.float64)
    split = n.modality == Placement.SPLIT
    keys = [str(m) for m in Modality] if split else [str(Placement.SHARED)]
    gamma, beta, mean, var = (np.stack([np.asarray(n.attrs["params"][k][i], np.float64) for k in keys])
                              for i in range(4))
    scale = gamma / np.sqrt(var + n.attrs["eps"])   # one row per key: picked per sample where split
    m = values[1] if split else None
    rows = (lambda a: a) if split else (lambda a: a[0])
    return (x * refmath.pick(rows(scale), m, x.ndim) + refmath.pick(rows(beta - mean * scale), m, x.ndim)).astype(np.float32)


BATCH_NORM = declare(OpSpec(
    "batch_norm", "Inference BatchNorm. Placement (Node.modality) shared: one set of statistics; "
                  "split: one per modality, picked per sample by the modality input.",
    _bn_ref, modal=True,
    attrs={"eps": Attr("float", "added to the variance"),
           "params": Attr("params", "{placement or modality: (gamma, beta, mean, var)}, vectors of C")},
    check=_check_bn))


def _affine_ref(values, n):
    x = np.asarray(values[0], np.float64)
    m = values[1] if len(values) > 1 else None
    y = x * refmath.pick(n.attrs["scale"], m, x.ndim) + refmath.pick(n.attrs["bias"], m, x.ndim)
    return y.astype(np.float32)


AFFINE = declare(OpSpec(
    "affine", "Per-channel x * scale + bias; (2, C) tables pick per sample by the modality input.",
    _affine_ref, modal=True,
    attrs={"scale": Attr("array", "(C,) or (2, C)"), "bias": Attr("array", "(C,) or (2, C)")},
    check=lambda n, ins, modal: check_vectors(n, ("scale", "bias"), ins[0].shape[1], modal)))


def _check_instance_norm(n, ins, modal):
    k, c = n.attrs["scale"].shape, ins[0].shape[1]
    if len(ins[0].shape) != 4:
        return f"expects (N, C, H, W), got {ins[0].shape}"
    if len(k) != 1 or not 0 < k[0] <= c or n.attrs["bias"].shape != k:
        return f"scale and bias must be two vectors of at most {c} channels, are {k} and {n.attrs['bias'].shape}"
    if not n.attrs["eps"] > 0:
        return f"eps must be > 0, is {n.attrs['eps']}"
    return None


def _instance_norm_ref(values, n):
    x = np.asarray(values[0], np.float64)
    k = n.attrs["scale"].shape[0]
    head = x[:, :k]
    mean = head.mean(axis=(2, 3), keepdims=True)
    var = ((head - mean) ** 2).mean(axis=(2, 3), keepdims=True)
    vec = lambda a: np.asarray(a, np.float64)[None, :, None, None]  # noqa: E731
    y = (head - mean) / np.sqrt(var + n.attrs["eps"]) * vec(n.attrs["scale"]) + vec(n.attrs["bias"])
    return np.concatenate([y, x[:, k:]], axis=1).astype(np.float32)


INSTANCE_NORM = declare(OpSpec(
    "instance_norm", "InstanceNorm of the first K channels, with statistics of each sample's own "
                     "H x W (computed at run time), then x * scale + bias; channels K.. pass unchanged "
                     "(IBN-Net's half-IN, half-BN block has its BN half as a batch_norm before it).",
    _instance_norm_ref,
    attrs={"scale": Attr("array", "(K,), K <= C: the first K channels are normalised"),
           "bias": Attr("array", "(K,)"), "eps": Attr("float", "added to the variance")},
    check=_check_instance_norm))
