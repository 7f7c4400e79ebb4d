"""A tuning database directory that serves several targets without mixing them.

    DB/index.json                       {key: {"preset", "tvm", "batches", "measured"}}   (atomic rewrite)
    DB/<key>/database_workload.json     TVM MetaSchedule JSONDatabase files: one line per
    DB/<key>/database_tuning_record.json  workload / measured trial, appended as measured
    DB/<key>/reidc_tasks.json           per task: name, weight, reidc-default latency (atomic)
    DB/<key>/reidc_checked.json         how much of the two JSONDatabase files was checked
    DB/<key>/reidc_algorithms.json      per batch, per 3x3 conv shape: each algorithm's measured
                                        time and the fastest (atomic; compile's Winograd choice)
    DB/<key>/<file>.rejected            lines moved out of a JSONDatabase file (appended)

<key> is the preset name plus a digest of its TVM target dict, so records measured on one
target are never applied to another (MetaSchedule's own lookup ignores the target: apache/tvm
#15549). Each <key> directory is a plain JSONDatabase that TVM's tools open as they are.

TVM parses those files in C++ and crashes on a line that is JSON but not a record, so every
line is checked first (records.py). `reidc tune` moves the lines TVM cannot read (a record
torn by a kill, or nonsense) to `<file>.rejected`, renumbers what refers to them and rewrites
the file atomically, with a warning naming file and line. `reidc compile` only reads: it warns
and loads a checked copy. The checked part of each file (its size and digest) is remembered
in reidc_checked.json, so a later open checks only the lines appended since.

This module is the format and the reading side (what compile needs); `reidc tune` writes
through compiler/tune/database.py.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reidc.targets import TargetPreset

from . import records
from .records import RECORDS, WORKLOADS, TuningDatabaseError

TASKS, INDEX, CHECKED, ALGORITHMS = "reidc_tasks.json", "index.json", "reidc_checked.json", "reidc_algorithms.json"
_SIGNATURE = re.compile(r"[1-9][0-9]{0,5}x[1-9][0-9]{0,5}x[1-9][0-9]{0,5}->[1-9][0-9]{0,5}")   # choose_winograd.signature
_BATCH = re.compile(r"[1-9][0-9]{0,5}")
WARN_LINES = 10   # per file; then one line counts the rest


def target_key(preset: TargetPreset) -> str:
    tvm = {k: v for k, v in preset.tvm.items() if k != "num-cores"}
    digest = hashlib.sha256(json.dumps(tvm, sort_keys=True).encode()).hexdigest()[:10]
    return f"{preset.name}-{digest}"


# -- reidc's own JSON files --------------------------------------------------------------------

def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _secs(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0)


def _confirmed(v) -> bool:
    """What `reidc tune` writes after a task's paired re-measure of its best record against
    reidc's default (tune.py, _confirm)."""
    return (isinstance(v, dict) and v.get("keep") in ("tuned", "default") and _count(v.get("trials"))
            and _count(v.get("rounds")) and _count(v.get("wins")) and _secs(v.get("default_s"))
            and _secs(v.get("tuned_s")))


_TASK_FIELDS = {"trials": _count, "failed": _count, "weight": _count, "batch": _count, "default_s": _secs,
                "best_s": _secs, "name": lambda v: isinstance(v, str), "model": lambda v: isinstance(v, str),
                "exhausted": lambda v: isinstance(v, bool), "variants": _count,
                "variants_done": lambda v: isinstance(v, bool), "confirmed": _confirmed}


def workload_key(mod) -> str:
    """A task's key in reidc_tasks.json: the structural hash of its (fused PrimFunc) IRModule."""
    import tvm_ffi
    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def kept_default(tasks: dict) -> set[str]:
    """The tasks whose best record lost the paired re-measure against reidc's default."""
    return {wk for wk, t in tasks.items() if t.get("confirmed", {}).get("keep") == "default"}


def _valid_index(data) -> bool:
    return isinstance(data, dict) and all(
        isinstance(e, dict) and isinstance(e.get("preset"), str) and isinstance(e.get("tvm"), dict)
        and isinstance(e.get("batches"), list) and all(_count(b) and b > 0 for b in e["batches"])
        and isinstance(e.get("measured", ""), str)
        for e in data.values())


def _valid_tasks(data) -> bool:
    return isinstance(data, dict) and all(
        isinstance(t, dict) and "trials" in t and "failed" in t
        and all(ok(t[k]) for k, ok in _TASK_FIELDS.items() if k in t) for t in data.values())


