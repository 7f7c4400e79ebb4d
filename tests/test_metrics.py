"""CMC rules of the retrieval metrics against CM-NAS's released evaluation (JDAI-CV/CM-NAS,
`utils/eval_metrics.py`): SYSU-MM01's CMC keeps only the first image of each identity in the
ranking (after the cam3/cam2 exclusion), RegDB's reads the full ranking; mAP and mINP use the
full ranking under both. Pure numpy, fast."""
import numpy as np
import pytest

from reidc.compiler.datasets.metrics import retrieval_metrics


def cmnas_eval_sysu(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10):
    """A transcription of CM-NAS's `eval_sysu` (AGW's, with its mINP lines): returns the CMC
    (first image of each identity only), mAP, mINP. Not reidc code; written here to compare."""
    indices = np.argsort(distmat, axis=1)
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    new_all_cmc, all_ap, all_inp, num_valid_q = [], [], [], 0.0
    for q_idx in range(len(q_pids)):
        q_pid, q_camid = q_pids[q_idx], q_camids[q_idx]
        order = indices[q_idx]
        keep = np.invert((q_camid == 3) & (g_camids[order] == 2))
        new_cmc = pred_label[q_idx][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = [new_cmc[index] for index in sorted(new_index)]
        new_match = (new_cmc == q_pid).astype(np.int32)
        new_all_cmc.append(new_match.cumsum()[:max_rank])
        orig_cmc = matches[q_idx][keep]
        if not np.any(orig_cmc):
            continue
        cmc = orig_cmc.cumsum()
        pos_max_idx = np.max(np.where(orig_cmc == 1))
        all_inp.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        num_valid_q += 1.0
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(orig_cmc.cumsum())]) * orig_cmc
        all_ap.append(tmp_cmc.sum() / orig_cmc.sum())
    return np.asarray(new_all_cmc, np.float32).sum(0) / num_valid_q, np.mean(all_ap), np.mean(all_inp)


def cmnas_eval_regdb(distmat, q_pids, g_pids, max_rank=10):
    """CM-NAS's `eval_regdb` (AGW's mINP lines): full-ranking CMC, mAP, mINP. Its same-camera
    removal never fires (all queries camera 1, all gallery camera 2), so it is left out."""
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for raw_cmc in matches:
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        pos_max_idx = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[pos_max_idx] / (pos_max_idx + 1.0))
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(raw_cmc.cumsum())]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / raw_cmc.sum())
    return np.asarray(all_cmc, np.float32).sum(0) / len(all_cmc), np.mean(all_ap), np.mean(all_inp)


def test_first_image_per_identity_by_hand():
    g_pids = np.array([2, 2, 2, 3, 3, 1])
    g_cams = np.array([1, 4, 2, 1, 4, 1])
    dist = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],     # query 0: gallery 0..5 in order
                     [0.2, 0.5, 0.1, 0.6, 0.4, 0.3]])    # query 1: gallery 2, 0, 5, 4, 1, 3
    q_pids, q_cams = [1, 3], [6, 3]
    # query 0 (pid 1, cam 6): ranked pids 2 2 2 3 3 1. Full list: first match at rank 6.
    #   First image per identity: 2 3 1 -> rank 3. One match at 6: AP 1/6, INP 1/6.
    # query 1 (pid 3, cam 3): gallery 2 is cam 2, dropped; ranked pids 2 1 3 2 3. Full list:
    #   first match at rank 3; first per identity: 2 1 3 -> rank 3. Matches at 3 and 5:
    #   AP (1/3 + 2/5)/2 = 11/30, INP 2/5.
    full = retrieval_metrics(dist, q_pids, g_pids, q_cams, g_cams, exclude=((3, 2),))
    sysu = retrieval_metrics(dist, q_pids, g_pids, q_cams, g_cams, exclude=((3, 2),), cmc_first_per_id=True)
    assert (full["rank1"], full["rank5"], full["rank10"]) == (0.0, 0.5, 1.0)
    assert (sysu["rank1"], sysu["rank5"], sysu["rank10"]) == (0.0, 1.0, 1.0)
    for m in (full, sysu):  # mAP and mINP read the full list under both rules
        assert m["mAP"] == pytest.approx((1 / 6 + 11 / 30) / 2) and m["mINP"] == pytest.approx((1 / 6 + 2 / 5) / 2)
        assert m["queries"] == 2


