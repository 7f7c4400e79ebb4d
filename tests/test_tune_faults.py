"""Faults around `reidc tune` and its database: nonsense in the JSON files TVM parses in C++
(which crashes TVM itself), Ctrl-C once and twice, targets and folders that cannot be tuned or
written. Each ends in a result, one `error:` line (exit 1) or one `interrupted` line (exit 130);
never a traceback, a crash, a lost record or a database skeleton left behind."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.tunedb import records
from reidc.compiler.runtime import tvm_threads
from reidc.compiler.tune.database import TunedTarget
from reidc.compiler.tunedb.database import CHECKED, INDEX, RECORDS, TASKS, WORKLOADS
from reidc.compiler.tunedb.records import check, check_shapes
from reidc.compiler.tune.tune import TuneOptions
from reidc.frontend.checkpoint import save_checkpoint
from reidc.frontend.zoo import zoo_model
from reidc.targets import get_target

BCONV = "bconv2d1_"   # the smallest task tests/test_tune.py tunes
ENV = {**os.environ, "COLUMNS": "1000"}   # progress and warnings one line each
PROGRESS = re.compile(r"\d+/\d+ trials \(")


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune-faults")
    save_checkpoint(zoo_model("bire-resnet18", "all-shared", seed=1, input_size=(64, 32)), d / "ck")
    return d / "ck"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ck):
    """A database as `reidc tune` writes it, one workload (the binary conv) and three records of
    reidc's default schedule, made without measuring: these tests are about the files."""
    from tvm.s_tir import meta_schedule as ms
    from reidc.compiler.tune.space import default_schedule
    from reidc.compiler.tune.tune import extract_tasks, workload_key
    db, preset = tmp_path_factory.mktemp("tuned") / "db", get_target("host")
    (task,), facts = extract_tasks(ck, TuneOptions(db=str(db), only=(BCONV,)), preset)
    mod = task.dispatched[0]
    sch = default_schedule(mod["main"], preset)
    tdb = TunedTarget(db, preset)
    database = tdb.open()
    tdb.register(1, f"here at {tvm_threads()} threads")
    wl = database.commit_workload(mod)
    for secs in (3e-5, 2e-5, 1e-5):
        database.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, [secs], preset.tvm_target(),
                                                               ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
    tdb.save_tasks({workload_key(mod): {"trials": 2, "failed": 0, "name": task.task_name, "weight": int(task.weight),
                                        "batch": 1, "model": facts["model"], "default_s": 3e-5, "best_s": 1e-5}})
    tdb.stamp()
    return db


def _folder(db):
    return db / TunedTarget(db, get_target("host")).key


