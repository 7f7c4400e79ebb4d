"""Loaders for SYSU-MM01 and RegDB as they are distributed (the user points at the folder).

SYSU-MM01: `cam1..cam6/<pid:04d>/<n:04d>.jpg`, `exp/{train,val,test}_id.txt` (one line of
comma-separated ids). Visible cameras 1, 2, 4, 5 (1, 2 indoor), infrared 3, 6. Test protocol
as the standard evaluation (CM-NAS's `test.py` / `test_sysu.sh`, after AGW's): infrared
queries against a visible gallery, all-search (cams 1, 2, 4, 5) and indoor-search (cams 1, 2),
each with single-shot galleries (`test`) and multi-shot, up to 10 per (identity, camera)
(`test_multi_shot`), 10 random gallery draws each, trial t drawn as CM-NAS's
`process_gallery_sysu(..., trial=t)` draws it (same files, same `random` calls: pool.py); a
cam-3 query does not rank cam-2 images (same room); the CMC counts each identity once (SYSU's
evaluation code). Training: the standard trains on the train and val ids (395; CM-NAS's
`utils/pre_process_sysu.py`: "combine train and val split"), which is what `sysu()` gives; the
search scores candidates on the val ids, so it loads with `hold_out_val=True`: the supernet
trains on the train ids (296) and the val ids (99) stay unseen. The validation protocol
(all-search, single-shot, 3 draws) is drawn with the search's seed.

RegDB: `idx/{train,test}_{visible,thermal}_<trial>.txt` (lines `relative/path label`) with the
images under `Visible/` and `Thermal/`; trials 1..10 are RegDB's 10 official random train/test
splits, and the standard reports the mean over all 10, one model trained per split
(`regdb_trials`, `average_over_trials`). Protocol: both directions, visible-to-infrared and
infrared-to-visible. RegDB has no validation ids: the last fifth of the training ids are the
validation protocol's; the search holds them out of training (`hold_out_val=True`), a final
training trains on all of the split's training ids, as the standard does.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from reidc.compiler.base.atomic import atomic_write_text
from reidc.compiler.ir import Modality

from .pool import (MULTI_SHOT, STANDARD_DRAWS, DatasetError, Pool, ReIDData, cross_modality_protocol,
                   sysu_style_protocol)

SYSU_VISIBLE, SYSU_INFRARED = (1, 2, 4, 5), (3, 6)
SYSU_SETTINGS = {"all-search": SYSU_VISIBLE, "indoor-search": (1, 2)}
REGDB_TRIALS = range(1, 11)   # RegDB's official train/test splits: idx/*_1.txt .. idx/*_10.txt
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
    return Pool(np.stack(images), pid, cam, mod, np.array([str(f[0]) for f in files]))


def sysu(root: str | Path, input_size=(64, 32), trials: int = 10, seed: int = 0,
         progress: Callable[[str], None] = lambda s: None, hold_out_val: bool = False) -> ReIDData:
    """SYSU-MM01 from its folder (module doc). `trials`: the test protocol's gallery draws (the
    standard: 10); `seed`: the validation protocol's draws (the search's `--seed`); the test
    draws do not depend on it. `hold_out_val`: train on the train ids only, keeping the val ids
    unseen for the validation protocol (the search); False: train on train+val, as the standard."""
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

    # train and val ids read once, in id order; the val pool is the val ids' part of it
    seen = sorted(set(split["train"]) | set(split["val"]))
    both = _load(files(seen), input_size, progress, "SYSU-MM01 train and val ids")
    pools = {"train": both.subset(np.isin(both.pids, split["train"])),
             "val": both.subset(np.isin(both.pids, split["val"])),
             "test": _load(files(split["test"]), input_size, progress, "SYSU-MM01 test ids")}
    for k, pool in pools.items():
        if not all((pool.modality == m.code).any() for m in Modality):
            raise DatasetError(f"{root}: the {k} ids have images of only one modality")

    def test(name: str, shot: int):
        return sysu_style_protocol(name, pools["test"], SYSU_SETTINGS, SYSU_INFRARED, trials, STANDARD_DRAWS, shot)

    train = pools["train"] if hold_out_val else both
    return ReIDData(
        name=f"SYSU-MM01 ({root}; training on the {'train' if hold_out_val else 'train+val'} ids)", train=train,
        val=sysu_style_protocol("val", pools["val"], {"all-search": SYSU_VISIBLE}, SYSU_INFRARED, min(trials, 3), seed),
        test=test("test", 1), test_multi_shot=test("test (multi-shot)", MULTI_SHOT),
        input_size=tuple(input_size), val_in_train=not hold_out_val)


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
          progress: Callable[[str], None] = lambda s: None, hold_out_val: bool = False) -> ReIDData:
    """RegDB's official split `trial` (1..10) from its folder (module doc). `hold_out_val`: the
    last fifth of the split's training ids are left out of training (the search scores
    candidates on them); False: trained on, as the standard trains on all of them."""
    root = Path(root)
    if type(trial) is not int or trial not in REGDB_TRIALS:
        raise DatasetError(f"RegDB trial {trial!r}: RegDB has 10 official train/test splits, trials 1..10 "
                           "(idx/train_visible_<trial>.txt and the like)")
    if not root.is_dir():
        raise DatasetError(f"{root}: no such RegDB folder")
    train, test = ([f for mod, file in ((Modality.VISIBLE, "visible"), (Modality.INFRARED, "thermal"))
                    for f in _list(root, f"{part}_{file}_{trial}.txt", mod)] for part in ("train", "test"))
    ids = sorted({f[1] for f in train})
    held = set(ids[len(ids) - max(1, len(ids) // 5):])
    both = _load(train, input_size, progress, f"RegDB trial {trial} train ids")
    val_pool = both.subset(np.isin(both.pids, sorted(held)))
    train_pool = both.subset(~np.isin(both.pids, sorted(held))) if hold_out_val else both
    test_pool = _load(test, input_size, progress, f"RegDB trial {trial} test ids")
    return ReIDData(name=f"RegDB trial {trial} ({root}; training on "
                         f"{'four fifths of' if hold_out_val else 'all'} the split's training ids)", train=train_pool,
                    val=cross_modality_protocol("val", val_pool), test=cross_modality_protocol("test", test_pool),
                    input_size=tuple(input_size), val_in_train=not hold_out_val)


def regdb_trials(root: str | Path, input_size=(64, 32), trials: Iterable[int] = REGDB_TRIALS,
                 progress: Callable[[str], None] = lambda s: None, hold_out_val: bool = False) -> Iterator[ReIDData]:
    """RegDB's official splits one after the other (all 10 by default), each read when reached:
    the standard trains and tests once per split and reports the mean (`average_over_trials` on
    the per-split `score_protocol` results; AGW's `test.py` loops `for trial in range(10)`)."""
    trials = list(trials)
    bad = [t for t in trials if type(t) is not int or t not in REGDB_TRIALS]
    if bad or not trials:
        raise DatasetError(f"RegDB trials {trials!r}: expected some of 1..10")
    return (regdb(root, input_size, t, progress, hold_out_val) for t in trials)


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
