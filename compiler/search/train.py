"""Supernet training (single-path one-shot): every step samples one candidate uniformly from
the search space and trains it on a P x K batch (P identities, K visible + K infrared images
each) with CM-NAS's objective, or reidc's earlier variant (`TrainConfig.objective`: losses.py).
Checkpointed atomically every `save_every` steps; a rerun with the same configuration (the
objective included) resumes from the last checkpoint (the batch and candidate of step k depend
only on (seed, k), so a resumed run follows the same sequence)."""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from reidc.compiler.base.atomic import atomic_directory, atomic_write_json
from reidc.compiler.base.errors import InputError
from reidc.frontend.supernet import build_supernet, random_arch, set_arch

from reidc.compiler.datasets import ReIDData, normalise
from .distributed import global_batchnorm, plain_batchnorm
from .gal import Gal, GalConfig, parse_gal
from .losses import DEFAULT_OBJECTIVE, check_objective, cmnas_loss

WEIGHTS, STATE, CONFIG, GAL = "supernet.safetensors", "optimizer.pt", "train.json", "gal.safetensors"
LOG_EVERY = 25   # steps between the progress lines of a stand-alone training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 600
    ids_per_batch: int = 8        # P
    per_modality: int = 2         # K images per identity and modality
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    save_every: int = 50
    objective: str = DEFAULT_OBJECTIVE    # losses.OBJECTIVES: "cmnas" | "reidc"
    gal: str = "none"             # BiRe-ID's KR-GAL / FR-GAL terms: "none" | "kr" | "fr" | "kr,fr" (gal.py)

    def __post_init__(self):
        check_objective(self.objective)
        object.__setattr__(self, "gal", ",".join(parse_gal(self.gal)) or "none")   # "fr, kr" is "kr,fr"

    def gal_config(self) -> GalConfig | None:
        kinds = parse_gal(self.gal)
        return GalConfig(kinds=kinds) if kinds else None


def _augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip and a random crop from a 4-pixel zero padding (uint8 NHWC)."""
    n, h, w, _ = images.shape
    pad = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    out = np.empty_like(images)
    for i in range(n):
        dy, dx = rng.integers(0, 9, 2)
        crop = pad[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if rng.random() < 0.5 else crop
    return out


def sample_batch(data: ReIDData, cfg: TrainConfig, step: int, augment: bool = True):
    """(images (N, 3, H, W), labels, modality) for step `step`: P identities x (K visible + K infrared)."""
    rng = np.random.default_rng([cfg.seed, step])
    pool = data.train
    ids = rng.choice(np.unique(pool.pids), size=cfg.ids_per_batch, replace=False)
    idx = []
    for pid in ids:
        for mod in (0, 1):
            cand = np.flatnonzero((pool.pids == pid) & (pool.modality == mod))
            idx.extend(rng.choice(cand, size=cfg.per_modality, replace=len(cand) < cfg.per_modality))
    idx = np.array(idx)
    images = pool.images[idx]
    if augment:
        images = _augment(images, rng)
    return (torch.from_numpy(normalise(images)), torch.from_numpy(pool.pids[idx]),
            torch.from_numpy(pool.modality[idx]))


def _optimizer(net, cfg: TrainConfig):
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def _lr(cfg: TrainConfig, step: int) -> float:
    warm = max(1, cfg.steps // 20)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return float(cfg.lr * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, cfg.steps - warm))))


def _identity(data: ReIDData, cfg: TrainConfig) -> dict:
    return {"dataset": data.name, "input_size": list(data.input_size), "num_classes": int(data.train.num_ids),
            "config": asdict(cfg)}


def read_record(out: Path) -> dict | None:
    """`out/train.json` checked (it is input: a truncated or edited file is an error naming it),
    or None when there is none."""
    path = out / CONFIG
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable supernet record ({e}); delete {out} to train afresh") from None
    why = None
    if not isinstance(saved, dict):
        why = f"a JSON {type(saved).__name__}, not an object"
    elif not isinstance(saved.get("config"), dict):
        why = "no config object"
    elif type(saved.get("steps_done")) is not int or saved["steps_done"] < 0:
        why = f"steps_done is {saved.get('steps_done')!r}, not a step count"
    if why:
        raise ValueError(f"{path}: not a reidc supernet record ({why}); delete {out} to train afresh")
    return saved


def seconds_per_step(record: dict | None) -> float | None:
    """The training speed a previous run recorded, if it is a plausible one."""
    v = (record or {}).get("seconds_per_step")
    return float(v) if type(v) in (int, float) and math.isfinite(v) and v > 0 else None


def load_supernet(out: Path, data: ReIDData, cfg: TrainConfig):
    """(supernet, optimizer, steps done): from `out` when it holds a run of this configuration."""
    with torch.random.fork_rng():  # the initial weights depend on the seed only
        torch.manual_seed(cfg.seed)
        net = build_supernet(data.input_size, data.train.num_ids)
    opt = _optimizer(net, cfg)
    done = 0
    saved = read_record(out)
    if saved is not None:
        # the same run, possibly with more steps asked for (which goes on training)
        strip = lambda d: {**d, "config": {k: v for k, v in (d.get("config") or {}).items() if k != "steps"}}  # noqa: E731
        want = _identity(data, cfg)
        # a record without an objective predates the choice: it was trained with reidc's variant
        got = {**saved, "config": {"objective": "reidc", "gal": "none", **saved["config"]}}
        if got["config"]["objective"] != cfg.objective:
            raise ValueError(f"{out} holds a supernet trained with the {got['config']['objective']!r} objective, "
                             f"not {cfg.objective!r}; use another -o directory (or --objective "
                             f"{got['config']['objective']} to go on with it)")
        if strip({k: got.get(k) for k in want}) != strip(want):
            raise ValueError(f"{out} holds a supernet trained with another configuration "
                             f"({saved.get('dataset')}, {saved.get('config')}); use another -o directory")
        for name, load in ((WEIGHTS, lambda p: net.load_state_dict(load_file(str(p)))),
                           (STATE, lambda p: opt.load_state_dict(torch.load(str(p), weights_only=True)))):
            try:
                load(out / name)
            except Exception as e:  # safetensors, pickle and shape errors alike: the file is not this supernet's
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise ValueError(f"{out / name}: cannot load the supernet's state ({why[:200]}); "
                                 f"delete {out} to train afresh") from None
        done = saved["steps_done"]
    return net, opt, done


def _save(out: Path, net, opt, data, cfg, done: int, step_s: float | None, losses: list[float], refine=None) -> None:
    with atomic_directory(out, "supernet") as tmp:
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(tmp / WEIGHTS))
        if refine is not None:   # the discriminators and 1x1 convs, so that a resumed run goes on with them
            save_file({k: v.detach().contiguous() for k, v in refine.state_dict().items()}, str(tmp / GAL))
        torch.save(opt.state_dict(), str(tmp / STATE))
        atomic_write_json(tmp / CONFIG, {**_identity(data, cfg), "steps_done": done,
                                         "seconds_per_step": None if step_s is None else round(step_s, 4),
                                         "losses": losses[:done]})


def loss_curve(record: dict | None) -> list[float]:
    """The total loss of each step a record's run took (empty where it has none)."""
    v = (record or {}).get("losses")
    ok = isinstance(v, list) and all(type(x) in (int, float) and math.isfinite(x) for x in v)
    return [float(x) for x in v] if ok else []