def _lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def reidc(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "reidc.compiler.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def cli(*args, code):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output and r.exit_code == code, (r.exit_code, r.output, r.exception)
    if code == 1:  # progress lines may come first; the error is one line, the last
        assert r.output.count("error:") == 1 and r.output.strip().splitlines()[-1].startswith("error:"), r.output
    return " ".join(r.output.split())


def _nonsense(good_record: str) -> dict[str, str]:
    """Well-formed JSON lines that are no tuning record (record file), by what is wrong."""
    trace = json.loads(good_record)[1][0]
    return {
        "wrong shape": '[0, [["garbage"]], 1]',
        "an object": "{}",                                   # segfaults TVM 0.27's JSONDatabase
        "null": "null",                                      # so does this
        "workload index out of range": json.dumps([7, [trace, [1e-5], None, None]]),
        "an index that is no integer": json.dumps(["0", [trace, [1e-5], None, None]]),
        "run_secs of strings": json.dumps([0, [trace, ["fast"], None, None]]),
    }


def _bad_workload() -> str:
    """A workload line whose module is base64 of JSON, but not of an IRModule."""
    import base64
    body = b'{"root_index": 0, "nodes": [{"type": "ffi.String", "data": "x"}]}'
    return json.dumps(["1", base64.b64encode(len(body).to_bytes(8, "little") + body).decode()])


def _damage(folder: Path) -> dict[str, list[int]]:
    """Put every kind of nonsense into a copy of a database; returns the bad line numbers per file."""
    recs = _lines(folder / RECORDS)
    uses_bad_workload = json.dumps([1, json.loads(recs[1])[1]])
    bad = list(_nonsense(recs[1]).values()) + [uses_bad_workload]
    (folder / RECORDS).write_text("\n".join(recs[:1] + bad + recs[1:]) + "\n")
    (folder / WORKLOADS).write_text((folder / WORKLOADS).read_text() + _bad_workload() + "\n")
    return {RECORDS: list(range(2, 2 + len(bad))), WORKLOADS: [2]}


# -- the checks, without TVM ------------------------------------------------------------------

def test_each_kind_of_nonsense_is_named_and_the_good_lines_are_kept(tuned):
    folder = _folder(tuned)
    good_w, good_r = (folder / WORKLOADS).read_text(), _lines(folder / RECORDS)
    for kind, line in _nonsense(good_r[1]).items():
        out = check_shapes(good_w, "\n".join(good_r[:1] + [line] + good_r[1:]) + "\n")
        assert [(r.file, r.no, r.text) for r in out.rejected] == [(RECORDS, 2, line)], kind
        assert out.texts() == (good_w, "\n".join(good_r) + "\n"), kind
    out = check_shapes(good_w + _bad_workload() + "\n", "\n".join(good_r + [good_r[0].replace("[0,", "[1,", 1)]))
    assert [(r.file, r.no) for r in out.rejected] == [(WORKLOADS, 2), (RECORDS, 4)]
    assert "not an IRModule" in out.rejected[0].reason and "line 2 of" in out.rejected[1].reason


def test_records_are_renumbered_when_a_workload_line_before_them_goes(tuned):
    folder = _folder(tuned)
    w, r = (folder / WORKLOADS).read_text(), _lines(folder / RECORDS)
    out = check_shapes(_bad_workload() + "\n" + w, "".join(ln.replace("[0,", "[1,", 1) + "\n" for ln in r))
    assert [(x.file, x.no) for x in out.rejected] == [(WORKLOADS, 1)]
    assert out.texts() == (w, "".join(ln + "\n" for ln in r))


# -- TVM's own parse: the crash, and the child that survives it ---------------------------------

def test_tvm_alone_dies_on_a_record_that_is_json_but_not_a_record(tuned, tmp_path):
    """Why reidc checks first: TVM 0.27's JSONDatabase on a `{}` line (a negative code is a signal)."""
    shutil.copytree(_folder(tuned), tmp_path / "db")
    with open(tmp_path / "db" / RECORDS, "a") as f:
        f.write("{}\n")
    code = textwrap.dedent(f"""
        from tvm.s_tir import meta_schedule as ms
        ms.database.JSONDatabase(work_dir={str(tmp_path / 'db')!r})""")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0


def test_a_line_that_kills_tvms_parser_is_rejected_and_a_new_child_goes_on(tuned, tmp_path, monkeypatch):
    """The checking child segfaults (SIGSEGV, as TVM does) on a record measured at 1234.5 s: the
    whole load dies, then the line-by-line child dies on that line, and a third checks the rest."""
    fake = tmp_path / "crashing_child.py"
    fake.write_text(textwrap.dedent("""
        import os, signal, sys
        from tvm.s_tir import meta_schedule as ms
        from reidc.compiler.tunedb import records

        def die():
            os.kill(os.getpid(), signal.SIGSEGV)

        real_db, real_record = ms.database.JSONDatabase, ms.database.TuningRecord.from_json

        def database(*paths, **kw):
            if "1234.5" in open(paths[1]).read():
                die()
            return real_db(*paths, **kw)

        def record(rec, workload):
            if rec[1] == [1234.5]:
                die()
            return real_record(rec, workload)

        ms.database.JSONDatabase = database
        ms.database.TuningRecord.from_json = staticmethod(record)
        records._child_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
        """))
    monkeypatch.setattr(records, "CHILD", [sys.executable, str(fake)])
    folder = _folder(tuned)
    w, r = (folder / WORKLOADS).read_text(), _lines(folder / RECORDS)
    killer = json.loads(r[1])
    killer[1][1] = [1234.5]
    out = check(w, "\n".join([r[0], json.dumps(killer), *r[1:]]) + "\n")
    assert [(x.no, x.reason) for x in out.rejected] == [(2, "TVM's parser crashed on it (signal 11)")]
    assert out.texts() == (w, "\n".join(r) + "\n")
    assert all(ln.checked for ln in out.workloads + out.records)


# -- the commands --------------------------------------------------------------------------------

def test_compile_with_nonsense_in_the_database_warns_and_leaves_the_database_as_it_was(ck, tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    folder = _folder(db)
    bad = _damage(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    r = reidc("compile", ck, "--modes", "visible", "--tuning-db", db, "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr[-3000:]   # not a crash (negative) nor an error
    assert "Traceback" not in r.stderr
    for name, numbers in bad.items():
        for n in numbers:
            assert re.search(rf"warning: \S*{name} line {n}: .*; ignored", r.stderr), (name, n, r.stderr)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before   # compile only reads
    man = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert man["tuning"]["kernels_with_records"] == 1 and man["tuning"]["records"] == 3


def test_a_record_that_lost_the_paired_re_measure_is_not_applied(ck, tuned, tmp_path):
    """The search's best (1e-5 s in the crafted database) lost its paired rounds to reidc's
    default: compile keeps the default for that kernel and says so; the report shows the paired
    figures; the database is only read."""
    from reidc.compiler.tunedb.database import open_for_compile
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    tasks = json.loads((_folder(db) / TASKS).read_text())
    task = next(iter(tasks.values()))
    assert "unchecked" in cli("tune", "--report", db, code=0)   # the search's minimum, not re-measured: said
    task["confirmed"] = {"trials": 2, "rounds": 3, "wins": 1, "default_s": 2.5e-5, "tuned_s": 2.6e-5, "keep": "default"}
    (_folder(db) / TASKS).write_text(json.dumps(tasks))
    before = {p.name: p.read_bytes() for p in _folder(db).iterdir() if p.name != "report.png"}
    tuning = open_for_compile(db, get_target("host"), None)
    assert len(tuning.database) == 3 and len(tuning.applied) == 0 and tuning.kept_keys == set(tasks)
    r = reidc("compile", ck, "--modes", "visible", "--tuning-db", db, "-o", tmp_path / "art")
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"1 of \d+ kernels have tuning records \(1 of them keep reidc's schedule", r.stderr), r.stderr
    man = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert man["tuning"]["kept_default"] == 1 and man["tuning"]["kernels_with_records"] == 1
    assert man["verification"]["status"] == "passed"
    text = cli("tune", "--report", db, code=0)
    assert "reidc default" in text and "unchecked" not in text and "1.00x" in text
    assert {p.name: p.read_bytes() for p in _folder(db).iterdir() if p.name != "report.png"} == before


def _start_tune(ck, db, trials):
    return subprocess.Popen([sys.executable, "-m", "reidc.compiler.cli", "tune", str(ck), "--db", str(db), "--trials",
                             str(trials), "--only", BCONV], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)


def _interrupt_at(proc, pattern, signals, group=False, delay=0.0):
    """Wait for a progress line matching `pattern` (and `delay` s), send SIGINT `signals` times;
    return (exit code, stderr)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(pattern, line):
            break
    else:
        proc.kill()
        pytest.fail("tuning ended before its first progress line:\n" + "".join(seen))
    time.sleep(delay)
    for _ in range(signals):  # 0.2 s apart, as fast as a person presses: two SIGINTs sent within
        os.killpg(proc.pid, signal.SIGINT) if group else proc.send_signal(signal.SIGINT)
        time.sleep(0.2)       # microseconds of each other are one pending signal to the kernel
    _, rest = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + rest


def test_the_first_ctrl_c_only_asks_to_stop_and_everything_is_restored_after():
    """In process (a second SIGINT would end pytest itself: that case runs in a subprocess below).
    Run from a shell's background job (`nohup ... &`), pytest starts with Ctrl-C ignored, which
    Interrupts rightly leaves alone: the test gives itself Python's own handler meanwhile."""
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _first_ctrl_c()
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def _first_ctrl_c():
    from reidc.compiler.tune.interrupt import Interrupts
    said, before = [], (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []))
    with Interrupts(said.append, lambda: pytest.fail("stopped at once")) as stop:
        assert signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])   # inherited by workers
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(500):
            if stop.requested:
                break
            time.sleep(0.01)
        assert stop.requested and said == ["stopping after this batch (Ctrl-C again to stop at once)"]
        with pytest.raises(KeyboardInterrupt):
            stop.check()
    assert (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, [])) == before


