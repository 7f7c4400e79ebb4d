"""The training objective of the supernet and of `reidc zoo train` (pure torch functions of
features and labels). Two objectives, chosen by name (`OBJECTIVES`):

`cmnas` (the default): CM-NAS's released training objective (JDAI-CV/CM-NAS, `train_eval.py`
and `train_base.py`, the same code, with their argparse defaults and `train_*.sh` settings):

    loss = CE(logits) + triplet(pre-BNNeck) + 5.0 * SP(post-BNNeck) + 0.05 * CMMD(post-BNNeck)

- identity loss: plain cross-entropy on the BNNeck classifier's logits (`--label_smooth 0.0`);
- triplet: batch-hard, margin 0.4, on the pre-BNNeck feature, unnormalised Euclidean distance
  (`losses/triplet_loss.py`), the mean of four terms: visible-visible, infrared-infrared,
  visible anchors against infrared, infrared anchors against visible (weight 1 in all);
- SP, similarity preserving (Tung & Mori; `losses/sp.py`): the visible and the infrared halves'
  sample Gram matrices of the BNNeck feature, each row L2-normalised, squared difference
  averaged over the b x b entries; the i-th visible image is paired with the i-th infrared one
  (CM-NAS's sampler draws both halves in the same identity order), here after sorting each
  modality by identity, which leaves the loss unchanged;
- CMMD, class-specific MMD (`losses/cmmd.py`): per identity, the MMD between its visible and
  infrared BNNeck features (L2-normalised, polynomial kernel k(a, b) = (a.b)^2), averaged.

`reidc`: the objective reidc trained with before it had CM-NAS's (kept for comparison and for
supernets trained with it): every term on the pre-BNNeck feature, cross-entropy with label
smoothing 0.1, batch-hard triplets with margin 0.3 within and across modalities as two terms of
weight 1 each (twice CM-NAS's triplet weight), the class-specific MMD, and in place of SP a
correlation-consistency term (the cosine-similarity matrix between identity centres must be
the same in the two modalities), all of weight 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = {
    "cmnas": {"label_smoothing": 0.0, "margin": 0.4,
              "weights": {"id": 1.0, "tri": 1.0, "sp": 5.0, "cmmd": 0.05}},
    "reidc": {"label_smoothing": 0.1, "margin": 0.3,
              "weights": {"id": 1.0, "tri_intra": 1.0, "tri_cross": 1.0, "mmd": 1.0, "corr": 1.0}},
}
DEFAULT_OBJECTIVE = "cmnas"


def check_objective(name) -> str:
    if name not in OBJECTIVES:
        raise ValueError(f"--objective {name!r}: expected one of {', '.join(OBJECTIVES)} "
                         "(cmnas: CM-NAS's released objective; reidc: reidc's earlier variant)")
    return name


# -- reidc's variant ------------------------------------------------------------------------
def _hard_triplet(dist, same_id, mask, margin: float) -> torch.Tensor:
    pos = same_id & mask
    neg = ~same_id & mask
    ok = pos.any(1) & neg.any(1)
    if not ok.any():
        return dist.new_zeros(())
    hardest_pos = torch.where(pos, dist, torch.full_like(dist, -1e9)).max(1).values
    hardest_neg = torch.where(neg, dist, torch.full_like(dist, 1e9)).min(1).values
    return F.relu(hardest_pos - hardest_neg + margin)[ok].mean()


def triplet_losses(feat, labels, modality, margin: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """(intra-modality, cross-modality) batch-hard triplet losses (the `reidc` objective's)."""
    dist = torch.cdist(feat, feat).clamp_min(1e-12)
    same_id = labels[:, None] == labels[None, :]
    same_mod = modality[:, None] == modality[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feat.device)
    return _hard_triplet(dist, same_id, same_mod & ~eye, margin), _hard_triplet(dist, same_id, ~same_mod, margin)


def _poly_mmd(a, b) -> torch.Tensor:
    k = lambda u, v: (u @ v.T).pow(2).mean()  # noqa: E731
    return k(a, a) + k(b, b) - 2 * k(a, b)


def c3mmd(feat, labels, modality) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-specific MMD, correlation consistency) over the identities seen in both
    modalities. The MMD is CM-NAS's CMMD; the correlation term is the `reidc` objective's."""
    f = F.normalize(feat, dim=1)
    mmd, centres_v, centres_i = [], [], []
    for c in labels.unique():
        v, i = f[(labels == c) & (modality == 0)], f[(labels == c) & (modality == 1)]
        if len(v) and len(i):
            mmd.append(_poly_mmd(v, i))
            centres_v.append(F.normalize(v.mean(0), dim=0))
            centres_i.append(F.normalize(i.mean(0), dim=0))
    if not mmd:
        z = feat.new_zeros(())
        return z, z
    cv, ci = torch.stack(centres_v), torch.stack(centres_i)
    return torch.stack(mmd).mean(), (cv @ cv.T - ci @ ci.T).pow(2).mean()


# -- CM-NAS's ---------------------------------------------------------------------------------
def modality_halves(labels, modality) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (visible, infrared) pairing the i-th visible image with the i-th infrared one of
    the same identity, as CM-NAS's batches do (each modality sorted by identity, stably)."""
    iv, it = torch.nonzero(modality == 0).flatten(), torch.nonzero(modality == 1).flatten()
    iv = iv[torch.sort(labels[iv], stable=True).indices]
    it = it[torch.sort(labels[it], stable=True).indices]
    if len(iv) != len(it) or not torch.equal(labels[iv], labels[it]):
        raise ValueError("CM-NAS's objective pairs each visible image with an infrared one of the same identity: "
                         "a batch needs as many images of each identity in both modalities "
                         f"({len(iv)} visible, {len(it)} infrared)")
    return iv, it