def _valid_algorithms(data) -> bool:
    """{batch: {signature: {algorithm: seconds or null, ..., "chosen": algorithm}}}, the chosen
    one measured."""
    from reidc.compiler.passes.choose_winograd import ALGORITHMS as ALGOS

    def one(e) -> bool:
        times = {k: v for k, v in e.items() if k != "chosen"} if isinstance(e, dict) else None
        return (times is not None and set(times) <= set(ALGOS)
                and all(v is None or (_secs(v) and math.isfinite(v)) for v in times.values())
                and e.get("chosen") in ALGOS and (times.get(e["chosen"]) or 0) > 0)
    return isinstance(data, dict) and all(
        isinstance(b, str) and _BATCH.fullmatch(b) and isinstance(per, dict)
        and all(isinstance(sig, str) and _SIGNATURE.fullmatch(sig) and one(e) for sig, e in per.items())
        for b, per in data.items())


def read_algorithms(folder: Path) -> dict:
    return _read_json(folder / ALGORITHMS, {}, _valid_algorithms,
                      '{batch: {"CxHxW->O": {algorithm: seconds, "chosen": algorithm}}}',
                      "delete it and rerun `reidc tune` to measure the convs' algorithms again")


def _read_json(path: Path, default, valid, expected: str, remedy: str):
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return default
    except IsADirectoryError:
        raise TuningDatabaseError(f"{path}: is a folder, not reidc's {path.name}") from None
    except OSError as e:
        raise TuningDatabaseError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise TuningDatabaseError(f"{path}: corrupt (not JSON: {str(e).splitlines()[0][:80]}); {remedy}") from None
    try:
        ok = valid(data)
    except (TypeError, ValueError):   # whatever the checks themselves trip on is corrupt too
        ok = False
    if not ok:
        raise TuningDatabaseError(f"{path}: corrupt (expected {expected}); {remedy}")
    return data


def read_index(root: Path, default=None):
    return _read_json(root / INDEX, default, _valid_index, '{target key: {"preset", "tvm", "batches", "measured"}}',
                      "delete it to start a new index (the records are kept; a target reappears when tuned again)")


