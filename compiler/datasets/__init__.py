"""Datasets for the search: `synthetic`, `sysu:PATH`, `regdb:PATH`."""
from __future__ import annotations

from typing import Callable

from .pool import DatasetError, Pool, Protocol, ReIDData, normalise  # noqa: F401


def load_dataset(spec: str, input_size=(64, 32), seed: int = 0,
                 progress: Callable[[str], None] = lambda s: None) -> ReIDData:
    """`synthetic`, `synthetic:IDS` (training identities), `sysu:PATH` or `regdb:PATH[#TRIAL]`."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        from .synthetic import synthetic
        try:
            n = int(arg) if arg else 96
        except ValueError:
            raise DatasetError(f"--dataset {spec}: synthetic takes a number of training identities") from None
        progress(f"rendering the synthetic visible/infrared dataset (seed {seed}, {n} training identities)")
        return synthetic(input_size, train_ids=n, val_ids=max(8, n // 4), test_ids=max(8, n // 3), seed=seed)
    if kind == "sysu" and arg:
        from .folders import sysu
        return sysu(arg, input_size, seed=seed, progress=progress)
    if kind == "regdb" and arg:
        from .folders import regdb
        path, _, trial = arg.partition("#")
        return regdb(path, input_size, trial=int(trial or 1), progress=progress)
    raise DatasetError(f"--dataset {spec!r}: expected synthetic, sysu:PATH or regdb:PATH")
