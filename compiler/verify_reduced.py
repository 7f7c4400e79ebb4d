"""Verification of a reduced-precision build (int8): exact-to-1e-4 cannot hold, so what a user
cares about is measured instead. The per-sample feature cosine to PyTorch fp32 must reach
COSINE_BUDGET. With a retrieval dataset, rank-1 and mAP on its test protocol may not fall
more than RETRIEVAL_BUDGET points below fp32's."""
from __future__ import annotations

import numpy as np

from .base.errors import InputError, VerificationError
from .base.modes import Modality, RunMode
from .calibration import synthetic_images
from .datasets import load_dataset, normalise
from .datasets.metrics import score_protocol
from .reference import rel_err, seeded_inputs, torch_forward

COSINE_BUDGET = 0.99   # the least per-sample feature cosine to PyTorch fp32
RETRIEVAL_BUDGET = 0.5  # with a retrieval dataset: the most rank-1 / mAP may fall, in points


def verify_reduced(compiled, module, modes, manifest, seed: int, retrieval: str | None, say) -> dict:
    """Reduced precision cannot match fp32 to 1e-4; what a user cares about is the feature: the
    per-sample cosine to PyTorch's fp32 feature must reach COSINE_BUDGET on images like the
    ones it will see (held-out synthetic persons: another seed than calibration's; seeded noise
    for a network that takes no RGB images). Sign flips of a binarized network are part of it."""
    shape = tuple(manifest["input_shape"])
    step = manifest.get("batch") or manifest.get("export_batch")
    n = 8
    batch = -(-n // step) * step if step else n
    persons = shape[0] == 3 and manifest.get("preprocess")
    result = {"status": "passed", "precision": manifest["precision"]["real_valued"],
              "budget": {"min_feature_cosine": COSINE_BUDGET}, "reference": "PyTorch eager fp32, same checkpoint",
              "inputs": (f"{batch} synthetic persons (seed {seed + 1}, not calibration's)" if persons
                         else f"{batch} seeded normal images (seed {seed})"),
              "batch": batch, "min_cosine": {}, "max_rel_err": {}}
    for mode in modes:
        say(f"verifying the {mode} entry against PyTorch (feature cosine)")
        x, m = seeded_inputs(shape, batch, mode, seed)
        if persons:
            half = batch // 2
            x = np.concatenate([synthetic_images(shape[1:], half, False, seed + 1, persons),
                                synthetic_images(shape[1:], batch - half, True, seed + 1, persons)])
            if mode == RunMode.MIXED:
                m = np.concatenate([np.zeros(half, np.int32), np.ones(batch - half, np.int32)])
            else:  # a single-modality entry sees its own modality's images
                x = synthetic_images(shape[1:], batch, mode == RunMode.INFRARED, seed + 1, persons)
        chunks = [slice(i, i + (step or len(x))) for i in range(0, len(x), step or len(x))]
        ref = np.concatenate([torch_forward(module, x[c], mode, None if m is None else m[c]) for c in chunks])
        got = np.concatenate([compiled.run(x[c], m[c] if mode == RunMode.MIXED else mode) for c in chunks])
        cos = (got * ref).sum(1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-30)
        result["min_cosine"][mode] = float(cos.min())
        result["max_rel_err"][mode] = max(rel_err(got[i:i + 1], ref[i:i + 1]) for i in range(len(x)))
        if not cos.min() >= COSINE_BUDGET:
            raise VerificationError(
                f"verification failed: the {mode} entry's {result['precision']} feature has cosine {cos.min():.4f} to "
                f"PyTorch's fp32 feature on sample {int(cos.argmin())} (budget {COSINE_BUDGET}); no artifact written")
    if retrieval:
        result["retrieval"] = _verify_retrieval(compiled, module, modes, manifest, seed, retrieval, say)
    return result


def _verify_retrieval(compiled, module, modes, manifest, seed: int, retrieval: str, say) -> dict:
    """Rank the dataset's test protocol with PyTorch's fp32 features and with the compiled ones
    (each image through its own modality); rank-1 and mAP of the compiled features may not fall
    more than RETRIEVAL_BUDGET points below fp32's in any setting."""
    h, w = manifest["input_shape"][-2:]
    data = load_dataset(retrieval, (h, w), seed, say)
    pool = data.test.pool
    if RunMode.MIXED not in modes and not {RunMode.VISIBLE, RunMode.INFRARED} <= set(modes):
        raise InputError(f"--retrieval ranks infrared queries against a visible gallery: it needs the visible and "
                         f"infrared entries, or mixed (this build has {', '.join(modes)})")
    say(f"ranking {data.name}'s test protocol ({len(pool)} images) with PyTorch fp32 and the "
        f"{manifest['precision']['real_valued']} build")
    step = manifest.get("batch") or 32
    ref_parts, got_parts, order = [], [], []
    for mod in (Modality.VISIBLE, Modality.INFRARED):
        idx = np.flatnonzero(pool.modality == mod.code)
        for i in range(0, len(idx), step):
            part = idx[i:i + step]
            x = normalise(pool.images[part])
            if manifest.get("batch") and len(part) < step:   # a fixed-batch build: pad the last chunk
                x = np.concatenate([x, np.repeat(x[-1:], step - len(part), axis=0)])
            mode = RunMode(str(mod)) if RunMode(str(mod)) in modes else RunMode.MIXED
            m = np.full(len(x), mod.code, np.int32)
            ref_parts.append(torch_forward(module, x, str(mod))[:len(part)])
            got_parts.append(compiled.run(x, m if mode == RunMode.MIXED else mode)[:len(part)])
            order.append(part)
    order = np.concatenate(order)
    out = {}
    for key, parts in (("fp32", ref_parts), ("compiled", got_parts)):
        f = np.zeros((len(pool), parts[0].shape[1]), np.float32)
        f[order] = np.concatenate(parts)
        f /= np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        out[key] = score_protocol(f, data.test)
    rows = {}
    for setting, ref in out["fp32"].items():
        got = out["compiled"][setting]
        queries = len(data.test.settings[setting][0].query)
        rows[setting] = {k: {"fp32": round(100 * ref[k], 2), manifest["precision"]["real_valued"]: round(100 * got[k], 2)}
                         for k in ("rank1", "mAP")}
        rows[setting]["queries"] = queries
        for k in ("rank1", "mAP"):
            drop = 100 * (ref[k] - got[k])
            if drop > RETRIEVAL_BUDGET:
                raise VerificationError(
                    f"verification failed: {setting} {k} falls {drop:.2f} points below PyTorch fp32's "
                    f"({100 * ref[k]:.2f} -> {100 * got[k]:.2f}; budget {RETRIEVAL_BUDGET}) on {data.name}'s test "
                    f"protocol, where one of its {queries} queries moves rank-1 by {100 / queries:.2f} points (a larger "
                    "test set, e.g. synthetic:300, resolves finer); no artifact written")
    return {"dataset": data.name, "protocol": "test", "images": int(len(pool)), "budget_points": RETRIEVAL_BUDGET,
            "settings": rows}
