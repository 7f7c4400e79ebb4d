"""Image pools and evaluation protocols shared by every dataset (pure numpy).

A `Pool` is a set of images with identity, camera and modality per image. A `Protocol` is a
list of evaluation settings over one pool; each setting has one or more trials (query
indices, gallery indices), e.g. SYSU-MM01's ten random single-shot gallery draws.

Gallery draws come in two kinds (`sysu_style_protocol`):
- test protocols use the standard evaluation's draws: trial t (t = 0..9) is seeded with
  Python's `random.seed(t)` and takes `random.sample(files, shot)` per (identity, visible
  camera), identities in ascending order, cameras in the setting's order, files sorted
  (JDAI-CV/CM-NAS `datasets/sysu_dataset.py: process_gallery_sysu`, after AGW's
  `data_manager.py`). They do not depend on the search's `--seed`, so every run reports on
  the same galleries, and on a SYSU-MM01 folder they are CM-NAS's galleries, image for image;
- the search's validation protocols keep reidc's own draws, seeded by the search's `--seed`
  (`np.random.default_rng([seed, t])`): the candidates a search compares share them.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from reidc.compiler.base.errors import DatasetError
from reidc.compiler.ir import Modality
from reidc.frontend.arch import IMAGENET_MEAN, IMAGENET_STD

MEAN = np.array(IMAGENET_MEAN, np.float32)  # ImageNet statistics, as ReID code uses (and `reidc run` on images)
STD = np.array(IMAGENET_STD, np.float32)


@dataclass
class Pool:
    images: np.ndarray      # (N, H, W, 3) uint8
    pids: np.ndarray        # (N,) int64 identity labels
    cams: np.ndarray        # (N,) int64 camera ids
    modality: np.ndarray    # (N,) int64: Modality codes (0 visible, 1 infrared)
    #: (N,) str: the file each image was read from (folder datasets), else None
    paths: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.images)
        if not (len(self.pids) == len(self.cams) == len(self.modality) == n):
            raise DatasetError(f"pool arrays disagree in length: {n} images, {len(self.pids)} labels")
        if self.paths is not None and len(self.paths) != n:
            raise DatasetError(f"pool arrays disagree in length: {n} images, {len(self.paths)} paths")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "Pool":
        return Pool(self.images[idx], self.pids[idx], self.cams[idx], self.modality[idx],
                    None if self.paths is None else self.paths[idx])

    def relabelled(self) -> "Pool":
        """Identity labels remapped to 0..C-1 (for the classifier)."""
        _, inv = np.unique(self.pids, return_inverse=True)
        return Pool(self.images, inv.astype(np.int64), self.cams, self.modality, self.paths)

    @property
    def num_ids(self) -> int:
        return len(np.unique(self.pids))


@dataclass
class Trial:
    query: np.ndarray       # indices into the protocol's pool
    gallery: np.ndarray


@dataclass
class Protocol:
    name: str
    pool: Pool
    settings: dict[str, list[Trial]]
    #: (query camera, gallery camera) pairs left out of the ranking (SYSU-MM01: cam3 vs cam2,
    #: the same room seen by an infrared and a visible camera)
    exclude: tuple[tuple[int, int], ...] = ()
    #: CMC on the ranking with only each identity's first image (SYSU-MM01's evaluation code);
    #: False: on the full ranking (RegDB's). See `metrics`.
    cmc_first_per_id: bool = False
    notes: dict = field(default_factory=dict)


@dataclass
class ReIDData:
    """A dataset ready for search: training pool, a validation protocol that the search scores
    candidates on, and a test protocol reported for the final picks (never searched on).
    `test_multi_shot`: SYSU-style data's multi-shot (10-shot) galleries over the test pool, the
    standard's other gallery setting (the single-shot ones are `test`). `val_in_train`: the
    validation identities are in `train` too (a final training on the standard's training ids,
    SYSU-MM01's train+val); the search loads its data with them held out (False)."""
    name: str
    train: Pool
    val: Protocol
    test: Protocol
    input_size: tuple[int, int]
    test_multi_shot: Protocol | None = None
    val_in_train: bool = False

    def __post_init__(self):
        self.train = self.train.relabelled()  # classifier labels 0..C-1, whatever the dataset's ids


def normalise(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, ImageNet mean/std."""
    x = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))


#: `sysu_style_protocol(seed=STANDARD_DRAWS)`: the standard evaluation's gallery draws
STANDARD_DRAWS = None
#: the multi-shot gallery setting's images per (identity, camera) (CM-NAS's `test_sysu.sh --shot 10`)
MULTI_SHOT = 10


def standard_gallery(pool: Pool, cams, shot: int, trial: int) -> np.ndarray:
    """Trial `trial`'s gallery as SYSU-MM01's standard evaluation draws it (CM-NAS's
    `process_gallery_sysu(data_root, mode, shot, trial)`): a generator seeded with `trial` as
    `random.seed(trial)` seeds Python's, then per identity (ascending) and camera (in `cams`'
    order) `sample(files, shot)` over that camera's images in pool order (a folder pool's order
    is the sorted file names, as CM-NAS lists them). Up to `shot` images: where a camera has
    fewer, all of them (CM-NAS's `random.sample` would raise). For shot 1 this is also AGW's
    `random.choice` (both take `_randbelow(len(files))`). Indices in the drawn order."""
    rng = random.Random(trial)
    g: list[int] = []
    for pid in np.unique(pool.pids):
        for cam in cams:
            idx = np.flatnonzero((pool.pids == pid) & (pool.cams == cam)).tolist()
            if idx:
                g.extend(rng.sample(idx, min(shot, len(idx))))
    return np.array(g, np.int64)


def sysu_style_protocol(name: str, pool: Pool, settings: dict[str, tuple[int, ...]], query_cams, trials: int,
                        seed: int | None, shot: int = 1) -> Protocol:
    """SYSU-MM01's protocol: every infrared image of `query_cams` is a query; the gallery of a
    trial holds up to `shot` random images per (identity, visible camera) of the setting's
    cameras; cam-3 queries skip cam-2 images, and the CMC counts each identity once (SYSU's code).
    `seed`: STANDARD_DRAWS (None) for the standard evaluation's draws, trial t = 0..trials-1
    seeded with t alone (`standard_gallery`; test protocols); an int for reidc's draws seeded
    with (seed, t) (the search's validation protocols, seeded by its `--seed`)."""
    q = np.flatnonzero(np.isin(pool.cams, query_cams))
    out = {}
    for setting, cams in settings.items():
        draws = []
        for t in range(trials):
            if seed is STANDARD_DRAWS:
                draws.append(Trial(q, standard_gallery(pool, cams, shot, t)))
                continue
            rng = np.random.default_rng([seed, t])
            g = []
            for pid in np.unique(pool.pids):
                for cam in cams:
                    idx = np.flatnonzero((pool.pids == pid) & (pool.cams == cam))
                    if len(idx):
                        g.extend(rng.choice(idx, size=min(shot, len(idx)), replace=False).tolist())
            draws.append(Trial(q, np.array(sorted(g), np.int64)))
        out[setting] = draws
    how = "standard draws: trial t seeded with t" if seed is STANDARD_DRAWS else f"draws seeded with ({seed}, trial)"
    kind = "single" if shot == 1 else "multi"
    return Protocol(name, pool, out, exclude=((3, 2),), cmc_first_per_id=True,
                    notes={"query": f"infrared cams {list(query_cams)}",
                           "gallery": f"up to {shot} per identity and camera ({kind}-shot), {trials} random draws ({how})"})


def cross_modality_protocol(name: str, pool: Pool) -> Protocol:
    """Both directions over a pool (RegDB): visible queries against the infrared gallery and back."""
    vis, ir = (np.flatnonzero(pool.modality == m.code) for m in (Modality.VISIBLE, Modality.INFRARED))
    return Protocol(name, pool, {"visible-to-infrared": [Trial(vis, ir)], "infrared-to-visible": [Trial(ir, vis)]})


def average_over_trials(results: list[dict[str, dict]]) -> dict[str, dict]:
    """Per setting, the mean of each metric over several runs' results (`score_protocol`'s
    output per run), e.g. RegDB's 10 official train/test splits, one trained model each (AGW's
    `test.py` prints this "All Average"); `runs` says how many were averaged."""
    if not results:
        raise ValueError("no results to average")
    if any(set(r) != set(results[0]) for r in results):
        raise ValueError("the results to average have different settings")
    out = {}
    for setting in results[0]:
        keys = [k for k in results[0][setting] if k not in ("trials", "queries", "runs")]
        out[setting] = {**{k: float(np.mean([r[setting][k] for r in results])) for k in keys}, "runs": len(results)}
    return out