def _one_interrupted_line(err, db):
    assert "Traceback" not in err and "error" not in err.lower(), err
    assert err.strip().splitlines()[-1] == \
        f"interrupted: every finished trial is in {db}; run the same command again to resume", err
    assert err.count("interrupted:") == 1


def test_ctrl_c_once_stops_after_the_batch_being_measured(ck, tmp_path):
    """Sent while the first batch is searched, built and measured (1 s after the default schedule
    was measured), as a terminal sends it, to the whole process group: the worker processes do
    not die (no failed trials), the batch is measured and recorded, then exit 130."""
    db = tmp_path / "db"
    code, err = _interrupt_at(_start_tune(ck, db, 16), "reidc default", 1, group=True, delay=1.0)
    assert code == 130, err
    _one_interrupted_line(err, db)
    assert "stopping after this batch (Ctrl-C again to stop at once)" in err
    task = next(iter(json.loads((_folder(db) / TASKS).read_text()).values()))
    # the batches: reidc's variants of the kernel first, then the search's 8 at a time (a fast
    # machine may be in a later batch by then)
    assert task["variants"] >= 1 and (task["trials"] - task["variants"]) % 8 == 0 and task["failed"] == 0
    assert len(_lines(_folder(db) / RECORDS)) == 1 + task["trials"]


