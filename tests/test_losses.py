"""The training objectives (compiler/search/losses.py): CM-NAS's SP loss on hand-computed cases;
`cmnas` against a transcription of CM-NAS's released loss code (JDAI-CV/CM-NAS: losses/sp.py,
losses/cmmd.py, losses/triplet_loss.py, train_eval.py lines 284-291) on seeded batches, values
and gradients; `reidc` still the objective reidc had before `cmnas` (values recorded before the
change); each objective's weights and margin. Tiny CPU tensors only."""
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reidc.compiler.search.losses import (DEFAULT_OBJECTIVE, OBJECTIVES, c3mmd, check_objective, cmnas_loss,
                                          cmnas_triplet, modality_halves, sp_loss, triplet_losses)
from reidc.compiler.search.train import TrainConfig, load_supernet


# -- CM-NAS's code, transcribed (PyTorch 1.3 calls spelled as today's) -------------------------
def _cm_euclidean_dist(x, y, eps=1e-12):
    m, n = x.size(0), y.size(0)
    xx = torch.pow(x, 2).sum(1, keepdim=True).expand(m, n)
    yy = torch.pow(y, 2).sum(1, keepdim=True).expand(n, m).t()
    dist = xx + yy
    dist = dist.addmm(x, y.t(), beta=1, alpha=-2)   # dist.addmm_(1, -2, x, y.t())
    return dist.clamp(min=eps).sqrt()


def _cm_hard_example_mining(dist_mat, target):
    N = dist_mat.size(0)
    is_pos = target.expand(N, N).eq(target.expand(N, N).t())
    is_neg = target.expand(N, N).ne(target.expand(N, N).t())
    dist_ap, _ = torch.max(dist_mat[is_pos].contiguous().view(N, -1), 1, keepdim=True)
    dist_an, _ = torch.min(dist_mat[is_neg].contiguous().view(N, -1), 1, keepdim=True)
    return dist_ap.squeeze(1), dist_an.squeeze(1)


def _cm_triplet(global_feat1, global_feat2, target, margin=0.4):
    dist_ap, dist_an = _cm_hard_example_mining(_cm_euclidean_dist(global_feat1, global_feat2), target)
    y = torch.ones_like(dist_an)
    return nn.MarginRankingLoss(margin=margin)(dist_an, dist_ap, y)


def _cm_sp(feat_v, feat_t):
    norm_G_v = F.normalize(torch.mm(feat_v, feat_v.t()), p=2, dim=1)
    norm_G_t = F.normalize(torch.mm(feat_t, feat_t.t()), p=2, dim=1)
    return F.mse_loss(norm_G_v, norm_G_t)


def _cm_cmmd(feat_v, feat_t, num_pos):
    def poly_kernel(a, b):
        return (a.unsqueeze(0) * b.unsqueeze(1)).sum(-1).pow(2)

    def mmd_loss(f_v, f_t):
        return poly_kernel(f_v, f_v).mean() + poly_kernel(f_t, f_t).mean() - 2 * poly_kernel(f_v, f_t).mean()
    fv = torch.split(F.normalize(feat_v, dim=-1), num_pos)
    ft = torch.split(F.normalize(feat_t, dim=-1), num_pos)
    losses = [mmd_loss(a, b) for a, b in zip(fv, ft)]
    return sum(losses) / len(losses)


def _cm_total(global_feat, feat, logit, target_v, target_t, num_pos, sp_lambda=5.0, cmmd_lambda=0.05, margin=0.4):
    """train_eval.py 281-291: the batch is [visible; infrared], identity blocks of num_pos, the
    i-th visible and i-th infrared image of the same identity; label_smooth 0.0 -> plain CE."""
    b = global_feat.size(0) // 2
    target = torch.cat((target_v, target_t))
    feat_v, feat_t = torch.split(feat, b, dim=0)
    global_feat_v, global_feat_t = torch.split(global_feat, b, dim=0)
    loss_ce = nn.CrossEntropyLoss()(logit, target)
    loss_tri = (_cm_triplet(global_feat_v, global_feat_v, target_v, margin)
                + _cm_triplet(global_feat_t, global_feat_t, target_t, margin)
                + _cm_triplet(global_feat_v, global_feat_t, target_t, margin)
                + _cm_triplet(global_feat_t, global_feat_v, target_v, margin)) / 4.0
    loss_sp = _cm_sp(feat_v, feat_t) * sp_lambda
    loss_cmmd = _cm_cmmd(feat_v, feat_t, num_pos) * cmmd_lambda
    return loss_ce + loss_tri + loss_sp + loss_cmmd, {"id": loss_ce, "tri": loss_tri, "sp": loss_sp / sp_lambda,
                                                      "cmmd": loss_cmmd / cmmd_lambda}


