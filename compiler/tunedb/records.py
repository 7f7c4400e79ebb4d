"""Checking a MetaSchedule JSONDatabase line by line before TVM reads it.

TVM 0.27's JSONDatabase parses `database_workload.json` and `database_tuning_record.json` in
C++ and trusts every line. A line that is JSON but not a record (`{}`, `null`, an empty line)
makes it dereference a null array: SIGSEGV. Other nonsense (a workload index out of range, a
trace or target of the wrong shape) throws inside the worker threads of its parallel parse.
So reidc checks each line before TVM sees the files:

1. here, without TVM, the shape of each line (what TVM 0.27 writes):
       workload  [shash, base64(8-byte little-endian length + JSON object graph of an IRModule)]
       record    [workload_index, [trace, run_secs, target, args_info]]
                 trace [[[kind, inputs, attrs, outputs], ...], [[instruction_index, decision], ...]]
                 run_secs null | [seconds, ...]; target null | {"kind": ...}; args_info null | [[...], ...]
   and that each record's workload index names a workload line that passed;
2. in a child process, with TVM: the whole database loads (the usual case, one child). When it
   does not, the child parses each workload and record alone and reports line by line; a line
   that kills the child is rejected and a new child goes on after it.

The child runs `python -m compiler.tunedb.records DIR FIRST_WORKLOAD FIRST_RECORD WHOLE`; lines
before FIRST_* are known good (checked earlier) and get no verdict.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import select
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from reidc.targets.presets import ToolchainError

WORKLOADS, RECORDS = "database_workload.json", "database_tuning_record.json"
# (messages avoid square brackets: the CLI prints them through rich, which reads those as markup)
RECORD_SHAPE = "a workload index, then a list of trace, run_secs, target and args_info"
CHILD_TIMEOUT_S = 300.0   # per line, or for the whole database (TVM parses ~100 records/s/core)
CHILD = [sys.executable, "-m", "reidc.compiler.tunedb.records"]   # + DIR FIRST_WORKLOAD FIRST_RECORD WHOLE


class TuningDatabaseError(ToolchainError):
    """A tuning database reidc cannot read, check or write (one line naming the file)."""


@dataclass(eq=False)   # lines are told apart by identity
class Line:
    no: int                 # 1-based line number in the file as the user has it
    text: str
    ref: int = -1           # a record: the index of its workload among the kept workload lines
    checked: bool = False   # TVM has parsed it (here or in an earlier run)


@dataclass
class Rejected:
    file: str
    no: int
    text: str
    reason: str


@dataclass
class Checked:
    """The lines TVM can read and the ones it cannot, with why."""
    workloads: list[Line]
    records: list[Line]
    rejected: list[Rejected] = field(default_factory=list)

    def texts(self) -> tuple[str, str]:
        """The two files as TVM should see them: record indices renumbered to the kept workloads."""
        return (_join(w.text for w in self.workloads),
                _join(_with_index(r.text, r.ref) for r in self.records))

    def reject(self, file: str, line: Line, reason: str) -> None:
        self.rejected.append(Rejected(file, line.no, line.text, reason))


def _join(lines) -> str:
    return "".join(f"{ln}\n" for ln in lines)


_INDEX = re.compile(r"^\s*\[\s*-?\d+\s*,")


def _with_index(text: str, ref: int) -> str:
    return _INDEX.sub(f"[{ref},", text, count=1)


def split_lines(text: str) -> list[str]:
    """Lines as TVM's std::getline reads them (a final newline does not start another line)."""
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


# -- 1. shape --------------------------------------------------------------------------------

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _json(text: str, last: bool):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (read with surrogateescape)
        return None, "not UTF-8 text"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, "an incomplete last line (a write cut short)" if last else "not JSON"


def workload_problem(text: str, last: bool = False) -> str | None:
    """Why a database_workload.json line is not a workload TVM can parse, or None."""
    obj, err = _json(text, last)
    if err:
        return err
    if not (isinstance(obj, list) and len(obj) == 2 and all(isinstance(v, str) for v in obj)):
        return "not a workload (expected a structural hash and a base64 module)"
    if not obj[0].isdigit():
        return "the structural hash is not a decimal number"
    try:
        raw = base64.b64decode(obj[1], validate=True)
    except (binascii.Error, ValueError):
        return "the module is not base64"
    if len(raw) < 8 or int.from_bytes(raw[:8], "little") != len(raw) - 8:
        return "the module's length prefix does not match its data"
    try:
        graph = json.loads(raw[8:])
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return "the module is not JSON"
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    root = graph.get("root_index") if isinstance(graph, dict) else None
    if not (isinstance(nodes, list) and _is_int(root) and 0 <= root < len(nodes)
            and all(isinstance(n, dict) and isinstance(n.get("type"), str) for n in nodes)):
        return "the module is not a TVM object graph"
    if nodes[root]["type"] != "ir.IRModule":
        return f"the module is a {nodes[root]['type']}, not an IRModule"
    return None