@dataclass
class Parallel:
    """A training process's place among several (distributed.py, train_parallel.py): its rank,
    their number, the DDP-wrapped step, and how they agree to stop."""
    rank: int
    world: int
    step: object                      # DDP(TrainStep): (x, y, m) of this process's share -> (loss, parts)
    agree: Callable[[bool], bool]     # any process's "stop" -> every process's

    def share(self, *tensors):
        """This process's contiguous share of the global batch: whole identities, both modalities."""
        n = len(tensors[0]) // self.world
        return tuple(t[self.rank * n:(self.rank + 1) * n] for t in tensors)


def probe_step_seconds(net, data: ReIDData, cfg: TrainConfig, step: int = 0) -> float:
    """Seconds per training step, timed on a copy (the second of two steps: the first warms up)."""
    net = copy.deepcopy(net).train()
    took = 0.0
    for i in range(2):
        t0 = time.perf_counter()
        set_arch(net, random_arch(random.Random(cfg.seed * 1_000_003 + step + i), data.input_size, data.train.num_ids))
        x, y, m = sample_batch(data, cfg, step + i)
        feat = net.backbone(x, m)
        neck = net.bottleneck(feat)
        loss, _ = cmnas_loss(feat, neck, net.classifier(neck), y, m, cfg.objective)
        loss.backward()
        took = time.perf_counter() - t0
    return took * 1.1  # the optimizer step


def train_supernet(data: ReIDData, cfg: TrainConfig, out: Path, deadline: float | None = None,
                   progress: Callable[[str], None] = lambda s: None, state=None, parallel: Parallel | None = None):
    """Train (or resume) the supernet in `out`; stop at cfg.steps or the deadline (time.time()).
    `state`: what `load_supernet(out, ...)` returned, if the caller has it already; `parallel`:
    this process's place among several (train_parallel.py), which then trains on its share of
    each batch and only rank 0 writes. Returns (supernet in eval mode, steps done)."""
    out = Path(out)
    net, opt, done = state or load_supernet(out, data, cfg)
    record = read_record(out)
    step_s, losses = seconds_per_step(record), loss_curve(record)[:done]
    main = parallel is None or parallel.rank == 0
    if done >= cfg.steps:
        progress(f"supernet in {out} is trained ({done} steps)")
        return net.eval(), done
    if done:
        progress(f"resuming supernet training at step {done} of {cfg.steps} ({cfg.objective} objective)")
    else:
        progress(f"training the supernet for {cfg.steps} steps with the {cfg.objective} objective")
    net.train()
    refine = _gal(net, cfg, out, done)
    global_batchnorm(net)   # one BN formulation, in one process or several (distributed.py)
    try:
        done = _steps(net, opt, done, data, cfg, out, deadline, progress, parallel, step_s, losses, main, refine)
    finally:
        plain_batchnorm(net)
        if refine is not None:
            refine.close()
    return net.eval(), done


