"""The evaluation protocols against the standard SYSU-MM01 / RegDB evaluation (issue 15).

The reference for SYSU-MM01's galleries is CM-NAS's released code (JDAI-CV/CM-NAS,
`datasets/sysu_dataset.py`: `process_query_sysu`, lines 35-64, and `process_gallery_sysu`,
lines 67-97; `test.py` calls the latter for `trial in range(10)`, line 152-153). Below it is
re-implemented from what those functions do, call for call where it matters: `random.seed(trial)`
first, test ids from the first line of `exp/test_id.txt` formatted `%04d` and sorted, cameras
1, 2, 4, 5 (all) or 1, 2 (indoor) in that order, the files of `camX/<id>` as sorted full paths,
and `random.sample(files, shot)` per existing folder (AGW's `data_manager.py`, which CM-NAS
follows, takes `random.choice(files)`, single-shot only). Not reidc code; CM-NAS's is not
vendored. The folders are small fakes written here in SYSU-MM01's and RegDB's layouts."""
import os
import random

import numpy as np
import pytest

from reidc.compiler.datasets import DatasetError, load_dataset
from reidc.compiler.datasets.folders import regdb, regdb_trials, sysu
from reidc.compiler.datasets.pool import (STANDARD_DRAWS, Pool, average_over_trials, standard_gallery,
                                          sysu_style_protocol)

CAMS = {"all": ["cam1", "cam2", "cam4", "cam5"], "indoor": ["cam1", "cam2"]}


# -- the reference: CM-NAS's SYSU-MM01 test lists, re-implemented --------------------------
def _test_ids(root):
    with open(os.path.join(root, "exp/test_id.txt")) as f:
        first = f.read().splitlines()[0]
    return sorted("%04d" % int(v) for v in first.split(","))


def _listed(root, cams):
    """(pid, cam folder) in CM-NAS's order with the folder's sorted full paths."""
    for pid in _test_ids(root):
        for cam in cams:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                yield sorted(d + "/" + name for name in os.listdir(d))


def cmnas_gallery(root, mode="all", shot=1, trial=0):
    random.seed(trial)
    paths = []
    for files in _listed(root, CAMS[mode]):
        paths += random.sample(files, shot)
    return paths, [int(p[-13:-9]) for p in paths], [int(p[-15]) for p in paths]


def agw_gallery(root, mode="all", trial=0):
    random.seed(trial)
    return [random.choice(files) for files in _listed(root, CAMS[mode])]


def cmnas_query(root):
    return [p for files in _listed(root, ["cam3", "cam6"]) for p in files]


# -- fake folders --------------------------------------------------------------------------
def _jpeg(path, value):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 4, 3), value, np.uint8)).save(path, quality=90)


SPLIT = {"train": [1, 2], "val": [5, 6], "test": [3, 7, 12, 25, 40]}


@pytest.fixture(scope="module")
def sysu_root(tmp_path_factory):
    """SYSU-MM01's layout; visible folders of test ids hold 10-13 images (CM-NAS's 10-shot
    `random.sample` needs at least 10), some (id, camera) folders are missing."""
    root = tmp_path_factory.mktemp("sysu") / "SYSU-MM01"
    rng = np.random.default_rng(0)
    (root / "exp").mkdir(parents=True)
    for part, ids in SPLIT.items():
        (root / "exp" / f"{part}_id.txt").write_text(",".join(map(str, ids[::-1])) + "\n")   # unsorted on disk
        for pid in ids:
            for cam in range(1, 7):
                if part == "test" and (pid, cam) in ((7, 2), (25, 5), (40, 6)):
                    continue
                n = int(rng.integers(10, 14)) if part == "test" and cam not in (3, 6) else 2
                for k in rng.permutation(np.arange(1, 30))[:n]:   # gaps in the numbering
                    _jpeg(root / f"cam{cam}" / f"{pid:04d}" / f"{k:04d}.jpg", int(rng.integers(256)))
    return root


@pytest.fixture(scope="module")
def sysu_data(sysu_root):
    return sysu(sysu_root, (8, 4))


# -- SYSU-MM01 galleries -------------------------------------------------------------------
def test_sysu_gallery_draws_are_cmnas_process_gallery_sysu(sysu_root, sysu_data):
    d, root = sysu_data, str(sysu_root)
    pool = d.test.pool
    assert list(pool.paths[d.test.settings["all-search"][0].query]) == cmnas_query(root)
    for proto, shot in ((d.test, 1), (d.test_multi_shot, 10)):
        for setting, mode in (("all-search", "all"), ("indoor-search", "indoor")):
            trials = proto.settings[setting]
            assert len(trials) == 10
            for t, trial in enumerate(trials):
                paths, pids, cams = cmnas_gallery(root, mode, shot, t)
                assert list(pool.paths[trial.gallery]) == paths          # same images, same order
                assert list(pool.pids[trial.gallery]) == pids and list(pool.cams[trial.gallery]) == cams
                if shot == 1:
                    assert agw_gallery(root, mode, t) == paths           # AGW's random.choice: the same draw
    n_all = sum(1 for _ in _listed(root, CAMS["all"]))
    assert n_all == 5 * 4 - 2 and len(d.test.settings["all-search"][3].gallery) == 18
    assert len(d.test_multi_shot.settings["all-search"][3].gallery) == 10 * 18
    # single-shot trials differ from one another (10 draws, not one)
    assert len({tuple(t.gallery) for t in d.test.settings["all-search"]}) == 10


