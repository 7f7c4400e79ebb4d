"""Loaders for SYSU-MM01 and RegDB as they are distributed (the user points at the folder).

SYSU-MM01: `cam1..cam6/<pid:04d>/<n:04d>.jpg`, `exp/{train,val,test}_id.txt` (one line of
comma-separated ids). Visible cameras 1, 2, 4, 5 (1, 2 indoor), infrared 3, 6. Protocol:
infrared queries against a visible gallery, all-search (cams 1, 2, 4, 5) and indoor-search
(cams 1, 2), single-shot galleries drawn at random per trial; a cam-3 query does not rank cam-2
images (same room); the CMC counts each identity once (SYSU's evaluation code). The search
trains on the train ids and scores candidates on the val ids.

RegDB: `idx/{train,test}_{visible,thermal}_<trial>.txt` (lines `relative/path label`) with the
images under `Visible/` and `Thermal/`. Protocol: both directions, visible-to-infrared and
infrared-to-visible. RegDB has no validation ids: the last fifth of the training ids are held
out for the search.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from reidc.compiler.base.atomic import atomic_write_text
from reidc.compiler.ir import Modality

from .pool import DatasetError, Pool, ReIDData, cross_modality_protocol, sysu_style_protocol

SYSU_VISIBLE, SYSU_INFRARED = (1, 2, 4, 5), (3, 6)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB").resize((size[1], size[0]), Image.BILINEAR), np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DatasetError(f"{path}: cannot read image ({e})") from None


def _ids(path: Path) -> list[int]:
    try:
        text = path.read_text().strip()
        return sorted({int(t) for t in text.replace("\n", ",").split(",") if t.strip()})
    except OSError:
        raise DatasetError(f"{path}: missing; a SYSU-MM01 folder has exp/train_id.txt, val_id.txt, test_id.txt") from None
    except ValueError as e:
        raise DatasetError(f"{path}: not a comma-separated list of ids ({e})") from None


def _load(files: list[tuple[Path, int, int, int]], size, progress, what: str) -> Pool:
    if not files:
        raise DatasetError(f"{what}: no images found")
    images = []
    for i, (p, *_rest) in enumerate(files):
        if i % 2000 == 0:
            progress(f"reading {what}: {i}/{len(files)} images")
        images.append(read_image(p, size))
    pid, cam, mod = (np.array(col, np.int64) for col in list(zip(*files))[1:])
    return Pool(np.stack(images), pid, cam, mod)


def sysu(root: str | Path, input_size=(64, 32), trials: int = 10, seed: int = 0,
         progress: Callable[[str], None] = lambda s: None) -> ReIDData:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such SYSU-MM01 folder")
    missing = [f"cam{c}" for c in range(1, 7) if not (root / f"cam{c}").is_dir()]
    if missing:
        raise DatasetError(f"{root}: not a SYSU-MM01 folder (no {', '.join(missing)})")
    split = {k: _ids(root / "exp" / f"{k}_id.txt") for k in ("train", "val", "test")}

    def files(ids):
        out = []
        for pid in ids:
            for cam in range(1, 7):
                d = root / f"cam{cam}" / f"{pid:04d}"
                if d.is_dir():
                    mod = Modality.INFRARED if cam in SYSU_INFRARED else Modality.VISIBLE
                    out += [(p, pid, cam, mod.code) for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        return out

    pools = {k: _load(files(ids), input_size, progress, f"SYSU-MM01 {k} ids") for k, ids in split.items()}
    for k, pool in pools.items():
        if not all((pool.modality == m.code).any() for m in Modality):
            raise DatasetError(f"{root}: the {k} ids have images of only one modality")
    return ReIDData(
        name=f"SYSU-MM01 ({root})", train=pools["train"],
        val=sysu_style_protocol("val", pools["val"], {"all-search": SYSU_VISIBLE}, SYSU_INFRARED, min(trials, 3), seed),
        test=sysu_style_protocol("test", pools["test"], {"all-search": SYSU_VISIBLE, "indoor-search": (1, 2)},
                                 SYSU_INFRARED, trials, seed),
        input_size=tuple(input_size))


def _list(root: Path, name: str, mod: Modality) -> list[tuple[Path, int, int, int]]:
    path = root / "idx" / name
    try:
        lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
        return [(root / rel, int(label), 1 if mod == Modality.VISIBLE else 2, mod.code) for rel, label in lines]
    except OSError:
        raise DatasetError(f"{path}: missing; a RegDB folder has idx/train_visible_<trial>.txt and the like") from None
    except ValueError:
        raise DatasetError(f"{path}: expected lines of 'relative/path label'") from None


def regdb(root: str | Path, input_size=(64, 32), trial: int = 1,
          progress: Callable[[str], None] = lambda s: None) -> ReIDData:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such RegDB folder")
    train, test = ([f for mod, file in ((Modality.VISIBLE, "visible"), (Modality.INFRARED, "thermal"))
                    for f in _list(root, f"{part}_{file}_{trial}.txt", mod)] for part in ("train", "test"))
    ids = sorted({f[1] for f in train})
    held = set(ids[len(ids) - max(1, len(ids) // 5):])
    train_pool = _load([f for f in train if f[1] not in held], input_size, progress, "RegDB train ids")
    val_pool = _load([f for f in train if f[1] in held], input_size, progress, "RegDB held-out ids")
    test_pool = _load(test, input_size, progress, "RegDB test ids")
    return ReIDData(name=f"RegDB trial {trial} ({root})", train=train_pool,
                    val=cross_modality_protocol("val", val_pool), test=cross_modality_protocol("test", test_pool),
                    input_size=tuple(input_size))


def write_sysu_layout(data: ReIDData, root: str | Path) -> Path:
    """Write a dataset in SYSU-MM01's folder layout (JPEG, `exp/*_id.txt`): a small real-format
    folder for tests, or to look at the synthetic images."""
    from PIL import Image
    root = Path(root)
    parts = {"train": data.train, "val": data.val.pool, "test": data.test.pool}
    for part, pool in parts.items():
        (root / "exp").mkdir(parents=True, exist_ok=True)
        atomic_write_text(root / "exp" / f"{part}_id.txt", ",".join(str(p + 1) for p in np.unique(pool.pids)) + "\n")
        count: dict[tuple[int, int], int] = {}
        for img, pid, cam in zip(pool.images, pool.pids, pool.cams):
            d = root / f"cam{cam}" / f"{pid + 1:04d}"
            d.mkdir(parents=True, exist_ok=True)
            k = count[(pid, cam)] = count.get((pid, cam), 0) + 1
            Image.fromarray(img).save(d / f"{k:04d}.jpg", quality=95)
    return root