def _cm_batch(seed, P=4, K=3, D=12, C=7):
    """CM-NAS's layout: (global_feat, feat after a BNNeck, logits, target_v, target_t); P random
    identities of C, K images per identity and modality."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(C, generator=g)[:P]
    target = ids.repeat_interleave(K)
    global_feat = torch.randn(2 * P * K, D, generator=g) * 2 + 0.5
    weight = torch.rand(D, generator=g) + 0.5
    feat = (global_feat - global_feat.mean(0)) / (global_feat.var(0, unbiased=False) + 1e-5).sqrt() * weight
    logit = feat @ torch.randn(D, C, generator=g)
    return global_feat, feat, logit, target, target.clone()


def _to_reidc_layout(P, K):
    """Row order of reidc's sample_batch (per identity: K visible, then K infrared) as indices
    into CM-NAS's [visible; infrared] batch, and the modality of each row."""
    order, mod = [], []
    for p in range(P):
        order += [p * K + k for k in range(K)] + [P * K + p * K + k for k in range(K)]
        mod += [0] * K + [1] * K
    return torch.tensor(order), torch.tensor(mod)


# -- SP by hand --------------------------------------------------------------------------------
def test_sp_2x2_by_hand():
    # G_v = I (rows already unit); G_t = [[1, 1], [1, 2]] -> rows [1, 1]/sqrt2, [1, 2]/sqrt5.
    # squared differences: (1 - 1/sqrt2)^2 + 1/2 + 1/5 + (1 - 2/sqrt5)^2 = 0.796932; / 4 entries
    fv = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ft = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expect = ((1 - 1 / math.sqrt(2)) ** 2 + 0.5 + 0.2 + (1 - 2 / math.sqrt(5)) ** 2) / 4
    assert expect == pytest.approx(0.199233, abs=1e-6)
    assert float(sp_loss(fv, ft)) == pytest.approx(0.199233, abs=1e-6)


def test_sp_3x3_by_hand():
    # 1-d features: G_v = v v^T, every row normalises to v/|v| = (1, 2, 3)/sqrt14; G_t rows all
    # (1, 1, 1)/sqrt3. Per row |a - b|^2 = 2 - 2 a.b = 2 - 12/sqrt42; 3 rows / 9 entries.
    fv = torch.tensor([[1.0], [2.0], [3.0]])
    ft = torch.ones(3, 1)
    assert (2 - 12 / math.sqrt(42)) / 3 == pytest.approx(0.0494533, abs=1e-6)
    assert float(sp_loss(fv, ft)) == pytest.approx(0.0494533, abs=1e-6)


def test_sp_zero_for_equal_similarities_and_invariant_to_pairing_order():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(5, 8, generator=g)
    assert float(sp_loss(f, 3 * f)) == pytest.approx(0, abs=1e-7)    # a scale leaves normalised Grams alone
    q = torch.linalg.qr(torch.randn(8, 8, generator=g))[0]
    assert float(sp_loss(f, f @ q)) == pytest.approx(0, abs=1e-6)   # a rotation keeps every dot product
    t = torch.randn(5, 8, generator=g)
    perm = torch.randperm(5, generator=g)
    assert float(sp_loss(f[perm], t[perm])) == pytest.approx(float(sp_loss(f, t)), rel=1e-6)


# -- cmnas against CM-NAS's code -----------------------------------------------------------------
@pytest.mark.parametrize("seed,P,K", [(0, 4, 3), (1, 3, 2), (2, 5, 4), (3, 4, 1)])   # K 1: the self-positive
def test_cmnas_objective_is_cmnas_code(seed, P, K):
    gf, f, logit, tv, tt = _cm_batch(seed, P, K)
    gf, f = gf.requires_grad_(), f.requires_grad_()
    want, want_parts = _cm_total(gf, f, logit, tv, tt, K)
    want_grads = torch.autograd.grad(want, (gf, f))
    # the same images in reidc's batch order, with labels and modalities per row
    order, mod = _to_reidc_layout(P, K)
    labels = torch.cat((tv, tt))[order]
    gf2, f2 = gf.detach()[order].requires_grad_(), f.detach()[order].requires_grad_()
    got, parts = cmnas_loss(gf2, f2, logit[order], labels, mod, "cmnas")
    assert set(parts) == set(want_parts)
    for k in parts:
        assert parts[k] == pytest.approx(float(want_parts[k].detach()), rel=1e-5, abs=1e-7), k
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    grads = torch.autograd.grad(got, (gf2, f2))
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b[order], rtol=1e-4, atol=1e-6)