def test_choice_and_one_sample_draw_alike():
    """Why AGW's `random.choice` and CM-NAS's `random.sample(files, 1)` give one protocol: both
    take `_randbelow(len(files))` (`sample`'s pool and set branches: up to and over 21 files)."""
    for n in (1, 2, 5, 21, 22, 40):
        for t in range(10):
            x = list(range(n))
            assert random.Random(t).choice(x) == random.Random(t).sample(x, 1)[0]


def test_test_draws_do_not_depend_on_the_search_seed(sysu_root, sysu_data):
    other = sysu(sysu_root, (8, 4), seed=5)
    for a, b in ((sysu_data.test, other.test), (sysu_data.test_multi_shot, other.test_multi_shot)):
        for setting in a.settings:
            assert all(np.array_equal(x.gallery, y.gallery) for x, y in zip(a.settings[setting], b.settings[setting]))
    # the validation draws stay the search's: seeded with (seed, trial) as before
    for data, seed in ((sysu_data, 0), (other, 5)):
        v = data.val
        assert len(v.settings["all-search"]) == 3
        for t, trial in enumerate(v.settings["all-search"]):
            rng, want = np.random.default_rng([seed, t]), []
            for pid in np.unique(v.pool.pids):
                for cam in (1, 2, 4, 5):
                    idx = np.flatnonzero((v.pool.pids == pid) & (v.pool.cams == cam))
                    want += rng.choice(idx, size=1, replace=False).tolist()
            assert trial.gallery.tolist() == sorted(want)
    assert any(not np.array_equal(x.gallery, y.gallery)
               for x, y in zip(sysu_data.val.settings["all-search"], other.val.settings["all-search"]))
    # the synthetic data: its test galleries are the standard draws of its own pool, trial t seeded with t
    syn = load_dataset("synthetic:12", (32, 16), seed=4)
    for t, trial in enumerate(syn.test.settings["indoor-search"]):
        assert np.array_equal(trial.gallery, standard_gallery(syn.test.pool, (1, 2), 1, t))
    again = sysu_style_protocol("t", syn.test.pool, {"all-search": (1, 2, 4, 5)}, (3, 6), 3, STANDARD_DRAWS)
    assert all(np.array_equal(x.gallery, y.gallery) for x, y in zip(again.settings["all-search"],
                                                                  syn.test.settings["all-search"]))


def _pool(counts):
    """A pool of zero images: counts[(pid, cam)] images per identity and camera."""
    rows = [(pid, cam) for (pid, cam), n in counts.items() for _ in range(n)]
    pids, cams = (np.array(c, np.int64) for c in zip(*rows))
    return Pool(np.zeros((len(rows), 1, 1, 3), np.uint8), pids, cams, np.isin(cams, (3, 6)).astype(np.int64))


def test_multi_shot_gallery_has_up_to_ten_images_per_identity_and_camera(sysu_data):
    counts = {(pid, cam): n for pid, ns in ((1, (1, 9, 10, 14)), (2, (3, 25, 0, 11)))
              for cam, n in zip((1, 2, 4, 5), ns) if n}
    counts.update({(1, 3): 2, (2, 6): 2})
    pool = _pool(counts)
    for shot, name in ((10, "multi"), (1, "single")):
        p = sysu_style_protocol("t", pool, {"all-search": (1, 2, 4, 5)}, (3, 6), 10, STANDARD_DRAWS, shot)
        assert f"({name}-shot)" in p.notes["gallery"] and "trial t seeded with t" in p.notes["gallery"]
        for trial in p.settings["all-search"]:
            g = trial.gallery
            assert len(set(g.tolist())) == len(g)                                  # no image twice
            visible = [k for k in counts if k[1] not in (3, 6)]
            got = {k: int(((pool.pids[g] == k[0]) & (pool.cams[g] == k[1])).sum()) for k in visible}
            assert got == {k: min(shot, counts[k]) for k in visible}
    # the SYSU folder: 10 of each visible folder's 10-13 images
    pool, g = sysu_data.test.pool, sysu_data.test_multi_shot.settings["indoor-search"][0].gallery
    for pid in np.unique(pool.pids):
        for cam in (1, 2):
            have = int(((pool.pids == pid) & (pool.cams == cam)).sum())
            assert int(((pool.pids[g] == pid) & (pool.cams[g] == cam)).sum()) == min(10, have)
    assert set(pool.cams[g]) == {1, 2}


