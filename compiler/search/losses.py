"""CM-NAS's training objective (pure torch functions of features and labels).

- identity loss: cross-entropy with label smoothing on the BNNeck classifier's logits;
- hard triplets (batch-hard, margin 0.3) on the pre-BNNeck feature, twice: within each
  modality, and across modalities (anchor in one, positive and negative from the other);
- C3MMD, "correlation-consistency based class-specific MMD": per identity present in both
  modalities, the MMD between its visible and infrared features (L2-normalised, polynomial
  kernel k(a, b) = (a.b)^2, as CM-NAS's code does), plus a correlation-consistency term: the
  cosine-similarity matrix between identity centres must be the same in the two modalities.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
    """(intra-modality, cross-modality) batch-hard triplet losses."""
    dist = torch.cdist(feat, feat).clamp_min(1e-12)
    same_id = labels[:, None] == labels[None, :]
    same_mod = modality[:, None] == modality[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=feat.device)
    return _hard_triplet(dist, same_id, same_mod & ~eye, margin), _hard_triplet(dist, same_id, ~same_mod, margin)


def _poly_mmd(a, b) -> torch.Tensor:
    k = lambda u, v: (u @ v.T).pow(2).mean()  # noqa: E731
    return k(a, a) + k(b, b) - 2 * k(a, b)


def c3mmd(feat, labels, modality) -> tuple[torch.Tensor, torch.Tensor]:
    """(class-specific MMD, correlation consistency) over the identities seen in both modalities."""
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


def cmnas_loss(feat, bnneck_logits, labels, modality, weights=None) -> tuple[torch.Tensor, dict[str, float]]:
    w = {"id": 1.0, "tri_intra": 1.0, "tri_cross": 1.0, "mmd": 1.0, "corr": 1.0, **(weights or {})}
    parts = {"id": F.cross_entropy(bnneck_logits, labels, label_smoothing=0.1)}
    parts["tri_intra"], parts["tri_cross"] = triplet_losses(feat, labels, modality)
    parts["mmd"], parts["corr"] = c3mmd(feat, labels, modality)
    total = sum(w[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}
