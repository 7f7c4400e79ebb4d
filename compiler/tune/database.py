"""A tuning database directory that serves several targets without mixing them.

    DB/index.json                       {key: {"preset", "tvm", "batches"}}   (atomic rewrite)
    DB/<key>/database_workload.json     TVM MetaSchedule JSONDatabase files: one line per
    DB/<key>/database_tuning_record.json  workload / measured trial, appended as measured
    DB/<key>/reidc_tasks.json           per task: name, weight, reidc-default latency (atomic)

<key> is the preset name plus a digest of its TVM target dict, so records measured on one
target are never applied to another (MetaSchedule's own lookup ignores the target: apache/tvm
#15549). Each <key> directory is a plain JSONDatabase that TVM's tools open as they are.
A process killed while appending can leave a torn last line; `repair` drops it before the
database is opened, so every finished trial survives and tuning resumes from the records.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from targets import TargetPreset
from targets.presets import ToolchainError

WORKLOADS, RECORDS, TASKS, INDEX = "database_workload.json", "database_tuning_record.json", "reidc_tasks.json", "index.json"


class TuningDatabaseError(ToolchainError):
    pass


def target_key(preset: TargetPreset) -> str:
    tvm = {k: v for k, v in preset.tvm.items() if k != "num-cores"}
    digest = hashlib.sha256(json.dumps(tvm, sort_keys=True).encode()).hexdigest()[:10]
    return f"{preset.name}-{digest}"


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
    except json.JSONDecodeError as e:
        raise TuningDatabaseError(f"{path}: corrupt ({e})") from None


def repair(path: Path) -> int:
    """Drop unparsable lines (a torn append) from a JSON-lines file; returns how many."""
    if not path.is_file():
        return 0
    good, bad = [], 0
    for line in path.read_text().splitlines():
        try:
            json.loads(line)
            good.append(line)
        except json.JSONDecodeError:
            bad += 1
    if bad:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(g + "\n" for g in good))
        os.replace(tmp, path)
    return bad


@dataclass
class TargetDB:
    """The part of a database directory that belongs to one target."""
    root: Path
    preset: TargetPreset

    @property
    def key(self) -> str:
        return target_key(self.preset)

    @property
    def path(self) -> Path:
        return self.root / self.key

    def open(self):
        """The MetaSchedule JSONDatabase for this target (created if new, repaired if torn)."""
        from tvm.s_tir import meta_schedule as ms
        self.path.mkdir(parents=True, exist_ok=True)
        for name in (WORKLOADS, RECORDS):
            repair(self.path / name)
        return ms.database.JSONDatabase(path_workload=str(self.path / WORKLOADS),
                                        path_tuning_record=str(self.path / RECORDS), allow_missing=True)

    def register(self, batch: int) -> None:
        index = read_json(self.root / INDEX, {})
        entry = index.setdefault(self.key, {"preset": self.preset.name, "tvm": self.preset.tvm, "batches": []})
        if batch not in entry["batches"]:
            entry["batches"] = sorted(entry["batches"] + [batch])
        write_json_atomic(self.root / INDEX, index)

    def tasks(self) -> dict:
        return read_json(self.path / TASKS, {})

    def save_tasks(self, tasks: dict) -> None:
        write_json_atomic(self.path / TASKS, tasks)

    def record_count(self) -> int:
        p = self.path / RECORDS
        return sum(1 for _ in p.open()) if p.is_file() else 0


@dataclass
class CompileTuning:
    """What `reidc compile --tuning-db` uses: the database and the batch it was tuned for."""
    db: TargetDB
    database: object
    batch: int

    tuned_functions: int = 0
    functions: int = 0

    def count_applicable(self, fused_mod, target) -> None:
        """How many of the module's kernels have a record (what MetaScheduleApplyDatabase replaces)."""
        import tvm
        from tvm.s_tir.meta_schedule.tune_context import _normalize_mod
        funcs = [f for _, f in fused_mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
        self.functions = len(funcs)
        self.tuned_functions = sum(1 for f in funcs if self.database.has_workload(_normalize_mod(f)))

    def summary(self) -> dict:
        return {"database": str(self.db.root.resolve()), "target_key": self.db.key, "batch": self.batch,
                "records": self.db.record_count(), "kernels_with_records": self.tuned_functions,
                "kernels": self.functions}


def open_for_compile(root: str | Path, preset: TargetPreset, batch: int | None, say=lambda m: None) -> CompileTuning:
    root = Path(root)
    index = read_json(root / INDEX, None)
    if index is None:
        raise TuningDatabaseError(f"{root}: not a reidc tuning database (no {INDEX}); create one with `reidc tune`")
    db = TargetDB(root, preset)
    if db.key not in index:
        have = ", ".join(sorted(e["preset"] for e in index.values())) or "none"
        raise TuningDatabaseError(f"{root} has no records for target {preset.name} ({db.key}); it has: {have}")
    batches = index[db.key]["batches"]
    if batch is None:
        if len(batches) != 1:
            raise TuningDatabaseError(f"{root} was tuned for batches {batches} on {preset.name}; pick one with --batch")
        batch = batches[0]
        say(f"using the tuning records for batch {batch} (tuned kernels need a fixed batch)")
    elif batch not in batches:
        say(f"warning: {root} has no records for batch {batch} on {preset.name} (tuned: {batches}); "
            "reidc's default schedules will be used")
    return CompileTuning(db, db.open(), batch)
