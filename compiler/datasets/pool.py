"""Image pools and evaluation protocols shared by every dataset (pure numpy).

A `Pool` is a set of images with identity, camera and modality per image. A `Protocol` is a
list of evaluation settings over one pool; each setting has one or more trials (query
indices, gallery indices), e.g. SYSU-MM01's ten random single-shot gallery draws.
"""
from __future__ import annotations

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

    def __post_init__(self):
        n = len(self.images)
        if not (len(self.pids) == len(self.cams) == len(self.modality) == n):
            raise DatasetError(f"pool arrays disagree in length: {n} images, {len(self.pids)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "Pool":
        return Pool(self.images[idx], self.pids[idx], self.cams[idx], self.modality[idx])

    def relabelled(self) -> "Pool":
        """Identity labels remapped to 0..C-1 (for the classifier)."""
        _, inv = np.unique(self.pids, return_inverse=True)
        return Pool(self.images, inv.astype(np.int64), self.cams, self.modality)

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
    candidates on, and a test protocol reported for the final picks (never searched on)."""
    name: str
    train: Pool
    val: Protocol
    test: Protocol
    input_size: tuple[int, int]

    def __post_init__(self):
        self.train = self.train.relabelled()  # classifier labels 0..C-1, whatever the dataset's ids


def normalise(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32, ImageNet mean/std."""
    x = images.astype(np.float32) / 255.0
    return np.ascontiguousarray(((x - MEAN) / STD).transpose(0, 3, 1, 2))


def sysu_style_protocol(name: str, pool: Pool, settings: dict[str, tuple[int, ...]], query_cams, trials: int,
                        seed: int, shot: int = 1) -> Protocol:
    """SYSU-MM01's protocol: every infrared image of `query_cams` is a query; the gallery of a
    trial holds `shot` random images per (identity, visible camera) of the setting's cameras;
    cam-3 queries skip cam-2 images, and the CMC counts each identity once (SYSU's code)."""
    q = np.flatnonzero(np.isin(pool.cams, query_cams))
    out = {}
    for setting, cams in settings.items():
        draws = []
        for t in range(trials):
            rng = np.random.default_rng([seed, t])
            g = []
            for pid in np.unique(pool.pids):
                for cam in cams:
                    idx = np.flatnonzero((pool.pids == pid) & (pool.cams == cam))
                    if len(idx):
                        g.extend(rng.choice(idx, size=min(shot, len(idx)), replace=False).tolist())
            draws.append(Trial(q, np.array(sorted(g), np.int64)))
        out[setting] = draws
    return Protocol(name, pool, out, exclude=((3, 2),), cmc_first_per_id=True,
                    notes={"query": f"infrared cams {list(query_cams)}", "gallery": f"{shot}-shot, {trials} random draws"})


def cross_modality_protocol(name: str, pool: Pool) -> Protocol:
    """Both directions over a pool (RegDB): visible queries against the infrared gallery and back."""
    vis, ir = (np.flatnonzero(pool.modality == m.code) for m in (Modality.VISIBLE, Modality.INFRARED))
    return Protocol(name, pool, {"visible-to-infrared": [Trial(vis, ir)], "infrared-to-visible": [Trial(ir, vis)]})
