"""`reidc zoo train`: a zoo network trained on a re-ID dataset, so that what a compile changes
(int8, binarized layers) can be judged by retrieval accuracy and not only by feature cosine.

The whole network (no architecture sampling) is trained from its seeded zoo weights with the
search's recipe: P x K batches (P identities, K visible + K infrared images each, flipped and
cropped), CM-NAS's objective (or, with objective="reidc", reidc's earlier variant: losses.py),
Adam with a warm-up and a cosine decay. The test protocol is scored before and after training.
The output folder is a reidc checkpoint (`reidc compile DIR` loads it) plus `train.json`: the
run's settings (the objective included), a loss trace, the test metrics before and after, and
the seconds it took. A run depends only on its settings and the seed (data, weights,
batches), given the same thread count."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from reidc.compiler.base.atomic import atomic_directory, atomic_write_json, guard_output_dir
from reidc.compiler.base.errors import ArchError, DatasetError, InputError
from reidc.compiler.datasets import ReIDData, load_dataset
from reidc.frontend.arch import ArchSpec, parse_split
from reidc.frontend.checkpoint import SPEC, WEIGHTS, save_checkpoint
from reidc.frontend.zoo import ZOO, zoo_model

from .accuracy import score_model
from .gal import parse_gal
from .losses import DEFAULT_OBJECTIVE, check_objective
from .train import TrainConfig, train_standalone

DEFAULT_STEPS = 300
DEFAULT_INPUT_SIZE = (128, 64)
RECORD = "train.json"
_OURS = frozenset({SPEC, WEIGHTS, RECORD})


def _not_ours(path: Path) -> str | None:
    """The first entry of folder `path` that `reidc zoo train` (or `zoo export`) did not write,
    or None: a trained checkpoint may be replaced, anything else is the user's."""
    names = sorted(p.name for p in path.iterdir())
    odd = [n for n in names if n not in _OURS or not (path / n).is_file() or (path / n).is_symlink()]
    if odd:
        return odd[0]
    return None if SPEC in names else f"no {SPEC}"


def _dataset_inputs(dataset: str) -> list[str]:
    """The folder a dataset is read from (the output may not be it, in it or hold it)."""
    kind, _, arg = dataset.partition(":")
    return [arg.partition("#")[0]] if kind in ("sysu", "regdb") and arg else []


def evaluate(model, data: ReIDData) -> dict[str, dict[str, float]]:
    """Per setting of the test protocol: rank-1/5/10, mAP, mINP (each image through its own
    modality's path, cosine distance)."""
    return evaluate_scored(model, data)[0]


def evaluate_scored(model, data: ReIDData) -> tuple[dict[str, dict[str, float]], dict]:
    """(`evaluate`'s metrics, accuracy.score_model's whole result with the 95% intervals) from
    one embedding of the test pool."""
    scored = score_model(model, data, "test")
    plain = {s: {k: v if type(v) is int else float(v) for k, v in r.items() if k != "mAP_ci95"}
             for s, r in scored["settings"].items()}
    return plain, scored


def _summary(res: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{s} rank-1 {r['rank1']:.3f} mAP {r['mAP']:.3f}" for s, r in res.items())


def train_zoo(name: str, out: str | Path, dataset: str = "synthetic", split: str = "all-split",
              steps: int = DEFAULT_STEPS, input_size=DEFAULT_INPUT_SIZE, seed: int = 0,
              progress: Callable[[str], None] = lambda s: None, objective: str = DEFAULT_OBJECTIVE,
              gal: str | None = None) -> dict:
    """Train zoo network `name` on `dataset` for `steps` steps and write it to `out` as a
    checkpoint folder with `train.json`; return that record (plus "path"). `objective`: the
    training loss, "cmnas" (CM-NAS's) or "reidc" (losses.py).
    Everything is checked (name, split, input size, steps, the output folder) before the data
    is rendered or read; `out` is written only once training and scoring are done."""
    t_start = time.perf_counter()
    if name not in ZOO:
        raise ArchError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}")
    if type(steps) is not int or steps < 1:
        raise InputError(f"--steps {steps!r}: expected a positive number of training steps")
    try:
        check_objective(objective)
        kinds = parse_gal(gal)
        gal = ",".join(kinds) or "none"
    except ValueError as e:
        raise InputError(str(e)) from None
    input_size = tuple(int(v) for v in input_size)
    family, depth = ZOO[name]
    ArchSpec(depth=depth, split=parse_split(split, depth, family), input_size=input_size, family=family)
    inputs = _dataset_inputs(dataset)
    guard_output_dir(out, _not_ours, inputs)

    data = load_dataset(dataset, input_size, seed, progress)
    num_ids = data.train.num_ids
    if num_ids < 2:
        raise DatasetError(f"--dataset {dataset}: {num_ids} training identity; training needs at least 2")
    cfg = TrainConfig(steps=steps, ids_per_batch=min(TrainConfig.ids_per_batch, num_ids), seed=seed,
                      objective=objective, gal=gal)
    t_data = time.perf_counter()

    with torch.random.fork_rng():   # nothing below draws from torch's generator; this makes sure of it
        torch.manual_seed(seed)
        model = zoo_model(name, split, seed, input_size, num_classes=num_ids)
        t_eval = time.perf_counter()
        before = evaluate(model, data)
        t_eval = time.perf_counter() - t_eval
        progress(f"{model.spec.name} untrained (seeded weights): test {_summary(before)}")
        trace, t_train = train_standalone(model, data, cfg, progress)
        t_after = time.perf_counter()
        after, scored = evaluate_scored(model.eval(), data)
        t_eval += time.perf_counter() - t_after
    progress(f"{model.spec.name} after {steps} steps: test {_summary(after)}")

    record = {
        "name": name, "model": model.spec.name, "split": split, "split_bns": sum(1 - s for s in model.spec.split),
        "bns": len(model.spec.split), "dataset": dataset, "dataset_name": data.name, "input_size": list(input_size),
        "seed": seed, "steps": steps, "num_classes": num_ids, "objective": objective, "config": asdict(cfg),
        "threads": torch.get_num_threads(), "loss": trace,
        "test": {"protocol": data.test.name, "before": before, "after": after,
                 "mAP_ci95": {k: v["mAP_ci95"] for k, v in scored["settings"].items()},
                 "score_mAP": scored["score"], "score_mAP_ci95": scored["ci95"]},
        "gal": list(kinds),
        "seconds": {"data": round(t_data - t_start, 2), "train": round(t_train, 2), "eval": round(t_eval, 2)},
        "seconds_per_step": round(t_train / steps, 4),
    }
    with atomic_directory(out, _not_ours, inputs) as tmp:
        save_checkpoint(model, tmp)
        record["seconds"]["total"] = round(time.perf_counter() - t_start, 2)
        atomic_write_json(tmp / RECORD, record)
    return {**record, "path": str(out)}
