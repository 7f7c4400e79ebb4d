"""Calibration for `--precision int8`: images in, the range of every tensor an int8 conv reads out.

Images: `synthetic` (the built-in visible/infrared dataset's renderer: persons drawn from seeded
identities, both modalities) or a folder of images (`visible/` and `infrared/` subfolders for a
cross-modality model; otherwise every image calibrates every modality), preprocessed as the
network's test transform. The graph runs in reidc's numpy interpreter (compiler/ir/interp.py,
the ops' reference semantics), a few images at a time; each measured tensor keeps its minimum
and a uniform sample of its values per modality, summarised by quant_math.summarise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from .base.errors import InputError
from .base.modes import Modality, RunMode
from .ir import Graph
from .ir.interp import run_all
from .passes.quant_math import ActivationRange, sample, summarise

DEFAULT_IMAGES = 16   # per entry: half visible, half infrared for a mixed entry
CHUNK = 4


def synthetic_images(input_size: tuple[int, int], count: int, infrared: bool, seed: int = 0,
                     preprocess: dict | None = None) -> np.ndarray:
    """`count` rendered persons (count, 3, H, W) float32, as `preprocess` (a manifest's) states
    images reach the network; default: the ImageNet-normalised test transform."""
    from .datasets.pool import normalise
    from .datasets.synthetic import _identity, render
    rng = np.random.default_rng([seed, 2718])
    h, w = input_size
    imgs = np.stack([render(_identity(rng), h, w, infrared, np.random.default_rng([seed, k, int(infrared)]))
                     for k in range(count)])
    if preprocess is None:
        return normalise(imgs)
    x = imgs.astype(np.float32).transpose(0, 3, 1, 2) * np.float32(preprocess["scale"])
    mean, std = (np.asarray(preprocess[k], np.float32).reshape(1, 3, 1, 1) for k in ("mean", "std"))
    return np.ascontiguousarray((x - mean) / std)


def _folder_images(root: Path, preprocess: dict, count: int, sub: str | None) -> np.ndarray | None:
    from .imagefolder import image_files, read_images
    folder = root / sub if sub and (root / sub).is_dir() else root
    if sub and folder == root and any((root / s).is_dir() for s in ("visible", "infrared")):
        return None
    files = image_files(folder)
    step = max(1, len(files) // count)
    return read_images(files[::step][:count], preprocess)


def calibration_batch(source: str, mode: RunMode, input_shape, preprocess: dict | None, count: int = DEFAULT_IMAGES,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(images, modality codes or None) to calibrate the `mode` entry with."""
    mods = [Modality.VISIBLE, Modality.INFRARED] if mode == RunMode.MIXED else \
        [Modality.INFRARED if mode == RunMode.INFRARED else Modality.VISIBLE]
    per = max(1, count // len(mods))
    parts = []
    for mod in mods:
        if source == "synthetic":
            if tuple(input_shape)[0] != 3:
                raise InputError(f"--calibration synthetic renders RGB persons; this network takes {input_shape[0]} "
                                 "channels: pass --calibration DIR")
            parts.append(synthetic_images(tuple(input_shape)[-2:], per, mod == Modality.INFRARED, seed, preprocess))
        else:
            root = Path(source)
            if not root.is_dir():
                raise InputError(f"--calibration {source}: expected 'synthetic' or a folder of images")
            if not preprocess:
                raise InputError(f"--calibration {source}: this model states no image preprocessing (a torch.export "
                                 "program): use --calibration synthetic")
            imgs = _folder_images(root, preprocess, per, str(mod) if mode == RunMode.MIXED else None)
            if imgs is None:
                raise InputError(f"--calibration {source}: has no {mod}/ subfolder for the {mode} entry")
            parts.append(imgs)
    x = np.concatenate(parts)
    m = np.concatenate([np.full(len(p), mod.code, np.int32) for p, mod in zip(parts, mods)]) \
        if mode == RunMode.MIXED else None
    return x, m


def calibrate(g: Graph, sites: list[str], x: np.ndarray, m: np.ndarray | None,
              progress: Callable[[str], None] = lambda s: None, seed: int = 0) -> dict[str, ActivationRange]:
    """The range of each tensor in `sites` over the images x (modality codes m for a mixed graph)."""
    rng = np.random.default_rng(seed)
    mods = (0, 1) if m is not None else (None,)
    kept = {s: {k: [] for k in mods} for s in sites}
    low = {s: np.inf for s in sites}
    high = {s: {k: 0.0 for k in mods} for s in sites}
    for i in range(0, len(x), CHUNK):
        progress(f"calibrating {g.name}: images {i + 1}-{min(i + CHUNK, len(x))} of {len(x)}")
        feeds = {"x": x[i:i + CHUNK]}
        if m is not None:
            feeds["modality"] = m[i:i + CHUNK]
        vals = run_all(g, feeds)
        for s in sites:
            v = vals[s]
            low[s] = min(low[s], float(v.min()))
            for k in mods:
                part = v if k is None else v[feeds["modality"] == k]
                if part.size:
                    kept[s][k].append(sample(part, rng))
                    high[s][k] = max(high[s][k], float(np.abs(part).max()))
    return {s: summarise([np.concatenate(kept[s][k]) if kept[s][k] else np.zeros(0, np.float32) for k in mods], low[s],
                         tuple(high[s][k] for k in mods))
            for s in sites}
