"""Pure maths of binarization (numpy): recognising +-alpha weights and folding sign thresholds.
The bit layout itself is the IR's (compiler/ir/bits.py); the binary passes only wire these.
"""
from __future__ import annotations

import numpy as np

#: largest finite float32: a threshold no activation crosses
NEVER = float(np.finfo(np.float32).max)


def binary_weight_scale(w: np.ndarray, rtol: float = 1e-5):
    """(signs int8 +-1, alpha (O,)) when every output channel's weights are +-alpha_o with
    alpha_o > 0 (within rtol), else None."""
    w = np.asarray(w, np.float64)
    mag = np.abs(w).reshape(w.shape[0], -1)
    alpha = mag.max(axis=1)
    if (alpha <= 0).any() or not np.isfinite(alpha).all():
        return None
    if (np.abs(mag - alpha[:, None]) > rtol * alpha[:, None]).any():
        return None
    return np.where(w >= 0, 1, -1).astype(np.int8), alpha.astype(np.float32)


def sign_threshold(scale: np.ndarray, shift: np.ndarray):
    """sign(x * s + t) as a comparison on x: bit (= -1) when x < thr, or x > thr where s < 0.

    Returns (thr float32, flip int8). s == 0 gives a constant: bit always (t < 0: x < +max,
    which every finite x satisfies... except +max itself) or never (x < -max)."""
    s = np.asarray(scale, np.float64)
    t = np.asarray(shift, np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        thr = np.where(s != 0, -t / s, np.where(t < 0, NEVER, -NEVER))
    # |t/s| past float32's range: no finite float32 x reaches it, as the "never" and "always" above
    return np.clip(thr, -NEVER, NEVER).astype(np.float32), (s < 0).astype(np.int8)


def integer_threshold(scale: np.ndarray, shift: np.ndarray):
    """sign(dot * a + b) for an integer dot, as an exact integer comparison on dot:
    a > 0: bit when dot < ceil(-b/a); a < 0: bit when dot > floor(-b/a); a == 0: constant.
    Returns (thr int32, flip int8); computed in float64 as PyTorch's float layer would round."""
    a = np.asarray(scale, np.float64)
    b = np.asarray(shift, np.float64)
    big = np.iinfo(np.int32).max
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # |q| past int32 is clipped below
        q = -b / a
        thr = np.where(a > 0, np.ceil(q), np.where(a < 0, np.floor(q), np.where(b < 0, big, -big)))
    return np.clip(thr, -big, big).astype(np.int32), (a < 0).astype(np.int8)
