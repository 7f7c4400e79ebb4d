"""What `reidc search` reads and writes besides the supernet: the -o folder's rules and
accuracy.json. Both follow compiler.base.atomic: `-o` may name a missing or empty folder or one that
holds only what search writes (supernet/, accuracy.json, latency-table.json, the mode folders
latency-aware/ and accuracy-only/ (differentiable-*/ with --method differentiable), each with
pareto.json, pareto.png, chosen/ and chosen-<target>/, and temporaries a killed run left);
anything else is a user's and refused before any work. accuracy.json is input like any other
file: a truncated or edited one is an error naming it, never a score."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from reidc.compiler.base.atomic import OutputError, guard_output_dir, owned_by_reidc

MODES = ("latency-aware", "accuracy-only", "differentiable-latency-aware", "differentiable-accuracy-only")
_LEFTOVER = re.compile(r"^\..+\.(partial|old)-")   # a temporary of compiler.base.atomic's, left by a kill -9


# What search writes, per folder level: plain files, folders that are reidc outputs of a kind
# (by name, or by prefix for chosen-<target>), and the nested mode folders.
_MODE_LEVEL = {"files": ("pareto.json", "pareto.png"), "kinds": {"chosen": "checkpoint", "chosen-": "artifact"}}
_TOP_LEVEL = {"files": ("accuracy.json", "latency-table.json"), "kinds": {"supernet": "supernet"},
              "folders": {m: _MODE_LEVEL for m in MODES}}


def _foreign_entry(folder: Path, allow: set[Path], level=None) -> str | None:
    """The first entry of `folder` that `reidc search` did not write (None: it is all search's own)."""
    level = level or _TOP_LEVEL
    for q in sorted(folder.iterdir()):
        if _LEFTOVER.match(q.name) or q.resolve() in allow:
            continue
        if q.is_symlink():
            return q.name
        if q.name in level["files"] and q.is_file():
            continue
        kind = next((k for name, k in level["kinds"].items()
                     if q.name == name or (name.endswith("-") and q.name.startswith(name))), None)
        if kind and q.is_dir() and (not any(q.iterdir()) or owned_by_reidc(q, kind)):
            continue
        nested = level.get("folders", {}).get(q.name)
        if nested and q.is_dir():
            odd = _foreign_entry(q, allow, nested)
            if odd is None:
                continue
            return f"{q.name}/{odd}"
        return q.name
    return None


def guard_search_dir(out: str | Path, allow=()) -> Path:
    """Check that `out` may be written by `reidc search` (compiler.base.atomic's rules for a folder
    of folders): missing, empty, or holding only what search writes (`allow`: files of the
    run's own, e.g. a latency cache put there). Returns it absolute; raises OutputError."""
    allowed = {Path(a).resolve() for a in allow if a}
    return guard_output_dir(out, lambda full: _foreign_entry(full, allowed), into=True, who="reidc search")


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot create the folder ({e.strerror})") from None


def _number(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _accuracy_problem(rec) -> str | None:
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    if not _number(rec.get("score")) or not 0 <= rec["score"] <= 1:
        return f"score is {rec.get('score')!r}, not an mAP"
    settings = rec.get("settings")
    if not isinstance(settings, dict) or not all(isinstance(m, dict) and all(
            _interval(v) if k == "mAP_ci95" else _number(v) for k, v in m.items()) for m in settings.values()):
        return "settings are not metrics per protocol setting"
    for k in ("seconds", "supernet_steps"):
        if k in rec and (not _number(rec[k]) or rec[k] < 0):
            return f"{k} is {rec[k]!r}"
    if "ci95" in rec and not _interval(rec["ci95"]):
        return f"ci95 is {rec['ci95']!r}, not an interval"
    if "identity_stats" in rec:
        return _stats_problem(rec["identity_stats"], settings)
    return None


def _interval(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(_number, v)) and v[0] <= v[1]


def _stats_problem(st, settings: dict) -> str | None:
    """identity_stats (compiler/datasets/uncertainty.py): per setting, AP sums and query counts
    of shape (trials, identities)."""
    if not isinstance(st, dict) or not isinstance(st.get("ids"), list) or not all(type(i) is int for i in st["ids"]):
        return "identity_stats has no list of identities"
    if not isinstance(st.get("settings"), dict) or set(st["settings"]) != set(settings):
        return "identity_stats does not hold the scored settings"
    n = len(st["ids"])
    for name, s in st["settings"].items():
        rows = [s.get(k) if isinstance(s, dict) else None for k in ("sums", "counts")]
        if not all(isinstance(r, list) and r and all(isinstance(t, list) and len(t) == n and all(map(_number, t))
                                                    and min(t) >= 0 for t in r) for r in rows) or len(rows[0]) != len(rows[1]):
            return f"identity_stats of {name} are not AP sums and counts per trial and identity"
    return None


def read_accuracy(path: Path) -> dict:
    """accuracy.json, checked: it is input, so a bad one is an error naming it, never a score."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e}); delete it to evaluate the candidates again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON {type(data).__name__}, not reidc's scores per architecture; "
                         "delete it to evaluate the candidates again")
    for k, rec in data.items():
        why = _accuracy_problem(rec)
        if why:
            raise ValueError(f"{path}: entry {k!r}: {why}; delete the file to evaluate the candidates again")
    return data