def test_ctrl_c_twice_stops_at_once_and_tuning_resumes_past_nonsense(ck, tmp_path):
    db = tmp_path / "db"
    code, err = _interrupt_at(_start_tune(ck, db, 16), PROGRESS, 2)   # at the first k/n trials line
    assert code == 130, err
    _one_interrupted_line(err, db)
    folder = _folder(db)
    task = next(iter(json.loads((folder / TASKS).read_text()).values()))
    done = task["trials"]
    before = _lines(folder / RECORDS)
    # the variants, then the first search batch; counts and records agree
    assert done == task["variants"] + 8 and len(before) == 1 + done
    bad = _damage(folder)
    rejected = [ln for n, ln in enumerate(_lines(folder / RECORDS), 1) if n in bad[RECORDS]]
    r = reidc("tune", ck, "--db", db, "--trials", 16, "--only", BCONV)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, numbers in bad.items():
        for n in numbers:
            assert re.search(rf"warning: \S*{name} line {n}: .*; moved to {name}\.rejected", r.stderr), (name, n)
    assert _lines(folder / f"{RECORDS}.rejected") == rejected      # the user's lines, as they were
    assert _lines(folder / f"{WORKLOADS}.rejected") == [_bad_workload()]
    after = _lines(folder / RECORDS)
    assert after[:len(before)] == before and len(after) == 1 + 16
    assert next(iter(json.loads((folder / TASKS).read_text()).values()))["trials"] == 16
    from tvm.s_tir import meta_schedule as ms
    assert len(ms.database.JSONDatabase(work_dir=str(folder))) == 17
    assert json.loads((folder / CHECKED).read_text())[RECORDS]["lines"] == 17


# -- refused before anything is created ----------------------------------------------------------

@pytest.mark.parametrize("target", ["sm90", '{"kind": "cuda", "arch": "sm_80"}'])
def test_cuda_targets_are_refused_before_the_database_is_created(ck, tmp_path, target):
    from reidc.targets.devices import cuda_device_count
    text = cli("tune", ck, "--db", tmp_path / "db", "--target", target, code=1)
    assert f"--target {target}" in text
    assert ("no GPU is reachable from here" if not cuda_device_count() else "does not tune CUDA targets") in text
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("args, words", [
    (["--trials", "0"], "--trials 0: must be at least 1"),
    (["--batch", "0"], "--batch 0: must be at least 1"),
    (["--rpc-key", "pi"], "--rpc-key needs --rpc-tracker"),
    (["--rpc-tracker", "tracker", "--rpc-key", "pi"], "expected HOST:PORT"),
    (["--rpc-tracker", "127.0.0.1:9190"], "needs --rpc-key"),
    (["--target", "rpi4"], "--rpc-tracker HOST:PORT"),
    (["--confirm-rounds", "-1"], "--confirm-rounds -1: must be 0 (off) or more"),
])
def test_bad_options_are_refused_before_the_database_is_created(ck, tmp_path, args, words):
    assert words in cli("tune", ck, "--db", tmp_path / "db", *args, code=1)
    assert not (tmp_path / "db").exists()