def existing_index(root: str | Path, flag: str, hint: str = "") -> dict:
    """The index of the tuning database a command names with `flag`, which must exist."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise TuningDatabaseError(f"{flag} {root}: is a file, not a tuning database folder")
    index = read_index(root)
    if index is None:
        raise TuningDatabaseError(f"{root}: not a reidc tuning database (no {INDEX}){hint}")
    return index


def read_tasks(folder: Path) -> dict:
    return _read_json(folder / TASKS, {}, _valid_tasks, '{workload: {"trials", "failed", ...}}',
                      "delete it to restart this target's trial counts (its records are kept)")


_KEY = re.compile(r"^.+-[0-9a-f]{10}$")   # what target_key() names a target's folder


def looks_like_database(root: Path) -> bool:
    """index.json, or a target folder of a database whose index.json was deleted."""
    return (root / INDEX).exists() or any(_KEY.match(p.name) and (p / WORKLOADS).exists() for p in root.iterdir())


# -- the database of one target ----------------------------------------------------------------

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

    def load_checked_copy(self, say=lambda msg: None):
        """For `reidc compile`: a JSONDatabase loaded from a checked copy; the database itself
        is only read (it may be read-only, or being appended to by a running `reidc tune`)."""
        if not self.path.is_dir():
            raise TuningDatabaseError(f"{self.path}: missing (the index names it); rerun `reidc tune`")
        old = self._read_both()
        checked = records.check(old[WORKLOADS], old[RECORDS], self._trusted(old))
        warn_rejected(say, self.path, checked.rejected, lambda f: "ignored (`reidc tune` on this database moves it "
                                                             f"to {f}.rejected)")
        copy = tempfile.TemporaryDirectory(prefix="reidc-tuning-db-")
        texts = checked.texts()
        for name, text in zip((WORKLOADS, RECORDS), texts):
            Path(copy.name, name).write_bytes(encode(text))
        return load_database(Path(copy.name), texts[1]), copy

    def tasks(self) -> dict:
        return read_tasks(self.path)

    def algorithms(self) -> dict:
        return read_algorithms(self.path)

    def record_count(self) -> int:
        return len(records.split_lines(self._read(RECORDS)))

    def _trusted(self, texts: dict[str, str]) -> tuple[int, int]:
        """How many leading lines of each file the stamp vouches for (records only with their workloads)."""
        try:
            stamp = json.loads((self.path / CHECKED).read_bytes())
        except (OSError, ValueError):
            return 0, 0
        lines = []
        for name in (WORKLOADS, RECORDS):
            s, data = stamp.get(name) if isinstance(stamp, dict) else None, encode(texts[name])
            if not (isinstance(s, dict) and isinstance(s.get("bytes"), int) and isinstance(s.get("lines"), int)
                    and len(data) >= s["bytes"] and hashlib.sha256(data[:s["bytes"]]).hexdigest() == s.get("sha256")):
                return (lines[0], 0) if lines else (0, 0)
            lines.append(s["lines"])
        return lines[0], lines[1]

    def _read_both(self) -> dict[str, str]:
        """Records first: a `reidc tune` appending meanwhile commits a workload before its records,
        so every record read names a workload that is read too."""
        recs = self._read(RECORDS)
        return {WORKLOADS: self._read(WORKLOADS), RECORDS: recs}

    def _read(self, name: str) -> str:
        try:
            return (self.path / name).read_bytes().decode("utf-8", "surrogateescape")
        except FileNotFoundError:
            return ""
        except OSError as e:
            raise TuningDatabaseError(f"{self.path / name}: cannot read it ({e.strerror})") from None


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def warn_rejected(say, folder: Path, rejected: list[records.Rejected], fate) -> None:
    for name in (WORKLOADS, RECORDS):
        lines = [r for r in rejected if r.file == name]
        for r in lines[:WARN_LINES]:
            say(f"warning: {folder / name} line {r.no}: {r.reason}; {fate(name)}")
        if len(lines) > WARN_LINES:
            say(f"warning: {folder / name}: {len(lines) - WARN_LINES} more lines like these; {fate(name)}")


def load_database(folder: Path, record_text: str):
    from tvm.s_tir import meta_schedule as ms
    if '"Tensorize"' in record_text:
        records.register_cpu_tensor_intrinsics(record_text)
    try:
        return ms.database.JSONDatabase(path_workload=str(folder / WORKLOADS),
                                        path_tuning_record=str(folder / RECORDS), allow_missing=False)
    except Exception as e:  # noqa: BLE001  (checked line by line; this is TVM refusing the whole)
        raise TuningDatabaseError(f"{folder}: TVM cannot load the tuning records: {records.last_line(e)}") from None


@dataclass
class CompileTuning:
    """What `reidc compile --tuning-db` uses: the database and the batch it was tuned for. The
    counts and the manifest describe `database`, every checked record; the build applies `applied`."""
    db: TargetDB
    database: object
    batch: int
    copy: object = None   # the checked copy the database was loaded from (kept while it is used)

    applied: object = None  # what the build applies: `database` less the records of the tasks (kept_keys)
    kept_keys: frozenset = frozenset()   # whose best record lost the paired re-measure against reidc's default

    measured: dict = field(default_factory=dict)   # the batch's fastest algorithm per 3x3 conv shape (choose_winograd)
    measured_applied: dict = field(default_factory=dict)   # those of them the model's convs took (compile sets it)

    kept_default: int = 0   # of the module's kernels with records, how many are in kept_keys
    tuned_functions: int = 0
    functions: int = 0

    def count_applicable(self, fused_mod, target) -> None:
        """How many of the module's kernels have a record (what MetaScheduleApplyDatabase replaces)."""
        import tvm
        from tvm.s_tir.meta_schedule.tune_context import _normalize_mod
        funcs = [f for _, f in fused_mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)]
        self.functions = len(funcs)
        mods = [_normalize_mod(f) for f in funcs]
        self.tuned_functions = sum(1 for m in mods if self.database.has_workload(m))
        self.kept_default = sum(1 for m in mods if self.kept_keys and workload_key(m) in self.kept_keys)

    def summary(self) -> dict:
        """What the manifest records (and `reidc inspect` shows): which database, target and batch,
        how many kernels it tuned, and the sha256 of the (checked) records the build applied."""
        digest = None
        if self.copy is not None:
            h = hashlib.sha256()
            for name in (WORKLOADS, RECORDS):
                h.update(Path(self.copy.name, name).read_bytes())
            digest = h.hexdigest()
        return {"database": str(self.db.root.resolve()), "target_key": self.db.key, "batch": self.batch,
                "records": len(self.database), "kernels_with_records": self.tuned_functions,
                "kernels": self.functions, "kept_default": self.kept_default, "records_sha256": digest,
                "measured_algorithms": dict(sorted(self.measured_applied.items()))}


def open_for_compile(root: str | Path, preset: TargetPreset, batch: int | None, say=lambda m: None) -> CompileTuning:
    root = Path(root)
    index = existing_index(root, "--tuning-db", "; create one with `reidc tune`")
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
    database, copy = db.load_checked_copy(say)
    dropped = kept_default(db.tasks())
    applied = without_workloads(database, dropped) if dropped else database
    measured = {sig: e["chosen"] for sig, e in db.algorithms().get(str(batch), {}).items()}
    return CompileTuning(db, database, batch, copy, applied=applied, kept_keys=frozenset(dropped), measured=measured)


def without_workloads(database, keys: set[str]):
    """An in-memory copy of `database` without the records of these tasks (workload_key), so
    MetaScheduleApplyDatabase leaves their kernels to reidc's default schedules."""
    from tvm.s_tir import meta_schedule as ms
    out = ms.database.MemoryDatabase()
    for rec in database.get_all_tuning_records():
        if workload_key(rec.workload.mod) not in keys:
            wl = out.commit_workload(rec.workload.mod)
            out.commit_tuning_record(ms.database.TuningRecord(rec.trace, wl, rec.run_secs, rec.target, rec.args_info))
    return out