def _gal(net, cfg: TrainConfig, out: Path, done: int) -> Gal | None:
    """The supernet's GAL terms (cfg.gal): fresh at step 0 (alpha set to mean |w|), else the
    saved discriminators and 1x1 convs."""
    gc = cfg.gal_config()
    if gc is None:
        return None
    refine = Gal(net, gc, init_alpha=done == 0)
    if done:
        try:
            refine.load_state_dict(load_file(str(out / GAL)))
        except Exception as e:   # missing, truncated or another network's
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ValueError(f"{out / GAL}: cannot load the supernet's GAL state ({why[:200]}); "
                             f"delete {out} to train afresh") from None
    return refine


def _steps(net, opt, done, data, cfg, out, deadline, progress, parallel, step_s, losses, main, refine=None) -> int:
    t0, start, log = time.perf_counter(), done, {}
    for step in range(done, cfg.steps):
        stop = deadline is not None and time.time() > deadline
        if parallel is not None:
            stop = parallel.agree(stop)
        if stop:
            progress(f"time limit: supernet training stops at step {step} of {cfg.steps} (saved; rerun to continue)")
            break
        arch = random_arch(random.Random(cfg.seed * 1_000_003 + step), data.input_size, data.train.num_ids)
        set_arch(net, arch)
        x, y, m = sample_batch(data, cfg, step)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        if parallel is None:
            feat = net.backbone(x, m)       # the pre-BNNeck feature
            neck = net.bottleneck(feat)      # the BNNeck's output
            loss, parts = cmnas_loss(feat, neck, net.classifier(neck), y, m, cfg.objective)
            if refine is not None:
                extra, more = refine.loss()
                loss, parts = loss + extra, {**parts, **more}
        else:                               # the global batch's loss from this process's share
            loss, parts = parallel.step(*parallel.share(x, y, m))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        for k, v in parts.items():
            log[k] = 0.9 * log.get(k, v) + 0.1 * v
        done = step + 1
        rate = (done - start) / max(time.perf_counter() - t0, 1e-6)
        step_s = 1 / max(rate, 1e-6)
        if done % cfg.save_every == 0 and done < cfg.steps and main:
            _save(out, net, opt, data, cfg, done, step_s, losses, refine)
        if done % 25 == 0 or done == cfg.steps:
            progress(f"supernet step {done}/{cfg.steps}: " + ", ".join(f"{k} {v:.3f}" for k, v in log.items())
                     + f"; {rate * len(y):.0f} img/s, {(cfg.steps - done) / max(rate, 1e-6) / 60:.1f} min left")
    if main:
        _save(out, net, opt, data, cfg, done, step_s, losses, refine)
    return done


def train_standalone(model, data: ReIDData, cfg: TrainConfig, progress=lambda s: None) -> tuple[list[dict], float]:
    """Train one network (a zoo model, a supernet's child) in place with the search's recipe;
    (loss trace: the mean of each term over every window of steps, seconds). A loss that is not
    finite is an InputError naming the step. cfg.gal: BiRe-ID's KR-GAL / FR-GAL terms (gal.py)
    added for the network's binarized convs and stages."""
    every = max(1, min(LOG_EVERY, cfg.steps // 8))
    opt = _optimizer(model, cfg)
    model.train()
    gc = cfg.gal_config()
    refine = Gal(model, gc) if gc is not None else None
    try:
        return _standalone_steps(model, data, cfg, progress, every, opt, refine)
    finally:
        if refine is not None:
            refine.close()


def _standalone_steps(model, data, cfg, progress, every, opt, refine):
    trace, window, n = [], {}, 0
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        x, y, m = sample_batch(data, cfg, step)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step)
        feat = model.backbone(x, m)     # the pre-BNNeck feature (the triplets')
        neck = model.bottleneck(feat)   # the BNNeck's output (CM-NAS's SP and CMMD; the classifier's input)
        loss, parts = cmnas_loss(feat, neck, model.classifier(neck), y, m, cfg.objective)
        if refine is not None:
            extra, more = refine.loss()
            loss, parts = loss + extra, {**parts, **more}
        if not torch.isfinite(loss):
            raise InputError(f"training diverged at step {step + 1} (loss {float(loss)}); try another --seed "
                             "or fewer --steps")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            window[k] = window.get(k, 0.0) + v
        n += 1
        done = step + 1
        if done % every == 0 or done == cfg.steps:
            row = {"step": done, "lr": _lr(cfg, step), **{k: v / n for k, v in window.items()}}
            trace.append({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})
            window, n = {}, 0
            took = time.perf_counter() - t0
            if done % LOG_EVERY == 0 or done == cfg.steps:
                rate = done / max(took, 1e-6)
                progress(f"train step {done}/{cfg.steps}: loss {row['loss']:.3f} ("
                         + ", ".join(f"{k} {row[k]:.3f}" for k in parts) + f"); "
                         f"{rate * len(y):.0f} img/s, {(cfg.steps - done) / max(rate, 1e-6) / 60:.1f} min left")
    return trace, time.perf_counter() - t0