# -- SYSU-MM01 training ids ------------------------------------------------------------------
def test_sysu_trains_on_train_and_val_ids_unless_the_search_holds_val_out(sysu_root, sysu_data):
    final = sysu_data
    assert final.val_in_train
    assert final.train.num_ids == len(SPLIT["train"]) + len(SPLIT["val"])       # the standard's 296 + 99 = 395
    held = load_dataset(f"sysu:{sysu_root}", (8, 4), hold_out_val=True)
    assert not held.val_in_train and held.train.num_ids == len(SPLIT["train"])  # the search's 296
    assert "training on the train+val ids" in final.name and "training on the train ids" in held.name
    assert sorted(np.unique(held.val.pool.pids)) == SPLIT["val"]
    for a, b in zip(final.val.settings["all-search"], held.val.settings["all-search"]):
        assert np.array_equal(final.val.pool.paths[a.gallery], held.val.pool.paths[b.gallery])
    assert len(final.train) == len(held.train) + len(held.val.pool)


# -- RegDB -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regdb_root(tmp_path_factory):
    """RegDB's layout with three official-style splits of 10 ids: trial t tests ids t..t+4."""
    root = tmp_path_factory.mktemp("regdb") / "RegDB"
    (root / "idx").mkdir(parents=True)
    for pid in range(10):
        for folder in ("Visible", "Thermal"):
            for k in range(2):
                _jpeg(root / folder / str(pid) / f"{k}.jpg", 10 * pid + k)
    for t in (1, 2, 3):
        test_ids = set(range(t, t + 5))
        for part, ids in (("train", sorted(set(range(10)) - test_ids)), ("test", sorted(test_ids))):
            for folder, name in (("Visible", "visible"), ("Thermal", "thermal")):
                lines = [f"{folder}/{pid}/{k}.jpg {pid}" for pid in ids for k in range(2)]
                (root / "idx" / f"{part}_{name}_{t}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_regdb_trial_selection(regdb_root):
    d = regdb(regdb_root, (8, 4), trial=2)
    assert sorted(np.unique(d.test.pool.pids)) == [2, 3, 4, 5, 6] and d.name.startswith("RegDB trial 2")
    assert d.train.num_ids == 5 and d.val_in_train                # the standard: all of the split's training ids
    h = load_dataset(f"regdb:{regdb_root}#3", (8, 4), hold_out_val=True)
    assert sorted(np.unique(h.test.pool.pids)) == [3, 4, 5, 6, 7] and h.name.startswith("RegDB trial 3")
    assert h.train.num_ids == 4 and sorted(np.unique(h.val.pool.pids)) == [9] and not h.val_in_train
    assert load_dataset(f"regdb:{regdb_root}", (8, 4)).name.startswith("RegDB trial 1")
    for bad in (0, 11, "2"):
        with pytest.raises(DatasetError, match="trials 1..10"):
            regdb(regdb_root, trial=bad)
    with pytest.raises(DatasetError, match="1..10"):
        load_dataset(f"regdb:{regdb_root}#all")
    with pytest.raises(DatasetError, match="train_visible_4.txt"):   # an official trial this folder lacks
        regdb(regdb_root, trial=4)
    runs = list(regdb_trials(regdb_root, (8, 4), trials=(1, 3)))
    assert [r.name.split(" (")[0] for r in runs] == ["RegDB trial 1", "RegDB trial 3"]
    with pytest.raises(DatasetError, match="expected some of 1..10"):
        regdb_trials(regdb_root, trials=[1, 12])                     # checked before anything is read
    lazy = regdb_trials(regdb_root)                                  # all 10: read one by one
    assert next(lazy).name.startswith("RegDB trial 1")


def test_average_over_trials_by_hand():
    a = {"visible-to-infrared": {"rank1": 0.5, "mAP": 0.25, "trials": 1},
         "infrared-to-visible": {"rank1": 1.0, "mAP": 0.5, "trials": 1}}
    b = {"visible-to-infrared": {"rank1": 0.75, "mAP": 0.5, "trials": 1},
         "infrared-to-visible": {"rank1": 0.0, "mAP": 0.25, "trials": 1}}
    assert average_over_trials([a, b]) == {"visible-to-infrared": {"rank1": 0.625, "mAP": 0.375, "runs": 2},
                                           "infrared-to-visible": {"rank1": 0.5, "mAP": 0.375, "runs": 2}}
    with pytest.raises(ValueError, match="different settings"):
        average_over_trials([a, {"all-search": a["visible-to-infrared"]}])
    with pytest.raises(ValueError, match="no results"):
        average_over_trials([])
