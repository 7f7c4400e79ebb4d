"""Accuracy of one candidate with inherited weights: recalibrate its BNs on training batches,
embed a protocol's pool (each image through its own modality's path), rank, score."""
from __future__ import annotations

import numpy as np
import torch

from reidc.compiler.ir import Modality
from reidc.frontend.supernet import recalibrate_bn, set_arch

from reidc.compiler.datasets import ReIDData, normalise
from reidc.compiler.datasets.metrics import score_protocol
from reidc.compiler.datasets.uncertainty import identity_stats, interval, setting_intervals
from .train import TrainConfig, sample_batch

RECAL_BATCHES = 8


@torch.no_grad()
def embed(model, images: np.ndarray, modality: np.ndarray, batch: int = 128) -> np.ndarray:
    """L2-normalised BNNeck features, each image run with its modality (`modality`: codes)."""
    model.eval()
    out = np.zeros((len(images), model.feat_dim), np.float32)
    for name in Modality:
        idx = np.flatnonzero(modality == name.code)
        for s in range(0, len(idx), batch):
            part = idx[s:s + batch]
            out[part] = torch.nn.functional.normalize(model(torch.from_numpy(normalise(images[part])), name), dim=1).numpy()
    return out


def headline(res: dict[str, dict]) -> float:
    """The number the search maximises: mAP averaged over the protocol's settings."""
    return float(np.mean([r["mAP"] for r in res.values()]))


def prepare_candidate(net, spec, data: ReIDData, cfg: TrainConfig):
    """Set the supernet to `spec` and recalibrate its BNs on fixed training batches."""
    set_arch(net, spec)
    batches = [sample_batch(data, cfg, 10_000_000 + i, augment=False)[::2] for i in range(RECAL_BATCHES)]
    recalibrate_bn(net, batches, lambda m: m)
    return net


def evaluate_candidate(net, spec, data: ReIDData, cfg: TrainConfig, protocol: str = "val") -> dict:
    """Set the supernet to `spec`, recalibrate its BNs, score it on `protocol` (val or test).
    On test, a dataset's multi-shot galleries (SYSU-style data) are scored too, from the same
    features ("multi_shot"; "settings" and "score" stay the single-shot ones). Every mAP comes
    with its 95% bootstrap interval over identities (`scored`)."""
    prepare_candidate(net, spec, data, cfg)
    return score_model(net, data, protocol)


def score_model(model, data: ReIDData, protocol: str = "val") -> dict:
    """A model's metrics on `protocol` (val or test) with intervals; on test, the multi-shot
    galleries too, from the same features."""
    proto = data.val if protocol == "val" else data.test
    feats = embed(model, proto.pool.images, proto.pool.modality)
    out = scored(feats, proto)
    multi = data.test_multi_shot if protocol == "test" else None
    if multi is not None:
        if multi.pool is not proto.pool:
            raise ValueError(f"{multi.name} ranks a pool other than {proto.name}'s")
        out["multi_shot"] = scored(feats, multi)["settings"]
    return out


def scored(feats: np.ndarray, proto) -> dict:
    """The protocol's metrics per setting, each mAP with its 95% interval over identities
    ("mAP_ci95"), the headline score with its own ("ci95"), and the per-identity statistics
    that paired comparisons between candidates read ("identity_stats": uncertainty.py)."""
    res = score_protocol(feats, proto)
    stats = identity_stats(feats, proto)
    for setting, ci in setting_intervals(stats).items():
        res[setting]["mAP_ci95"] = ci
    return {"score": headline(res), "ci95": interval(stats), "settings": res, "identity_stats": stats}
