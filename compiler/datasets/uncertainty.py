"""How sure a reported mAP is: a bootstrap over identities (pure numpy).

Queries of one identity are not independent (they share its appearance), so the resampling unit
is the identity, not the query: each bootstrap sample draws the protocol's query identities with
replacement and recomputes mAP from the queries of the drawn identities, in every trial (gallery
draw) and setting, with the same identities everywhere. The interval is the 2.5-97.5 percentile
of those mAPs.

`identity_stats` keeps what that needs per (setting, trial, identity): the sum of the queries'
APs and their count (JSON-ready, a few numbers per identity). With all weights 1 it gives back
`score_protocol`'s mAP exactly. Two candidates scored on one protocol have the same identities,
so their difference is bootstrapped paired (the same draws for both): `compare`.
"""
from __future__ import annotations

import numpy as np

from .metrics import per_query

#: bootstrap samples, and their generator's seed (fixed: the same data give the same interval)
SAMPLES, SEED = 1000, 0
LEVEL = 0.95


def identity_stats(feats: np.ndarray, proto) -> dict:
    """{"ids": query identities, "settings": {setting: {"sums": (trials, ids), "counts": (trials,
    ids)}}}: per trial of each setting, the AP sum and query count of each identity, ranking by
    cosine distance of the L2-normalised `feats` as `score_protocol` does."""
    p = proto.pool
    ids = sorted({int(v) for trials in proto.settings.values() for t in trials for v in np.unique(p.pids[t.query])})
    col = {pid: i for i, pid in enumerate(ids)}
    out = {}
    for setting, trials in proto.settings.items():
        sums, counts = np.zeros((len(trials), len(ids))), np.zeros((len(trials), len(ids)))
        for k, t in enumerate(trials):
            r = per_query(1.0 - feats[t.query] @ feats[t.gallery].T, p.pids[t.query], p.pids[t.gallery],
                          p.cams[t.query], p.cams[t.gallery], proto.exclude, proto.cmc_first_per_id)
            cols = np.array([col[int(v)] for v in p.pids[t.query][r["query"]]], np.int64)
            np.add.at(sums[k], cols, r["ap"])
            np.add.at(counts[k], cols, 1.0)
        out[setting] = {"sums": sums.round(12).tolist(), "counts": counts.astype(int).tolist()}
    return {"ids": ids, "settings": out}


def _weights(n_ids: int) -> np.ndarray:
    """(SAMPLES, ids): how often each identity is drawn in each bootstrap sample."""
    rng = np.random.default_rng(SEED)
    draws = rng.integers(0, n_ids, (SAMPLES, n_ids))
    return np.stack([np.bincount(d, minlength=n_ids) for d in draws]).astype(np.float64)


def _headline(stats: dict, w: np.ndarray) -> np.ndarray:
    """mAP averaged over trials and then settings (the search's headline), per row of weights w."""
    per_setting = []
    for s in stats["settings"].values():
        sums, counts = np.asarray(s["sums"], np.float64), np.asarray(s["counts"], np.float64)
        num, den = w @ sums.T, w @ counts.T               # (samples, trials)
        per_setting.append(np.mean(num / np.maximum(den, 1e-12), axis=1))
    return np.mean(per_setting, axis=0)


def point(stats: dict) -> float:
    """The mAP the statistics hold (equal to score_protocol's headline)."""
    return float(_headline(stats, np.ones((1, len(stats["ids"]))))[0])


def interval(stats: dict) -> list[float]:
    """The 95% bootstrap interval of the headline mAP, over identities."""
    b = _headline(stats, _weights(len(stats["ids"])))
    lo, hi = np.percentile(b, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return [round(float(lo), 4), round(float(hi), 4)]


def setting_intervals(stats: dict) -> dict[str, list[float]]:
    """The 95% interval of each setting's mAP on its own."""
    return {name: interval({"ids": stats["ids"], "settings": {name: s}}) for name, s in stats["settings"].items()}


def compare(a: dict, b: dict) -> dict:
    """a's headline mAP minus b's, with its paired 95% bootstrap interval, the share of samples
    in which a is ahead, and whether the interval holds 0 (the two are indistinguishable here)."""
    if a["ids"] != b["ids"] or set(a["settings"]) != set(b["settings"]):
        raise ValueError("the two candidates were scored on different protocols")
    w = _weights(len(a["ids"]))
    d = _headline(a, w) - _headline(b, w)
    lo, hi = np.percentile(d, [50 * (1 - LEVEL), 50 * (1 + LEVEL)])
    return {"difference": round(point(a) - point(b), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "a_ahead": round(float(np.mean(d > 0)), 3), "indistinguishable": bool(lo <= 0 <= hi)}