def _trace_problem(trace) -> str | None:
    if not (isinstance(trace, list) and len(trace) == 2 and all(isinstance(t, list) for t in trace)):
        return "the trace is not a list of instructions and a list of decisions"
    insts, decisions = trace
    for inst in insts:
        if not (isinstance(inst, list) and len(inst) == 4 and isinstance(inst[0], str)
                and all(isinstance(v, list) for v in inst[1:])):
            return "a trace instruction is not (kind, inputs, attrs, outputs)"
    for d in decisions:
        if not (isinstance(d, list) and len(d) == 2 and _is_int(d[0]) and 0 <= d[0] < len(insts)):
            return "a trace decision is not (instruction index, decision)"
    return None


def record_problem(obj, n_workloads: int) -> str | None:
    """Why a parsed database_tuning_record.json line is not a record TVM can parse, or None."""
    if not (isinstance(obj, list) and len(obj) == 2):
        return f"not a tuning record (expected {RECORD_SHAPE})"
    index, rec = obj
    if not _is_int(index):
        return "the workload index is not an integer"
    if not 0 <= index < n_workloads:
        return f"workload index {index} is out of range ({WORKLOADS} has {n_workloads} lines)"
    if not (isinstance(rec, list) and len(rec) == 4):
        return f"not a tuning record (expected {RECORD_SHAPE})"
    trace, secs, target, args = rec
    problem = _trace_problem(trace)
    if problem:
        return problem
    if secs is not None and not (isinstance(secs, list) and all(_is_number(s) for s in secs)):
        return "run_secs is not a list of numbers"
    if target is not None and not (isinstance(target, dict) and isinstance(target.get("kind"), str)):
        return "the target is not a TVM target dict"
    if args is not None and not (isinstance(args, list) and all(isinstance(a, list) for a in args)):
        return "args_info is not a list of argument descriptions"
    return None


def check_shapes(workload_text: str, record_text: str, trusted: tuple[int, int] = (0, 0)) -> Checked:
    """Step 1: every line's shape; records follow their workloads when those are dropped."""
    out = Checked([], [])
    w_lines, r_lines = split_lines(workload_text), split_lines(record_text)
    kept_at: dict[int, int] = {}       # workload line index -> index among kept workloads
    for i, text in enumerate(w_lines):
        line = Line(i + 1, text, checked=i < trusted[0])
        problem = workload_problem(text, last=i == len(w_lines) - 1)
        if problem:
            out.reject(WORKLOADS, line, problem)
        else:
            kept_at[i] = len(out.workloads)
            out.workloads.append(line)
    for j, text in enumerate(r_lines):
        line = Line(j + 1, text, checked=j < trusted[1] and len(kept_at) == len(w_lines))
        obj, problem = _json(text, last=j == len(r_lines) - 1)
        problem = problem or record_problem(obj, len(w_lines))
        if not problem and obj[0] not in kept_at:
            problem = f"its workload (line {obj[0] + 1} of {WORKLOADS}) was rejected"
        if problem:
            out.reject(RECORDS, line, problem)
        else:
            line.ref = kept_at[obj[0]]
            out.records.append(line)
    return out


# -- 2. TVM, in a child ------------------------------------------------------------------------

def check(workload_text: str, record_text: str, trusted: tuple[int, int] = (0, 0)) -> Checked:
    """Both steps. `trusted`: how many leading lines of each file passed an earlier check."""
    out = check_shapes(workload_text, record_text, trusted)
    whole = not any(ln.checked for ln in out.workloads + out.records)
    with tempfile.TemporaryDirectory(prefix="reidc-dbcheck-") as tmp:
        while not all(ln.checked for ln in out.workloads + out.records):
            texts = out.texts()
            for name, text in zip((WORKLOADS, RECORDS), texts):
                Path(tmp, name).write_text(text, encoding="utf-8")
            first_w = next((k for k, ln in enumerate(out.workloads) if not ln.checked), len(out.workloads))
            first_r = next((k for k, ln in enumerate(out.records) if not ln.checked), len(out.records))
            _run_child(out, tmp, first_w, first_r, whole)
            whole = False
    return out


