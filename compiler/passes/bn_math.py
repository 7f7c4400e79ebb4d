"""Pure maths of BatchNorm folding (numpy in, numpy out); the passes only wire these."""
from __future__ import annotations

import numpy as np

from reidc.compiler.base.modes import CODES


def bn_affine(gamma, beta, mean, var, eps):
    """BN(x) = x * scale + shift, computed in float64 and returned as float32."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def fold_affine_into_conv(weight, bias, scale, shift):
    """conv(x, W, b) * s + t == conv(x, W * s[o], b * s + t); W is (O, I, kh, kw)."""
    w = np.asarray(weight, np.float64) * np.asarray(scale, np.float64)[:, None, None, None]
    b = np.zeros(weight.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return w.astype(np.float32), (b * scale + shift).astype(np.float32)


def fold_affine_into_dense(weight, bias, scale, shift):
    """dense(x * s + t, W, b) == dense(x, W * s[i], W @ t + b); W is (O, I)."""
    w = np.asarray(weight, np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return (w * np.asarray(scale, np.float64)[None, :]).astype(np.float32), (w @ shift + b).astype(np.float32)


def bn_tables(params, eps):
    """The affine of a BN's statistics, {set name: (gamma, beta, mean, var)}: (C,) scale and
    shift for one shared set, or (2, C) tables for per-modality sets, row k the modality whose
    code is k (the row the `modality` input picks)."""
    if set(params) == {"shared"}:
        return bn_affine(*params["shared"], eps)
    pairs = [bn_affine(*params[m], eps) for m in sorted(CODES, key=CODES.get)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def fold_input_affine_into_conv(weight, bias, scale, shift):
    """conv(x * s[i] + t[i], W, b) == conv(x, W * s[i], b + sum W * t), where the padding of the
    affine's output (zeros) becomes padding of x with -t/s (what the affine maps to zero).
    Returns (W', b', pad value per input channel); every s must be non-zero."""
    w = np.asarray(weight, np.float64)
    s, t = np.asarray(scale, np.float64), np.asarray(shift, np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return ((w * s[None, :, None, None]).astype(np.float32), (b + np.einsum("oikl,i->o", w, t)).astype(np.float32),
            (-t / s).astype(np.float32))
