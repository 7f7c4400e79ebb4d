"""Stand-alone checks of a search: candidates taken out of the supernet and fine-tuned on their
own, so that reported accuracy is a network's, not a supernet child's, and so that one can see
whether the supernet ranks candidates as stand-alone training does.

A candidate starts from its inherited weights (BNs recalibrated, `accuracy.prepare_candidate`),
is trained alone with the supernet's recipe and objective for `steps` steps (the batches of
steps 0..steps-1 of a seed offset from the supernet's, so no candidate sees another's order),
has its BN statistics re-estimated, and is scored on validation (and the pick on test) with
the intervals of uncertainty.py. Kendall's tau-b between the supernet's validation scores and
the stand-alone ones says how far the supernet's ranking holds.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from reidc.frontend.supernet import extract, recalibrate_bn

from .accuracy import RECAL_BATCHES, prepare_candidate, score_model
from .train import TrainConfig, sample_batch, train_standalone

#: seed offset of stand-alone fine-tuning batches from the supernet's
SEED_OFFSET = 7919


def kendall_tau(a, b) -> float | None:
    """Kendall's tau-b of two score lists (ties in either counted as neither concordant nor
    discordant, and corrected for); None for fewer than 3 pairs or a constant list."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} scores against {len(b)}")
    if len(a) < 3:
        return None
    i, j = np.triu_indices(len(a), 1)
    da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    n_a, n_b = np.count_nonzero(da), np.count_nonzero(db)
    if n_a == 0 or n_b == 0:
        return None
    return float(np.sum(da * db) / np.sqrt(n_a * n_b))


def finetune(net, spec, data, cfg: TrainConfig, steps: int, progress: Callable[[str], None] = lambda s: None):
    """Candidate `spec` out of supernet `net` (left unchanged), trained alone for `steps` steps
    (with cfg.gal's terms, gal.py); eval mode, BNs re-estimated on the recalibration batches."""
    model = extract(prepare_candidate(net, spec, data, cfg), spec)
    own = replace(cfg, steps=steps, seed=cfg.seed + SEED_OFFSET)
    train_standalone(model, data, own, progress)
    batches = [sample_batch(data, cfg, 10_000_000 + i, augment=False)[::2] for i in range(RECAL_BATCHES)]
    recalibrate_bn(model, batches, lambda m: m)
    return model.eval()


def check(net, cands: list, data, cfg: TrainConfig, steps: int, room: Callable[[float], bool],
          progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Fine-tune each of `cands` ((key, spec, supernet validation mAP)) alone while `room(seconds
    the last one took)` allows; a row per candidate done."""
    rows, took = [], 0.0
    for k, (key, spec, sup) in enumerate(cands):
        if k and not room(took):
            progress(f"time limit: {k} of {len(cands)} candidates fine-tuned stand-alone")
            break
        t = time.time()
        progress(f"stand-alone check {k + 1}/{len(cands)}: fine-tuning {key} for {steps} steps")
        val = score_model(finetune(net, spec, data, cfg, steps), data)
        took = time.time() - t
        rows.append({"key": key, "supernet_val_mAP": sup, "standalone_val_mAP": val["score"],
                     "standalone_val_mAP_ci95": val["ci95"], "seconds": round(took, 1)})
    return rows