def _run_child(out: Checked, folder: str, first_w: int, first_r: int, whole: bool) -> None:
    """One child: mark what it verified; reject what it refused and the line it died on."""
    cmd = CHILD + [folder, str(first_w), str(first_r), str(int(whole))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # a Ctrl-C meant for reidc must not look like a crash
    snapshot = {"W": list(out.workloads), "R": list(out.records)}   # what the child's indices name
    current, timed_out, progress = None, False, False   # current: the line being parsed
    try:
        for event in _events(proc):
            if event is None:
                timed_out = True
                break
            kind, index, *verdict = event.split(" ", 2)
            if kind == "whole":
                for ln in out.workloads + out.records:
                    ln.checked = True
                return
            line = snapshot[kind][int(index)]
            if not verdict:
                current = line
                continue
            current, progress = None, True
            if verdict[0] == "ok":
                line.checked = True
            else:
                _drop(out, line, verdict[0].removeprefix("bad "))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    code = proc.returncode
    if current is not None:
        how = (f"TVM's parser did not finish with it in {CHILD_TIMEOUT_S:.0f} s" if timed_out else
               f"TVM's parser crashed on it (signal {-code})" if code < 0 else
               f"TVM's parser failed on it (exit status {code})")
        _drop(out, current, how)
    elif not (whole or progress):
        raise TuningDatabaseError(f"cannot check the tuning database: the checking process ended "
                                  f"({'timed out' if timed_out else f'exit status {code}'}) before it parsed a line")


def _events(proc):
    """The child's lines as they come; None when none came for CHILD_TIMEOUT_S. Reads the pipe
    unbuffered, so a line already sent is never waiting in a buffer while select() waits."""
    fd, buf = proc.stdout.fileno(), b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
        if not select.select([fd], [], [], CHILD_TIMEOUT_S)[0]:
            yield None
            return
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return
        buf += chunk


def _drop(out: Checked, line: Line, reason: str) -> None:
    """Reject a workload (and the records that use it) or a record; renumber what follows."""
    if line in out.records:
        out.records.remove(line)
        out.reject(RECORDS, line, reason)
        return
    if line not in out.workloads:
        return  # already dropped with its workload
    index = out.workloads.index(line)
    out.workloads.pop(index)
    out.reject(WORKLOADS, line, reason)
    kept = []
    for r in out.records:
        if r.ref == index:
            out.reject(RECORDS, r, f"its workload (line {line.no} of {WORKLOADS}) was rejected")
            continue
        if r.ref > index:
            r.ref -= 1
        kept.append(r)
    out.records = kept


def register_cpu_tensor_intrinsics(record_text: str = "") -> None:
    """Register only the x86 and ARM tensor intrinsics. MetaSchedule's TuneContext imports the
    whole `tvm.s_tir.tensor_intrin` package, whose CUDA half parses ~250 TVMScript functions:
    143 s measured here in a process that has torch loaded (TVMScript's inspect.stack() walks
    every loaded module). reidc tunes CPU targets only, so the package is set up without it.
    A trace that tensorizes names these intrinsics, so checking such a record needs them too,
    and reidc's own that are registered per shape (the Harley-Seal reductions and bit-packing
    words `record_text` names)."""
    import importlib
    import types
    from reidc.kernels.harley_seal import register_named_in
    from reidc.kernels.x86_intrin import register_bitpack_named_in
    register_named_in(record_text)
    register_bitpack_named_in(record_text)
    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    pkg = types.ModuleType(name)
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules[name] = pkg
    for sub in ("x86", "arm_cpu"):
        setattr(pkg, sub, importlib.import_module(f"{name}.{sub}"))


def last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def _child_main(folder: str, first_w: int, first_r: int, whole: bool) -> None:
    from tvm.s_tir import meta_schedule as ms

    def say(msg: str) -> None:
        print(msg, flush=True)

    paths = [os.path.join(folder, n) for n in (WORKLOADS, RECORDS)]
    w_lines, r_lines = (split_lines(Path(p).read_text(encoding="utf-8")) for p in paths)
    if any('"Tensorize"' in r for r in r_lines):
        register_cpu_tensor_intrinsics("\n".join(r_lines))
    if whole:
        try:
            ms.database.JSONDatabase(*paths, allow_missing=False)
            say("whole ok")
            return
        except Exception:  # noqa: BLE001  (then line by line)
            pass
    workloads = []
    for i, text in enumerate(w_lines):
        if i >= first_w:
            say(f"W {i}")
        try:
            workloads.append(ms.database.Workload.from_json(json.loads(text)))
            verdict = "ok"
        except Exception as e:  # noqa: BLE001
            workloads.append(None)
            verdict = f"bad {last_line(e)}"
        if i >= first_w:
            say(f"W {i} {verdict}")
    for j in range(first_r, len(r_lines)):
        say(f"R {j}")
        try:
            index, rec = json.loads(r_lines[j])
            if workloads[index] is None:
                raise ValueError(f"its workload (line {index + 1} of the checked copy) did not parse")
            ms.database.TuningRecord.from_json(rec, workloads[index])
            say(f"R {j} ok")
        except Exception as e:  # noqa: BLE001
            say(f"R {j} bad {last_line(e)}")


if __name__ == "__main__":
    _child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
