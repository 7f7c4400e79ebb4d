"""The identity bootstrap behind every reported mAP's interval and the search's
"indistinguishable" verdicts (compiler/datasets/uncertainty.py). Pure numpy, fast."""
import numpy as np
import pytest

from reidc.compiler.datasets import uncertainty as U
from reidc.compiler.datasets.metrics import score_protocol
from reidc.compiler.datasets.pool import Pool, sysu_style_protocol


def _pool(n_ids=12, per_cam=3, seed=0):
    rng = np.random.default_rng(seed)
    pids = np.repeat(np.arange(n_ids), 6 * per_cam)
    cams = np.tile(np.repeat([1, 2, 3, 4, 5, 6], per_cam), n_ids)
    return Pool(np.zeros((len(pids), 1, 1, 3), np.uint8), pids, cams, np.isin(cams, (3, 6)).astype(np.int64)), rng


def _feats(pool, rng, signal):
    """Features: an identity centre times `signal` plus unit noise, L2-normalised."""
    centres = rng.normal(size=(pool.pids.max() + 1, 16))
    f = signal * centres[pool.pids] + rng.normal(size=(len(pool.pids), 16))
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def _proto(pool):
    return sysu_style_protocol("t", pool, {"all-search": (1, 2, 4, 5), "indoor-search": (1, 2)}, (3, 6), trials=3,
                               seed=0)


def test_the_statistics_give_back_the_protocols_map():
    pool, rng = _pool()
    proto = _proto(pool)
    feats = _feats(pool, rng, 0.8)
    res = score_protocol(feats, proto)
    stats = U.identity_stats(feats, proto)
    assert stats["ids"] == list(range(12))
    assert U.point(stats) == pytest.approx(np.mean([r["mAP"] for r in res.values()]), abs=1e-12)
    lo, hi = U.interval(stats)
    assert lo < U.point(stats) < hi
    per = U.setting_intervals(stats)
    assert set(per) == {"all-search", "indoor-search"}
    assert per["all-search"][0] <= res["all-search"]["mAP"] <= per["all-search"][1]


def _stats(aps_per_id):
    """A one-setting, one-trial statistics record from each identity's query APs."""
    return {"ids": list(range(len(aps_per_id))),
            "settings": {"s": {"sums": [[float(np.sum(a)) for a in aps_per_id]],
                               "counts": [[len(a) for a in aps_per_id]]}}}


def test_hand_cases():
    same = _stats([[0.5, 0.5]] * 6)                     # every identity alike: no spread
    assert U.point(same) == 0.5 and U.interval(same) == [0.5, 0.5]
    two = _stats([[1.0, 1.0, 1.0], [0.0]])              # identities, not queries, are resampled
    assert U.point(two) == 0.75
    lo, hi = U.interval(two)
    assert lo == 0.0 and hi == 1.0                       # a sample may hold one identity only


def test_the_interval_narrows_with_more_identities():
    rng = np.random.default_rng(3)
    width = {n: np.diff(U.interval(_stats([rng.beta(2, 3, 4) for _ in range(n)])))[0] for n in (12, 200)}
    assert width[200] < 0.5 * width[12]


def test_paired_comparison():
    pool, rng = _pool(n_ids=16)
    proto = _proto(pool)
    good, weak = (U.identity_stats(_feats(pool, rng, s), proto) for s in (3.0, 0.2))
    c = U.compare(good, weak)
    assert c["difference"] > 0.3 and c["ci95"][0] > 0 and c["a_ahead"] == 1.0 and not c["indistinguishable"]
    itself = U.compare(good, good)
    assert itself == {"difference": 0.0, "ci95": [0.0, 0.0], "a_ahead": 0.0, "indistinguishable": True}
    nudged = {**good, "settings": {k: {**v, "sums": (np.asarray(v["sums"]) * 0.99).tolist()}
                                   for k, v in good["settings"].items()}}
    assert U.compare(good, nudged)["indistinguishable"] is False   # paired: a uniform 1% is seen
    with pytest.raises(ValueError, match="different protocols"):
        U.compare(good, {**weak, "ids": weak["ids"][1:]})
