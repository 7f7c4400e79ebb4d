"""The writing side of a tuning database (the format, and the reading that `reidc compile`
does, are compiler/tunedb/database.py): `reidc tune` creates the folder, moves the lines TVM
cannot read to `<file>.rejected`, registers the target, batch and where it measures in index.json, keeps its
per-task figures in reidc_tasks.json, its measured conv algorithms in reidc_algorithms.json and stamps what it has checked. Every file reidc writes
here is replaced atomically (compiler/base/atomic.py); the two JSONDatabase files are then
appended to by TVM itself as trials are measured."""
from __future__ import annotations

import hashlib
from pathlib import Path

from reidc.compiler.base.atomic import atomic_write_bytes, atomic_write_json, why_not_writable
from reidc.compiler.tunedb import records
from reidc.compiler.tunedb.database import (ALGORITHMS, CHECKED, INDEX, RECORDS, TASKS, WORKLOADS, TargetDB,
                                            TuningDatabaseError, encode, load_database, looks_like_database,
                                            read_algorithms, read_index, read_tasks, warn_rejected)


class TunedTarget(TargetDB):
    """The part of a database directory that belongs to one target, as `reidc tune` writes it."""

    def check_writable(self, flag: str = "--db") -> None:
        """Everything `reidc tune` needs of the folder, checked before it creates anything."""
        root = self.root
        where = f"{flag} {root}"
        if root.exists() and not root.is_dir():
            raise TuningDatabaseError(f"{where}: exists and is not a folder")
        parent = root
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise TuningDatabaseError(f"{where}: {parent} is a file, not a folder")
        if parent != root:
            why = why_not_writable(parent)
            if why:
                raise TuningDatabaseError(f"{where}: cannot create the folder in {parent} ({why})")
            return
        try:
            empty = not any(root.iterdir())
        except OSError as e:
            raise TuningDatabaseError(f"{where}: cannot list the folder ({e.strerror})") from None
        if not empty and not looks_like_database(root):
            raise TuningDatabaseError(f"{where}: the folder holds files but is not a reidc tuning database "
                                      f"(no {INDEX}); name a new or empty folder")
        read_index(root)
        if self.path.exists():
            if not self.path.is_dir():
                raise TuningDatabaseError(f"{self.path}: exists and is not a folder")
            read_tasks(self.path)
            read_algorithms(self.path)
        for p in (root, root / INDEX, self.path, *(self.path / n for n in (WORKLOADS, RECORDS, TASKS, CHECKED, ALGORITHMS))):
            why = p.exists() and why_not_writable(p)
            if why:
                raise TuningDatabaseError(f"{where}: cannot write {p} ({why})")

    def open(self, say=lambda msg: None):
        """The MetaSchedule JSONDatabase `reidc tune` appends to: created if new; lines TVM
        cannot read are moved to <file>.rejected first."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TuningDatabaseError(f"{self.path}: cannot create the folder ({e.strerror})") from None
        old = self._read_both()
        checked = records.check(old[WORKLOADS], old[RECORDS], self._trusted(old))
        new = dict(zip((WORKLOADS, RECORDS), checked.texts()))
        self._set_aside(checked.rejected)
        for name in (WORKLOADS, RECORDS):
            if new[name] != old[name] or not (self.path / name).exists():
                _write(self.path / name, encode(new[name]))
        warn_rejected(say, self.path, checked.rejected, lambda f: f"moved to {f}.rejected")
        self.stamp()
        return load_database(self.path, new[RECORDS])

    def check_measured(self, where: str) -> str | None:
        """A database's times are measured in one place: this machine at a thread count, or an
        RPC device key. Resuming elsewhere would compare kernel times taken two ways (its
        defaults, paired re-measures and algorithm choices would stand from the first): refused.
        A target tuned before reidc recorded where is resumed, with the warning returned."""
        entry = read_index(self.root, {}).get(self.key)
        before = (entry or {}).get("measured")
        if before and before != where:
            raise TuningDatabaseError(f"{self.root}: its {self.preset.name} kernels were measured {before}; this run "
                                      f"would measure {where}: tune into a new --db (or measure as before)")
        if entry and not before:
            return (f"warning: {self.root}: its {self.preset.name} kernels were tuned before reidc recorded where they "
                    "were measured (locally, at TVM's default of half the logical CPUs); this run measures "
                    f"{where}, and their earlier figures stand: tune into a new --db for figures taken one way")
        return None

    def register(self, batch: int, where: str) -> None:
        index = read_index(self.root, {})
        entry = index.setdefault(self.key, {"preset": self.preset.name, "tvm": self.preset.tvm, "batches": [],
                                            "measured": where})   # (an older target keeps none: check_measured warns)
        if batch not in entry["batches"]:
            entry["batches"] = sorted(entry["batches"] + [batch])
        _write(self.root / INDEX, index)

    def save_tasks(self, tasks: dict) -> None:
        _write(self.path / TASKS, tasks)

    def save_algorithms(self, table: dict) -> None:
        _write(self.path / ALGORITHMS, table)

    def stamp(self) -> None:
        """Remember the files as they are now as checked (their complete lines)."""
        stamp = {}
        for name in (WORKLOADS, RECORDS):
            data = encode(self._read(name))
            size = data.rfind(b"\n") + 1
            stamp[name] = {"bytes": size, "lines": data.count(b"\n", 0, size),
                           "sha256": hashlib.sha256(data[:size]).hexdigest()}
        _write(self.path / CHECKED, stamp)

    def _set_aside(self, rejected: list[records.Rejected]) -> None:
        """Add the rejected lines, as they were, to <file>.rejected (before the file is rewritten)."""
        for name in (WORKLOADS, RECORDS):
            lines = [r.text for r in rejected if r.file == name]
            if not lines:
                continue
            path = self.path / f"{name}.rejected"
            try:
                old = path.read_bytes()
            except FileNotFoundError:
                old = b""
            except OSError as e:
                raise TuningDatabaseError(f"{path}: cannot read it ({e.strerror})") from None
            _write(path, old + encode("".join(f"{ln}\n" for ln in lines)))


def _write(path: Path, data) -> None:
    """`data` (bytes, or an object written as JSON) replaces `path` atomically."""
    try:
        if isinstance(data, bytes):
            atomic_write_bytes(path, data)
        else:
            atomic_write_json(path, data)
    except OSError as e:
        raise TuningDatabaseError(f"{path}: cannot write it ({e.strerror})") from None
