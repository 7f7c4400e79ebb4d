"""Datasets for the search: `synthetic`, `sysu:PATH`, `regdb:PATH`."""
from __future__ import annotations

from typing import Callable

from .pool import DatasetError, Pool, Protocol, ReIDData, average_over_trials, normalise  # noqa: F401


def load_dataset(spec: str, input_size=(64, 32), seed: int = 0,
                 progress: Callable[[str], None] = lambda s: None, hold_out_val: bool = False) -> ReIDData:
    """`synthetic`, `synthetic:IDS` (training identities), `sysu:PATH` or `regdb:PATH[#TRIAL]`
    (TRIAL: RegDB's official split, 1..10, default 1). `seed`: the synthetic data and the
    validation protocol's gallery draws; test protocols use the standard draws, whatever the
    seed. `hold_out_val`: a search's data, validation ids left out of training (SYSU-MM01's val
    ids, RegDB's last fifth); False: a final training's, on the standard's training ids
    (SYSU-MM01 train+val, 395; RegDB all 206). The synthetic data always holds them out."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from .synthetic import synthetic
        try:
            n = int(arg) if arg else 96
        except ValueError:
            raise DatasetError(f"--dataset {spec}: synthetic takes a number of training identities") from None
        progress(f"rendering the synthetic visible/infrared dataset (seed {seed}, {n} training identities)")
        # validation: half as many identities as training (48 by default, was 24: a mAP's standard
        # error over identities shrinks with their square root; uncertainty.py states it)
        return synthetic(input_size, train_ids=n, val_ids=max(16, n // 2), test_ids=max(8, n // 3), seed=seed)
    if kind == "sysu" and arg:
        from .folders import sysu
        return sysu(arg, input_size, seed=seed, progress=progress, hold_out_val=hold_out_val)
    if kind == "regdb" and arg:
        from .folders import regdb
        path, _, trial = arg.partition("#")
        if not (trial or "1").isdigit():
            raise DatasetError(f"--dataset {spec}: RegDB's trial is one of its 10 official splits, 1..10 "
                               "(to average over them, train and test on each: folders.regdb_trials)")
        return regdb(path, input_size, trial=int(trial or 1), progress=progress, hold_out_val=hold_out_val)
    raise DatasetError(f"--dataset {spec!r}: expected synthetic, sysu:PATH or regdb:PATH")