def draw(seed, n_q=40, n_g=120, ids=15):
    """Random distances (no ties) over repeated identities and SYSU's cameras: queries on the
    infrared cams 3 and 6, gallery on the visible cams 1, 2, 4, 5; some query ids absent."""
    rng = np.random.default_rng(seed)
    g_pids = rng.integers(0, ids, n_g)
    g_pids[:ids] = np.arange(ids)  # every identity in the gallery at least once...
    g_cams = rng.choice([1, 2, 4, 5], n_g)
    g_cams[:ids] = 1               # ... on a camera no query excludes (enough identities for rank 10)
    q_pids = rng.integers(0, ids + 3, n_q)  # ids >= `ids`: no match, skipped
    q_cams = rng.choice([3, 6], n_q)
    return rng.random((n_q, n_g)), q_pids, g_pids, q_cams, g_cams


@pytest.mark.parametrize("seed", range(6))
def test_sysu_rule_is_cmnas_eval_sysu(seed):
    dist, q_pids, g_pids, q_cams, g_cams = draw(seed)
    cmc, m_ap, m_inp = cmnas_eval_sysu(dist, q_pids, g_pids, q_cams, g_cams)
    m = retrieval_metrics(dist, q_pids, g_pids, q_cams, g_cams, exclude=((3, 2),), cmc_first_per_id=True)
    assert [m["rank1"], m["rank5"], m["rank10"]] == pytest.approx(cmc[[0, 4, 9]].tolist())
    assert m["mAP"] == pytest.approx(m_ap) and m["mINP"] == pytest.approx(m_inp)
    # the draws are ones where the rule matters: the full-list CMC is lower (here at rank 10)
    full = retrieval_metrics(dist, q_pids, g_pids, q_cams, g_cams, exclude=((3, 2),))
    assert full["rank1"] == m["rank1"] and full["rank5"] <= m["rank5"] and full["rank10"] < m["rank10"]
    assert full["mAP"] == m["mAP"] and full["mINP"] == m["mINP"]


@pytest.mark.parametrize("seed", range(3))
def test_regdb_rule_is_cmnas_eval_regdb(seed):
    dist, q_pids, g_pids, _, _ = draw(seed)
    cmc, m_ap, m_inp = cmnas_eval_regdb(dist, q_pids, g_pids)
    m = retrieval_metrics(dist, q_pids, g_pids)
    assert [m["rank1"], m["rank5"], m["rank10"]] == pytest.approx(cmc[[0, 4, 9]].tolist())
    assert m["mAP"] == pytest.approx(m_ap) and m["mINP"] == pytest.approx(m_inp)


def test_protocols_pick_their_rule():
    from reidc.compiler.datasets.metrics import score_protocol
    from reidc.compiler.datasets.pool import Pool, cross_modality_protocol, sysu_style_protocol
    dist, q_pids, g_pids, q_cams, g_cams = draw(0)
    pids, cams = np.concatenate([q_pids, g_pids]), np.concatenate([q_cams, g_cams])
    pool = Pool(np.zeros((len(pids), 1, 1, 3), np.uint8), pids, cams, np.isin(cams, (3, 6)).astype(np.int64))
    feats = np.random.default_rng(1).normal(size=(len(pids), 8))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    sysu = sysu_style_protocol("t", pool, {"all-search": (1, 2, 4, 5)}, (3, 6), trials=1, seed=0, shot=3)
    regdb = cross_modality_protocol("t", pool)
    assert sysu.cmc_first_per_id and sysu.exclude == ((3, 2),) and not regdb.cmc_first_per_id
    t = sysu.settings["all-search"][0]
    want = retrieval_metrics(1 - feats[t.query] @ feats[t.gallery].T, pids[t.query], pids[t.gallery], cams[t.query],
                             cams[t.gallery], exclude=((3, 2),), cmc_first_per_id=True)
    got = score_protocol(feats, sysu)["all-search"]
    assert got == {**{k: v for k, v in want.items() if k != "queries"}, "trials": 1}
    t = regdb.settings["infrared-to-visible"][0]
    want = retrieval_metrics(1 - feats[t.query] @ feats[t.gallery].T, pids[t.query], pids[t.gallery])
    assert score_protocol(feats, regdb)["infrared-to-visible"]["rank5"] == want["rank5"]