def test_cmnas_triplet_and_sp_take_cmnas_layout_too():
    gf, f, _, tv, tt = _cm_batch(5, 3, 2)
    labels, mod = torch.cat((tv, tt)), torch.tensor([0] * 6 + [1] * 6)
    want = (_cm_triplet(gf[:6], gf[:6], tv) + _cm_triplet(gf[6:], gf[6:], tt) + _cm_triplet(gf[:6], gf[6:], tt)
            + _cm_triplet(gf[6:], gf[:6], tv)) / 4
    assert float(cmnas_triplet(gf, labels, mod, 0.4)) == pytest.approx(float(want), rel=1e-6)
    iv, it = modality_halves(labels, mod)
    assert float(sp_loss(f[iv], f[it])) == pytest.approx(float(_cm_sp(f[:6], f[6:])), rel=1e-6)


def test_cmnas_triplet_by_hand():
    # 1-d, margin 0.4. visible: id0 at 0, id1 at 5; infrared: id0 at 1, id1 at 4.5.
    # vv, tt: the positive is the anchor itself (sqrt(1e-12) = 1e-6), negatives 5 and 3.5 -> 0.
    # vt: anchor 0: pos 1, neg 4.5 -> 0; anchor 5: pos 0.5, neg 4 -> 0.  tv likewise 0.
    feat = torch.tensor([[0.0], [5.0], [1.0], [4.5]])
    labels, mod = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    assert float(cmnas_triplet(feat, labels, mod, 0.4)) == pytest.approx(0.0, abs=1e-6)
    # infrared id0 moved to 3. vv 0 (as before); tt: anchor 3, itself vs 4.5 (d 1.5) -> 0;
    # vt: anchor 0: pos 3, neg 4.5 -> 0; anchor 5: pos 4.5 (d .5), neg 3 (d 2) -> 0;
    # tv: anchor 3: pos 0 (d 3), neg 5 (d 2) -> 3 - 2 + 0.4 = 1.4; anchor 4.5: pos 5 (d .5), neg 0 -> 0.
    # (0 + 0 + 0 + 1.4 / 2) / 4 = 0.175
    feat = torch.tensor([[0.0], [5.0], [3.0], [4.5]])
    assert float(cmnas_triplet(feat, labels, mod, 0.4)) == pytest.approx(0.175, rel=1e-5)


def test_modality_halves_pair_same_identities_and_refuse_unpaired_batches():
    labels = torch.tensor([3, 3, 1, 1, 3, 1, 3, 1])
    mod = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1])
    iv, it = modality_halves(labels, mod)
    assert torch.equal(labels[iv], labels[it]) and (mod[iv] == 0).all() and (mod[it] == 1).all()
    assert iv.tolist() == [2, 5, 0, 4] and it.tolist() == [3, 7, 1, 6]
    with pytest.raises(ValueError, match="as many images of each identity in both modalities"):
        modality_halves(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 0, 1]))


# -- reidc's variant: the objective as it was ----------------------------------------------------
def _old_cmnas_loss(feat, bnneck_logits, labels, modality):
    """reidc's cmnas_loss before `objective` (commit 90cfc0f), verbatim but for the name."""
    w = {"id": 1.0, "tri_intra": 1.0, "tri_cross": 1.0, "mmd": 1.0, "corr": 1.0}
    parts = {"id": F.cross_entropy(bnneck_logits, labels, label_smoothing=0.1)}
    parts["tri_intra"], parts["tri_cross"] = triplet_losses(feat, labels, modality)
    parts["mmd"], parts["corr"] = c3mmd(feat, labels, modality)
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _reidc_batch(seed=0, P=4, K=2, D=16, C=6):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(P).repeat_interleave(2 * K)
    modality = torch.tensor([0] * K + [1] * K).repeat(P)
    return torch.randn(len(labels), D, generator=g), torch.randn(len(labels), C, generator=g), labels, modality


def test_reidc_objective_is_the_old_one():
    feat, logits, labels, modality = _reidc_batch(0)
    total, parts = cmnas_loss(feat, None, logits, labels, modality, "reidc")
    # recorded with the code of commit 90cfc0f (before this objective had a name)
    assert float(total) == pytest.approx(6.437567710876465, rel=1e-6)
    assert parts == pytest.approx({"id": 1.9503839015960693, "tri_intra": 1.49012291431427,
                                   "tri_cross": 1.9874542951583862, "mmd": 0.9142988920211792,
                                   "corr": 0.0953071266412735}, rel=1e-6)
    for seed in (1, 2, 3):
        feat, logits, labels, modality = _reidc_batch(seed, P=3, K=3)
        feat.requires_grad_()
        total, parts = cmnas_loss(feat, None, logits, labels, modality, "reidc")
        old, old_parts = _old_cmnas_loss(feat, logits, labels, modality)
        assert float(total.detach()) == float(old.detach()) and parts == old_parts
        torch.testing.assert_close(torch.autograd.grad(total, feat)[0], torch.autograd.grad(old, feat)[0])


