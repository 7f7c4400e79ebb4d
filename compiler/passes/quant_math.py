"""Pure maths of post-training int8 quantization (numpy in, numpy out); quantize_int8.py wires it.

Weights: symmetric int8 per output channel, q = rint(w / s), s = max|w[o]| / 127.
Activations: uint8 with a zero point: 0 where calibration saw no negative value (after a ReLU),
else 128 (symmetric around it); the step s per modality from the clipping threshold that
minimises the mean squared quantization error over what calibration saw (`mse_threshold`):
outliers beyond it saturate, which keeps the step small for the bulk of the values. (The
99.99th percentile, tried first, lost 1 point of rank-1 on a trained ResNet-18; MSE kept it.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PERCENTILE_LOW = 99.0   # the MSE search starts at this percentile of |x| ...
GRID = 48               # ... and tries this many thresholds up to the maximum
QMAX_W = 127
SAMPLES_PER_BATCH = 1 << 16   # values kept per tensor, modality and calibration batch


def quantize_weight(w: np.ndarray, qmax: int = QMAX_W) -> tuple[np.ndarray, np.ndarray]:
    """(O, I, kh, kw) float -> (int8 weights in [-qmax, qmax], float32 scale (O,)), symmetric per
    output channel (qmax 31: 6-bit weights, whose u8 x s8 sums of 4 fit AVX2's int16 `vpmaddubsw` +
    `vpaddw`).
    An all-zero channel gets scale 1 (its weights are 0 whatever the scale)."""
    w = np.asarray(w, np.float64)
    amax = np.abs(w).reshape(len(w), -1).max(axis=1)
    s = np.where(amax > 0, amax / qmax, 1.0)
    q = np.clip(np.rint(w / s[:, None, None, None]), -qmax, qmax).astype(np.int8)
    return q, s.astype(np.float32)


def proportional(w2: np.ndarray, rtol: float = 1e-5) -> np.ndarray | None:
    """For per-modality weights (2, O, I, kh, kw): the per-channel factor r (O,) with
    w2[1] = r * w2[0] (what folding a split BN after a conv makes: W * s_m[o]), or None when
    the two sets are not proportional."""
    w0, w1 = np.asarray(w2[0], np.float64), np.asarray(w2[1], np.float64)
    a, b = w0.reshape(len(w0), -1), w1.reshape(len(w1), -1)
    dot, n0 = (a * b).sum(1), (a * a).sum(1)
    r = np.where(n0 > 0, dot / np.where(n0 > 0, n0, 1), 0.0)
    if np.linalg.norm(b - r[:, None] * a) > rtol * max(np.linalg.norm(b), 1e-30) or ((n0 == 0) & ((b != 0).any(1))).any():
        return None
    return r


def shared_weight(w2: np.ndarray, rtol: float = 1e-5, qmax: int = QMAX_W) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-modality weights (2, O, I, kh, kw) whose second set is the first times a per-channel
    factor (`proportional`) -> one int8 weight set and signed per-modality scales (2, O). None
    when they are not proportional."""
    r = proportional(w2, rtol)
    if r is None:
        return None
    q, s = quantize_weight(np.asarray(w2[0], np.float64), qmax)
    s1 = np.where(r != 0, s * r, s)   # a channel that is zero in modality 1: any non-zero scale
    q1_zero = r == 0
    if q1_zero.any() and (q[q1_zero] != 0).any():
        return None   # a channel live in one modality and dead in the other: no shared set
    return q, np.stack([s, s1]).astype(np.float32)


@dataclass(frozen=True)
class ActivationRange:
    """What calibration saw of one tensor: its minimum, and per modality (one entry in a
    single-modality graph) the clipping threshold of x (non-negative tensors) or of |x|."""

    minimum: float
    threshold: tuple[float, ...]
    peak: tuple[float, ...] = ()   # per modality, the largest x (or |x|) calibration saw: no clipping


    @property
    def zero_point(self) -> int:
        return 0 if self.minimum >= 0 else 128

    def scales(self, unclipped: bool = False) -> np.ndarray:
        """The quantization step per modality: the threshold (with `unclipped`, the peak) maps to
        255 (zero point 0) or 127."""
        top = 255.0 if self.zero_point == 0 else 127.0
        p = np.maximum(np.asarray(self.peak if unclipped and self.peak else self.threshold, np.float64), 1e-8)
        return (p / top).astype(np.float32)


def mse_threshold(v: np.ndarray, levels: int, signed: bool) -> float:
    """The clipping threshold t minimising the mean squared error of quantizing v with step
    t / levels (values beyond t saturate), searched over GRID candidates spaced geometrically
    from the PERCENTILE_LOW percentile to the maximum of |v| (or v)."""
    a = np.abs(v) if signed else v
    a = a[a > 0] if not signed else a
    if a.size == 0:
        return 0.0
    lo, hi = float(np.percentile(a, PERCENTILE_LOW)), float(a.max())
    if hi <= 0:
        return 0.0
    best, best_err = hi, np.inf
    x = np.asarray(v, np.float64)
    for t in np.geomspace(max(lo, hi * 1e-3), hi, GRID):
        step = t / levels
        q = np.clip(np.rint(x / step), -levels if signed else 0, levels) * step
        err = float(np.mean((x - q) ** 2))
        if err < best_err:
            best, best_err = float(t), err
    return best


def summarise(values: list[np.ndarray], minimum: float, peak: tuple[float, ...] | None = None) -> ActivationRange:
    """An ActivationRange from the sampled values per modality (see `sample`): each modality's
    threshold by `mse_threshold`; its peak the largest |x| seen (`peak`, from all the values, not
    only the sample; else the sample's)."""
    signed = minimum < 0
    levels = 127 if signed else 255
    pct = tuple(mse_threshold(v, levels, signed) if v.size else 0.0 for v in values)
    if all(p == 0 for p in pct):
        pct = tuple(1.0 for _ in pct)
    pct = tuple(p if p > 0 else max(pct) for p in pct)   # a modality calibration never saw
    if peak is None:
        peak = tuple(float(np.abs(v).max()) if v.size else 0.0 for v in values)
    peak = tuple(max(p, t) for p, t in zip(peak, pct))
    return ActivationRange(float(minimum), pct, peak)


def sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to SAMPLES_PER_BATCH values of x, drawn uniformly (all of them when fewer)."""
    flat = np.asarray(x, np.float32).reshape(-1)
    if flat.size <= SAMPLES_PER_BATCH:
        return flat.copy()
    return flat[rng.integers(0, flat.size, SAMPLES_PER_BATCH)]


def divided(a, step) -> np.ndarray:
    """a / step in float32 (computed in float64): a conv's weight scale and bias, or a
    dequantize's scale, taking the step of the quantize that reads them (y / s, then rint)."""
    return (np.asarray(a, np.float64) / float(np.asarray(step, np.float64).reshape(-1)[0])).astype(np.float32)
