"""What `reidc search` reads and writes besides the supernet: the -o folder's rules and
accuracy.json. Both follow frontend.atomic: `-o` may name a missing or empty folder or one that
holds only what search writes (supernet/, accuracy.json, latency-table.json, latency-aware/ and
accuracy-only/ with pareto.json, pareto.png, chosen/ and chosen-<target>/, and temporaries a
killed run left); anything else is a user's and refused before any work. accuracy.json is
input like any other file: a truncated or edited one is an error naming it, never a score."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

from frontend.atomic import OutputError, owned_by_reidc

MODES = ("latency-aware", "accuracy-only")
_LEFTOVER = re.compile(r"^\..+\.(partial|old)-")   # a temporary of frontend.atomic's, left by a kill -9


def _foreign_entry(out: Path, allow: set[Path]) -> str | None:
    """The first entry of `out` that `reidc search` did not write (None: it is all search's own)."""
    def odd_in_mode(d: Path) -> str | None:
        for q in sorted(d.iterdir()):
            if _LEFTOVER.match(q.name) or q.resolve() in allow:
                continue
            if q.is_symlink():
                return q.name
            if q.name in ("pareto.json", "pareto.png") and q.is_file():
                continue
            kind = "checkpoint" if q.name == "chosen" else "artifact" if q.name.startswith("chosen-") else None
            if kind and q.is_dir() and (not any(q.iterdir()) or owned_by_reidc(q, kind)):
                continue
            return q.name
        return None

    for p in sorted(out.iterdir()):
        if _LEFTOVER.match(p.name) or p.resolve() in allow:
            continue
        if p.is_symlink():
            return p.name
        if p.name in ("accuracy.json", "latency-table.json") and p.is_file():
            continue
        if p.name == "supernet" and p.is_dir() and (not any(p.iterdir()) or owned_by_reidc(p, "supernet")):
            continue
        if p.name in MODES and p.is_dir():
            odd = odd_in_mode(p)
            if odd is None:
                continue
            return f"{p.name}/{odd}"
        return p.name
    return None


def guard_search_dir(out: str | Path, allow=()) -> Path:
    """Check that `out` may be written by `reidc search` (frontend.atomic's rules for a folder
    of folders): missing, empty, or holding only what search writes (`allow`: files of the
    run's own, e.g. a latency cache put there). Returns it absolute; raises OutputError."""
    out = Path(out)
    full = Path(os.path.abspath(out))
    if full.is_symlink():
        raise OutputError(f"-o {out}: is a symbolic link; name a real folder")
    cwd = Path.cwd().resolve()
    if cwd == full.resolve() or full.resolve() in cwd.parents:
        raise OutputError(f"-o {out}: is the current folder or one of its parents; name a new folder")
    above = full
    while not above.exists() and not above.is_symlink():
        above = above.parent
    if not above.is_dir():
        raise OutputError(f"-o {out}: {'exists and is' if above == full else f'{above} is'} not a folder")
    if above == full:
        try:
            odd = _foreign_entry(full, {Path(a).resolve() for a in allow if a})
        except PermissionError:
            raise OutputError(f"-o {out}: cannot list the folder (permission denied)") from None
        if odd:
            raise OutputError(f"-o {out}: the folder holds files reidc search did not write (e.g. {odd!r}); "
                              "refusing to write into it: name a new or empty folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise OutputError(f"-o {out}: cannot write in {above} (permission denied)")
    return full


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
    if not isinstance(settings, dict) or not all(isinstance(m, dict) and all(map(_number, m.values()))
                                                  for m in settings.values()):
        return "settings are not metrics per protocol setting"
    for k in ("seconds", "supernet_steps"):
        if k in rec and (not _number(rec[k]) or rec[k] < 0):
            return f"{k} is {rec[k]!r}"
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