def test_a_checkpoint_that_does_not_load_leaves_no_database(tmp_path):
    cli("tune", tmp_path / "missing-ck", "--db", tmp_path / "db", code=1)
    assert not (tmp_path / "db").exists()


def test_db_folders_that_cannot_be_written(ck, tmp_path, tuned, monkeypatch):
    """As root a chmod'ed folder stays writable, so: --db under a file, --db naming a file, a
    folder of someone else's files, and (os.access patched to deny writing) a read-only one."""
    f = tmp_path / "file"
    f.write_text("mine")
    assert f"{f} is a file, not a folder" in cli("tune", ck, "--db", f / "db", code=1)
    assert "exists and is not a folder" in cli("tune", ck, "--db", f, code=1)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("mine")
    assert "not a reidc tuning database" in cli("tune", ck, "--db", tmp_path / "docs", code=1)
    assert f.read_text() == "mine" and sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["notes.txt"]
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    before = {str(p): p.read_bytes() for p in db.rglob("*") if p.is_file()}
    real = os.access   # what compiler.base.atomic.why_not_writable asks
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if mode & os.W_OK else real(p, mode, **k))
    text = cli("tune", ck, "--db", db, code=1)
    assert f"--db {db}: cannot write {db}" in text and "permission denied" in text
    text = cli("tune", ck, "--db", tmp_path / "new", code=1)
    assert f"cannot create the folder in {tmp_path}" in text and not (tmp_path / "new").exists()
    assert {str(p): p.read_bytes() for p in db.rglob("*") if p.is_file()} == before


def test_corrupt_index_and_task_files_are_one_line_errors_naming_the_file(ck, tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    for bad in ('{"x": {"trials": "many"}}', '{"x": {"trials": 2, "failed": 0, "confirmed": {"keep": "maybe"}}}'):
        (_folder(db) / TASKS).write_text(bad)
        for args in (["tune", ck, "--db", db], ["tune", "--report", db]):
            text = cli(*args, code=1)
            assert f"{_folder(db) / TASKS}: corrupt" in text and "delete it" in text
    (db / INDEX).write_text("[1, 2")
    for args in (["tune", ck, "--db", db], ["tune", "--report", db],
                 ["compile", ck, "--modes", "visible", "--tuning-db", db, "-o", tmp_path / "art"]):
        assert f"{db / INDEX}: corrupt (not JSON" in cli(*args, code=1)
    assert not (tmp_path / "art").exists()


def _index_measured(db, where):
    index = json.loads((db / INDEX).read_text())
    for entry in index.values():
        entry.pop("measured", None)
        if where:
            entry["measured"] = where
    (db / INDEX).write_text(json.dumps(index))


def test_a_database_measured_elsewhere_is_not_resumed(ck, tuned, tmp_path):
    """Its defaults, paired re-measures and algorithm choices were timed there: mixing them with
    this run's would compare times taken two ways. Refused before anything is measured or written."""
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    _index_measured(db, "through RPC key board-x")
    before = {p: p.read_bytes() for p in db.rglob("*") if p.is_file()}
    text = cli("tune", ck, "--db", db, "--trials", "1", code=1)
    assert "measured through RPC key board-x" in text and f"here at {tvm_threads()} threads" in text
    assert "new --db" in text
    assert {p: p.read_bytes() for p in db.rglob("*") if p.is_file()} == before


def test_a_database_from_before_reidc_recorded_where_is_resumed_with_a_warning(ck, tuned, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned, db)
    _index_measured(db, None)
    text = cli("tune", ck, "--db", db, "--trials", "1", "--confirm-rounds", "0", "--only", BCONV, code=0)
    assert "tuned before reidc recorded where" in text and f"measures here at {tvm_threads()} threads" in text
    assert all("measured" not in e for e in json.loads((db / INDEX).read_text()).values())   # it warns again next time