def cmmd(feat, labels, modality) -> torch.Tensor:
    """CM-NAS's CMMD (`losses/cmmd.py`): c3mmd's class-specific MMD."""
    return c3mmd(feat, labels, modality)[0]


def sp_loss(feat_v, feat_t) -> torch.Tensor:
    """Similarity-preserving loss between paired halves (b, d): the row-L2-normalised Gram
    matrices' squared difference averaged over the b x b entries (CM-NAS's `losses/sp.py`)."""
    gv = F.normalize(feat_v @ feat_v.T, p=2, dim=1)
    gt = F.normalize(feat_t @ feat_t.T, p=2, dim=1)
    return F.mse_loss(gv, gt)


def _euclidean(x, y, eps: float = 1e-12) -> torch.Tensor:
    d = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1)[None, :] - 2 * x @ y.T
    return d.clamp(min=eps).sqrt()


def _batch_hard(x, y, lx, ly, margin: float) -> torch.Tensor:
    """CM-NAS's TripletLoss(x, y): each row of x an anchor, its hardest positive and negative
    among the rows of y (x itself included when x is y: its distance is sqrt(1e-12)),
    mean of max(0, d_ap - d_an + margin) over the anchors."""
    dist = _euclidean(x, y)
    same = lx[:, None] == ly[None, :]
    inf = torch.full_like(dist, float("inf"))
    ap = torch.where(same, dist, -inf).max(1).values
    an = torch.where(~same, dist, inf).min(1).values
    return F.relu(ap - an + margin).mean()


def cmnas_triplet(feat, labels, modality, margin: float = 0.4) -> torch.Tensor:
    """CM-NAS's triplet term: (vv + tt + vt + tv) / 4 of batch-hard losses."""
    iv, it = torch.nonzero(modality == 0).flatten(), torch.nonzero(modality == 1).flatten()
    v, t, lv, lt = feat[iv], feat[it], labels[iv], labels[it]
    return (_batch_hard(v, v, lv, lv, margin) + _batch_hard(t, t, lt, lt, margin)
            + _batch_hard(v, t, lv, lt, margin) + _batch_hard(t, v, lt, lv, margin)) / 4


def cmnas_loss(feat, bnneck_feat, logits, labels, modality, objective: str = DEFAULT_OBJECTIVE,
               weights=None) -> tuple[torch.Tensor, dict[str, float]]:
    """(weighted total, each term unweighted) of `objective` for a batch: `feat` the pre-BNNeck
    feature, `bnneck_feat` the BNNeck's output, `logits` the classifier's on it (None: no
    identity term)."""
    o = OBJECTIVES[check_objective(objective)]
    w = {**o["weights"], **(weights or {})}
    # logits None: identities the classifier was not trained on (a differentiable search's
    # validation batches): the metric terms only
    parts = {} if logits is None else {"id": F.cross_entropy(logits, labels, label_smoothing=o["label_smoothing"])}
    if objective == "cmnas":
        parts["tri"] = cmnas_triplet(feat, labels, modality, o["margin"])
        iv, it = modality_halves(labels, modality)
        parts["sp"] = sp_loss(bnneck_feat[iv], bnneck_feat[it])
        parts["cmmd"] = cmmd(bnneck_feat, labels, modality)
    else:
        parts["tri_intra"], parts["tri_cross"] = triplet_losses(feat, labels, modality, o["margin"])
        parts["mmd"], parts["corr"] = c3mmd(feat, labels, modality)
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