# -- the objectives' settings ----------------------------------------------------------------------
def test_weights_margins_and_smoothing_of_each_objective():
    assert DEFAULT_OBJECTIVE == "cmnas" and TrainConfig().objective == "cmnas"
    # CM-NAS: train_eval.py --label_smooth 0.0, --margin 0.4, --sp_lambda 5.0, --cmmd_lambda 0.05,
    # the four triplet terms averaged (weight 1), CE weight 1
    assert OBJECTIVES["cmnas"] == {"label_smoothing": 0.0, "margin": 0.4,
                                   "weights": {"id": 1.0, "tri": 1.0, "sp": 5.0, "cmmd": 0.05}}
    assert OBJECTIVES["reidc"] == {"label_smoothing": 0.1, "margin": 0.3,
                                   "weights": {"id": 1.0, "tri_intra": 1.0, "tri_cross": 1.0, "mmd": 1.0,
                                               "corr": 1.0}}
    gf, f, logit, tv, tt = _cm_batch(3)
    order, mod = _to_reidc_layout(4, 3)
    labels = torch.cat((tv, tt))[order]
    total, p = cmnas_loss(gf[order], f[order], logit[order], labels, mod)
    assert float(total) == pytest.approx(p["id"] + p["tri"] + 5.0 * p["sp"] + 0.05 * p["cmmd"], rel=1e-6)
    assert p["id"] == pytest.approx(float(F.cross_entropy(logit, torch.cat((tv, tt)))), rel=1e-6)  # no smoothing
    # the margins: every hardest negative 0.35 away, every hardest positive (1e-6) at the anchor:
    # each of the 8 anchors costs 0.4 - 0.35 + 1e-6 under CM-NAS's margin, nothing under reidc's
    feat = torch.tensor([[0.0], [0.35], [0.0], [0.35]])
    lab, m = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])
    assert float(cmnas_triplet(feat, lab, m, OBJECTIVES["cmnas"]["margin"])) == pytest.approx(0.05, abs=1e-5)
    assert float(cmnas_triplet(feat, lab, m, OBJECTIVES["reidc"]["margin"])) == 0


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="expected one of cmnas, reidc"):
        check_objective("tung-mori")
    with pytest.raises(ValueError, match="--objective"):
        TrainConfig(objective="sp")
    feat, logits, labels, modality = _reidc_batch(0)
    with pytest.raises(ValueError, match="--objective"):
        cmnas_loss(feat, feat, logits, labels, modality, "CMNAS")


def test_supernet_of_another_objective_is_not_resumed(tmp_path):
    """A supernet record names its objective; one from before the choice was trained with reidc's."""
    data = SimpleNamespace(name="synthetic", input_size=(64, 32), train=SimpleNamespace(num_ids=4))
    cfg = TrainConfig(steps=5)
    record = {"dataset": "synthetic", "input_size": [64, 32], "num_classes": 4, "steps_done": 1,
              "config": {k: v for k, v in cfg.__dict__.items() if k != "objective"}}
    (tmp_path / "train.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="trained with the 'reidc' objective, not 'cmnas'.*--objective reidc"):
        load_supernet(tmp_path, data, cfg)
    record["config"]["objective"] = "cmnas"
    (tmp_path / "train.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="trained with the 'cmnas' objective, not 'reidc'"):
        load_supernet(tmp_path, data, TrainConfig(steps=5, objective="reidc"))


def test_the_two_objectives_differ_on_one_batch():
    """The issue's point, measured: CM-NAS's SP (post-BNNeck, sample Gram matrices) is not reidc's
    correlation term (pre-BNNeck, identity centres), nor are the totals alike."""
    gf, f, logit, tv, tt = _cm_batch(0, P=4, K=2, D=16)
    order, mod = _to_reidc_layout(4, 2)
    labels = torch.cat((tv, tt))[order]
    cm_total, cm = cmnas_loss(gf[order], f[order], logit[order], labels, mod, "cmnas")
    re_total, re = cmnas_loss(gf[order], f[order], logit[order], labels, mod, "reidc")
    assert cm["sp"] == pytest.approx(float(_cm_sp(f[:8], f[8:])), rel=1e-6)
    assert abs(cm["sp"] - re["corr"]) > 0.01 and abs(float(cm_total) - float(re_total)) > 0.1
