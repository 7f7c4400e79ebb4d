"""ReID retrieval metrics: CMC rank-k, mAP and mINP (pure numpy).

For each query the gallery is sorted by distance (ties keep gallery order); gallery entries
whose (query camera, gallery camera) pair is excluded by the protocol are dropped; queries
with no true match left are skipped, as the standard evaluation code does.
- CMC rank-k: fraction of queries whose first true match is within the first k. Two rules,
  as in CM-NAS's released evaluation (utils/eval_metrics.py) and AGW's before it:
  - SYSU-MM01 (`eval_sysu`; `cmc_first_per_id=True`, set by SYSU-style protocols, the
    synthetic dataset's included): the CMC is read off the ranking with only the first image
    of each identity kept (after the camera exclusion), i.e. the first true match's rank is
    1 + the number of distinct identities ranked before it. This follows SYSU-MM01's authors'
    code and is what CM-NAS's (and AGW's) SYSU rank-5/10 numbers mean; it is never below the
    full-list CMC, and rank-1 is the same under both rules (the first image ranked is the
    first of its identity).
  - RegDB (`eval_regdb`; the default): the full ranking.
  mAP and mINP always use the full ranking.
- AP: mean over the true matches of precision at each match's rank.
- INP (Ye et al., 2021): (number of true matches) / (rank of the hardest, i.e. last, true match);
  mINP is its mean, and says how much of the list a user reads to find every match.
"""
from __future__ import annotations

import numpy as np

RANKS = (1, 5, 10)


def per_query(dist: np.ndarray, q_pids, g_pids, q_cams=None, g_cams=None, exclude: tuple[tuple[int, int], ...] = (),
              cmc_first_per_id: bool = False) -> dict[str, np.ndarray]:
    """Each scored query's index ("query"), the 0-based rank of its first true match under the
    CMC rule ("first"), its AP and INP; queries with no true match left are skipped."""
    dist = np.asarray(dist, np.float64)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    if dist.shape != (len(q_pids), len(g_pids)):
        raise ValueError(f"distance matrix {dist.shape} does not match {len(q_pids)} queries x {len(g_pids)} gallery")
    order = np.argsort(dist, axis=1, kind="stable")
    rows: list[tuple[int, int, float, float]] = []
    for i in range(len(q_pids)):
        o = order[i]
        if exclude:
            keep = np.ones(len(o), bool)
            for qc, gc in exclude:
                if q_cams[i] == qc:
                    keep &= np.asarray(g_cams)[o] != gc
            o = o[keep]
        pos = np.flatnonzero(g_pids[o] == q_pids[i])
        if not len(pos):
            continue
        first = len(np.unique(g_pids[o[:pos[0]]])) if cmc_first_per_id else int(pos[0])
        rows.append((i, first, float(np.mean(np.arange(1, len(pos) + 1) / (pos + 1))), len(pos) / (pos[-1] + 1)))
    if not rows:
        raise ValueError("no query has a true match in the gallery")
    q, first, ap, inp = (np.array(c) for c in zip(*rows))
    return {"query": q.astype(np.int64), "first": first.astype(np.int64), "ap": ap, "inp": inp}


def retrieval_metrics(dist, q_pids, g_pids, q_cams=None, g_cams=None,
                      exclude: tuple[tuple[int, int], ...] = (), cmc_first_per_id: bool = False) -> dict[str, float]:
    """CMC rank-1/5/10, mAP, mINP of a (queries x gallery) distance matrix; `exclude`: (query
    camera, gallery camera) pairs left out; `cmc_first_per_id`: SYSU-MM01's CMC (module doc)."""
    r = per_query(dist, q_pids, g_pids, q_cams, g_cams, exclude, cmc_first_per_id)
    n = len(r["ap"])
    out = {f"rank{k}": float(np.sum(r["first"] < k) / n) for k in RANKS}
    out.update(mAP=float(np.mean(r["ap"])), mINP=float(np.mean(r["inp"])), queries=n)
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average over trials (e.g. SYSU-MM01's random gallery draws)."""
    keys = [k for k in rows[0] if k != "queries"]
    return {**{k: float(np.mean([r[k] for r in rows])) for k in keys}, "trials": len(rows)}


def score_protocol(feats: np.ndarray, proto) -> dict[str, dict]:
    """Per setting of a `Protocol`: CMC rank-1/5/10, mAP, mINP averaged over its trials, ranking
    the gallery by cosine distance of L2-normalised features `feats` (one row per pool image)."""
    p = proto.pool
    res = {}
    for setting, trials in proto.settings.items():
        rows = []
        for t in trials:
            dist = 1.0 - feats[t.query] @ feats[t.gallery].T
            rows.append(retrieval_metrics(dist, p.pids[t.query], p.pids[t.gallery], p.cams[t.query],
                                          p.cams[t.gallery], proto.exclude, proto.cmc_first_per_id))
        res[setting] = mean_metrics(rows)
    return res
