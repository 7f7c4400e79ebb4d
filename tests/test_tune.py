"""`reidc tune`: MetaSchedule with reidc's spaces, a target-keyed JSON database that survives a
kill, `compile --tuning-db`, RPC through a loopback tracker, and faults. Budgets are tiny (a
few trials of one or two kernels): these prove the machinery, the note has the benchmark."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import reidc
from reidc.compiler.cli import app
from reidc.compiler.compile import CompileOptions, compile_checkpoint
from reidc.compiler.reference import torch_forward
from reidc.compiler.runtime import Compiled
from reidc.compiler.tune.database import TunedTarget
from reidc.compiler.tunedb.database import RECORDS, TASKS, TuningDatabaseError
from reidc.compiler.tune.tune import TuneOptions, TuningAborted, tune_checkpoint
from reidc.frontend.checkpoint import save_checkpoint
from reidc.frontend.zoo import zoo_model
from reidc.targets import get_target
from reidc.targets.rpc import free_port, start_server, start_tracker, tracker_devices, wait_for_devices

SIZE = (64, 32)
BCONV = "bconv2d1_"   # one binary conv task of bire-resnet18 (stage 1)


@pytest.fixture(scope="module")
def bnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    model = zoo_model("bire-resnet18", "all-shared", seed=1, input_size=SIZE)
    save_checkpoint(model, d / "ck")
    return model, d / "ck"


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, bnn):
    """A database with 8 trials of a binary conv and of a float conv, tuned locally."""
    db = tmp_path_factory.mktemp("tune-db") / "db"
    res = tune_checkpoint(bnn[1], TuneOptions(db=str(db), trials=8, only=(BCONV, "fused_conv2d_add_relu"),
                                              progress=print))
    return db, res


def _lines(path):
    return path.read_text().splitlines() if path.is_file() else []


def test_local_tuning_writes_a_target_keyed_json_database(tuned):
    db, res = tuned
    key = TunedTarget(db, get_target("host")).key
    assert res["target_key"] == key and res["tasks"] == 2
    index = json.loads((db / "index.json").read_text())
    assert index[key]["batches"] == [1] and index[key]["preset"] == "host"
    tasks = json.loads((db / key / TASKS).read_text())
    assert sorted(t["trials"] for t in tasks.values()) == [8, 8]
    assert all(t["default_s"] > 0 for t in tasks.values())
    # reidc's own knob variants were measured first, as trials, before the evolutionary search
    assert all(t["variants_done"] and 1 <= t["variants"] <= 8 for t in tasks.values())
    # then the best record was re-measured against the default in 3 paired rounds, where it was
    # not the default's own (the search's minimum of single measurements is biased low)
    for t in tasks.values():
        c = t["confirmed"]
        assert c["trials"] == 8
        if c["rounds"] == 0:
            assert c["keep"] == "default" and not t["best_s"] < t["default_s"]
        else:
            assert c["rounds"] == 3 and t["best_s"] < t["default_s"] and c["tuned_s"] > 0 and c["default_s"] > 0
            assert (c["keep"] == "tuned") == (c["tuned_s"] < c["default_s"] and c["wins"] >= 2)
    # TVM's own JSONDatabase reads it: one default record + 8 trials per task
    from tvm.s_tir import meta_schedule as ms
    tvm_db = ms.database.JSONDatabase(work_dir=str(db / key))
    assert len(tvm_db) == 18 == len(_lines(db / key / RECORDS))


def test_compile_with_the_database_applies_records_and_verifies(tmp_path, bnn, tuned):
    model, ck = bnn
    man = compile_checkpoint(ck, tmp_path / "art", CompileOptions(tuning_db=str(tuned[0]), modes=("visible",)))
    assert man["batch"] == 1 and man["tuning"]["kernels_with_records"] == 2 and len(man["tuning"]["records_sha256"]) == 64
    assert man["verification"]["status"] == "passed"
    x = np.random.default_rng(1).standard_normal((1, 3) + SIZE, dtype=np.float32)
    np.testing.assert_allclose(Compiled(tmp_path / "art").run(x), torch_forward(model, x, "visible"),
                               rtol=1e-4, atol=1e-4)


def test_records_of_one_target_are_not_applied_to_another(tmp_path, bnn, tuned):
    with pytest.raises(TuningDatabaseError, match="no records for target x86-64"):
        compile_checkpoint(bnn[1], tmp_path / "art", CompileOptions(target="x86-64", tuning_db=str(tuned[0])))
    assert not (tmp_path / "art").exists()


def test_report_prints_a_table_and_writes_a_plot(tuned):
    db, res = tuned
    r = CliRunner().invoke(app, ["tune", "--report", str(db)])
    assert r.exit_code == 0, r.output
    assert "default ms" in r.output and "share of run" in r.output and "unchecked" not in r.output
    tasks = json.loads((db / res["target_key"] / TASKS).read_text())
    rows = {r["task"]: r for r in reidc.tune_report(db, plot=False)[res["target_key"]]["rows"]}
    for t in tasks.values():   # the figures are the paired re-measure's, "tuned" what compile applies
        c, row = t["confirmed"], rows[t["name"]]
        assert row["kept"] == c["keep"] and row["default_ms"] == pytest.approx(c["default_s"] * 1e3)
        assert row["tuned_ms"] == pytest.approx((c["tuned_s"] if c["keep"] == "tuned" else c["default_s"]) * 1e3)
    png = db / res["target_key"] / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_torn_last_line_is_moved_aside_and_nothing_else(tmp_path, tuned):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    folder = db / tuned[1]["target_key"]
    before = _lines(folder / RECORDS)
    with open(folder / RECORDS, "a") as f:  # as a kill in the middle of an append leaves it
        f.write('[0,[[["GetSBlock"')
    msgs = []
    assert len(TunedTarget(db, get_target("host")).open(msgs.append)) == len(before)
    assert _lines(folder / RECORDS) == before
    assert _lines(folder / f"{RECORDS}.rejected") == ['[0,[[["GetSBlock"']
    assert msgs == [f"warning: {folder / RECORDS} line {len(before) + 1}: an incomplete last line (a write cut "
                    f"short); moved to {RECORDS}.rejected"]


def test_killed_tuning_resumes_without_losing_trials(tmp_path, bnn):
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "reidc.compiler.cli", "tune", str(bnn[1]), "--db", str(db), "--trials", "16",
           "--only", BCONV]
    key = TunedTarget(db, get_target("host")).key
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill -9 once the first batch of 8 trials is saved
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:
            tasks = json.loads((db / key / TASKS).read_text()) if (db / key / TASKS).is_file() else {}
            if any(t.get("trials", 0) >= 8 for t in tasks.values()):
                break
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = _lines(db / key / RECORDS)
    done = next(iter(json.loads((db / key / TASKS).read_text()).values()))["trials"]
    assert 8 <= done < 16 and len(before) >= done + 1
    with open(db / key / RECORDS, "a") as f:  # as if the kill had torn a record in half
        f.write('[0, [[["GetSBlock"')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    after = _lines(db / key / RECORDS)
    assert after[:len(before)] == before           # every record written before the kill is kept
    assert len(after) == 1 + 16                      # the default + exactly the budget, no repeats
    assert next(iter(json.loads((db / key / TASKS).read_text()).values()))["trials"] == 16


def test_candidates_past_their_timeout_are_recorded_failed(tmp_path, bnn):
    db = tmp_path / "db"
    res = tune_checkpoint(bnn[1], TuneOptions(db=str(db), trials=4, only=(BCONV,), timeout_s=0.01))
    task = next(iter(json.loads((db / res["target_key"] / TASKS).read_text()).values()))
    assert task["trials"] == 4 and task["failed"] == 4 and task["default_s"] is None
    secs = [json.loads(line)[1][1] for line in _lines(db / res["target_key"] / RECORDS)]
    assert secs == [[1e10]] * 4  # MetaSchedule's mark for a failed measurement


@pytest.fixture
def tracker(tmp_path):
    log = open(tmp_path / "rpc.log", "w")
    port = free_port()
    procs = [start_tracker(port, log)]
    yield port, procs, log
    for p in procs:
        p.stop()
    assert all(p.proc.poll() is not None for p in procs)


def test_tuning_through_a_loopback_rpc_tracker(tmp_path, bnn, tracker):
    port, procs, log = tracker
    procs.append(start_server(port, "x86-test", log))
    wait_for_devices(port, "x86-test")
    res = tune_checkpoint(bnn[1], TuneOptions(db=str(tmp_path / "db"), trials=4, only=(BCONV,),
                                              rpc_tracker=f"127.0.0.1:{port}", rpc_key="x86-test"))
    task = next(iter(json.loads((tmp_path / "db" / res["target_key"] / TASKS).read_text()).values()))
    assert task["trials"] == 4 and task["failed"] == 0 and task["best_s"] > 0
    assert "load_module" in (tmp_path / "rpc.log").read_text()  # measured on the server


def test_a_server_that_dies_mid_tune_stops_tuning_with_a_clear_message(tmp_path, bnn, tracker):
    port, procs, log = tracker
    server = start_server(port, "x86-dies", log)
    procs.append(server)
    wait_for_devices(port, "x86-dies")
    msgs = []

    def progress(msg):
        msgs.append(msg)
        if "reidc default" in msg and server.proc.poll() is None and "trials" not in msg:
            server.stop()  # the device goes away after the default is measured
            t0 = time.monotonic()
            while tracker_devices("127.0.0.1", port, "x86-dies") and time.monotonic() - t0 < 30:
                time.sleep(0.5)

    with pytest.raises(TuningAborted, match="no device with key 'x86-dies' is left"):
        tune_checkpoint(bnn[1], TuneOptions(db=str(tmp_path / "db"), trials=8, only=(BCONV,), timeout_s=5,
                                            rpc_tracker=f"127.0.0.1:{port}", rpc_key="x86-dies", progress=progress))
    db = tmp_path / "db" / TunedTarget(tmp_path / "db", get_target("host")).key
    task = next(iter(json.loads((db / TASKS).read_text()).values()))
    assert task["failed"] == task["trials"] > 0  # its pending measurements were recorded as failed


@pytest.mark.arm
def test_tuning_an_arm_target_through_a_qemu_server_then_compiling(tmp_path, bnn, tracker):
    from reidc.targets.arm_python import server_command
    if get_target("rpi4").missing_on_host() and not os.environ.get("REIDC_REQUIRE_TOOLS"):
        pytest.skip("needs qemu-user and the aarch64 toolchain")  # deliberate: CI sets REIDC_REQUIRE_TOOLS
    port, procs, log = tracker
    python, env, extra = server_command()
    procs.append(start_server(port, "rpi4-qemu", log, python=python, env=env, extra=extra))
    wait_for_devices(port, "rpi4-qemu", timeout_s=120)
    db = tmp_path / "db"
    res = tune_checkpoint(bnn[1], TuneOptions(db=str(db), target="rpi4", trials=4, only=(BCONV,), timeout_s=60,
                                              rpc_tracker=f"127.0.0.1:{port}", rpc_key="rpi4-qemu"))
    task = next(iter(json.loads((db / res["target_key"] / TASKS).read_text()).values()))
    assert task["trials"] == 4 and task["failed"] == 0 and task["default_s"] > 0
    man = compile_checkpoint(bnn[1], tmp_path / "art", CompileOptions(target="rpi4", tuning_db=str(db),
                                                                     modes=("visible",)))
    assert man["tuning"]["kernels_with_records"] == 1 and man["verification"]["status"] == "passed"


def test_a_torchreid_checkpoint_tunes_its_only_entry_then_compiles_with_the_records(tmp_path):
    """A toolbox checkpoint: its architecture named as compile takes it, its one entry (main)
    tuned without --modes, and the CLI's hint names the same flags."""
    sys.path.insert(0, os.path.dirname(__file__))
    from torchreid_runs import features, torchreid_run
    model, path = torchreid_run(tmp_path / "run", "osnet_x0_25")
    db = tmp_path / "db"
    r = CliRunner().invoke(app, ["tune", str(path), "--torchreid-arch", "osnet_x0_25", "--db", str(db), "--trials", "2",
                                 "--only", "depthwise_conv2d_"])
    assert r.exit_code == 0, r.output
    assert "--torchreid-arch osnet_x0_25 --target host --tuning-db" in " ".join(r.output.split())
    assert r.output.count("trials (0 failed)") >= 1
    art = compile_checkpoint(path, tmp_path / "art", CompileOptions(torchreid_arch="osnet_x0_25", tuning_db=str(db)))
    assert art["verification"]["status"] == "passed"
    x = np.random.default_rng(0).standard_normal((1, 3, 256, 128)).astype(np.float32)   # tuned for batch 1
    got, want = Compiled(tmp_path / "art").run(x, "main"), features(model, x)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


INT8_STEM = "conv2d_int8_"   # bire-resnet18's int8 stem conv (its downsample convs are int81_, int82_, ...)


def test_the_int8_conv_space_offers_register_tile_and_row_block_variants(bnn):
    """The int8 conv's tuning space: reidc's default first, then the same instructions with other
    accumulator tiles and row blocks (before, its default was the space's only reidc schedule)."""
    import tvm
    from reidc.compiler.tune.space import default_schedule, reidc_schedules, rule_variants
    from reidc.compiler.tune.tune import extract_tasks
    from reidc.kernels.conv2d_int8 import QCONV_BLOCK
    preset = get_target("host")
    tasks, _ = extract_tasks(bnn[1], TuneOptions(db="unused", precision="int8", only=(INT8_STEM,)), preset)
    assert [t.task_name.startswith("fused_conv2d_int8_") for t in tasks] == [True]
    func = tasks[0].dispatched[0]["main"]
    found = reidc_schedules(func, preset.tvm_target(), rule_variants(preset))
    assert len(found) >= 3
    tvm.ir.assert_structural_equal(found[0].mod, default_schedule(func, preset).mod)

    class Misfit:   # a rule variant that fails on this function: TVM's ScheduleError (a RuntimeError)
        def apply(self, func, target, tunable):
            sch = tvm.s_tir.Schedule(func)
            sch.get_sblock(QCONV_BLOCK + "_of_another_shape")
    kept = reidc_schedules(func, preset.tvm_target(), [Misfit(), *rule_variants(preset)])
    assert len(kept) == len(found)
    tvm.ir.assert_structural_equal(kept[0].mod, found[0].mod)
    fp32, _ = extract_tasks(bnn[1], TuneOptions(db="unused", only=("fused_conv2d_add_relu",)), preset)
    assert fp32 and not any("int8" in t.task_name for t in fp32)


def test_int8_kernels_tune_and_compile_applies_their_records(tmp_path, bnn):
    db = tmp_path / "db"
    r = CliRunner().invoke(app, ["tune", str(bnn[1]), "--db", str(db), "--precision", "int8", "--trials", "2",
                                 "--only", INT8_STEM])
    assert r.exit_code == 0, r.output
    assert "--precision int8 --target host --tuning-db" in " ".join(r.output.split())
    # an untrained binary network's int8 feature is far from its fp32 one (sign flips), so the
    # tuned build is checked against reidc's default int8 build of the same weights instead
    builds = {}
    for name, tuning in (("tuned", str(db)), ("default", None)):
        man = compile_checkpoint(bnn[1], tmp_path / name, CompileOptions(
            precision="int8", tuning_db=tuning, modes=("visible",), batch=1, verify=False))
        assert man["precision"]["real_valued"] == "int8"
        builds[name] = (man, Compiled(tmp_path / name))
    assert builds["tuned"][0]["tuning"]["kernels_with_records"] == 1 and builds["default"][0]["tuning"] is None
    x = np.random.default_rng(2).standard_normal((1, 3) + SIZE, dtype=np.float32)
    np.testing.assert_allclose(builds["tuned"][1].run(x), builds["default"][1].run(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags, says", [
    (["--precision", "auto"], "--precision auto: tune one precision's kernels"),
    (["--int8-weight-bits", "6"], "--int8-weight-bits needs --precision int8"),
    (["--precision", "int8", "--int8-weight-bits", "9"], "--int8-weight-bits 9"),
])
def test_tune_refuses_a_precision_it_cannot_tune_before_any_work(tmp_path, flags, says):
    r = CliRunner().invoke(app, ["tune", str(tmp_path / "no-such-checkpoint"), "--db", str(tmp_path / "db"), *flags])
    assert r.exit_code != 0 and says in " ".join(r.output.split()), r.output
    assert not (tmp_path / "db").exists()


def test_records_that_tensorize_with_harley_seal_load_in_a_fresh_process(tmp_path, bnn):
    """reidc registers a Harley-Seal intrinsic per shape when a schedule first uses it; a process
    that only reads records naming one (`reidc compile --tuning-db`) registers those the records
    name before TVM parses them (TVM refused the whole database: "TensorIntrin ... is not
    registered")."""
    from reidc.compiler.lower.build import harley_seal
    if not harley_seal(get_target("host")):
        pytest.skip("this CPU has VPOPCNTQ (or is not x86): no Harley-Seal variants to tune")
    db = tmp_path / "db"
    r = CliRunner().invoke(app, ["tune", str(bnn[1]), "--db", str(db), "--trials", "5", "--only", "fused_bconv2d6_",
                                 "--confirm-rounds", "1"])
    assert r.exit_code == 0, r.output
    assert "reidc_bconv_harley_seal_3x3x8x4" in next(db.glob("*/database_tuning_record.json")).read_text()
    p = subprocess.run([sys.executable, "-m", "reidc.compiler.cli", "compile", str(bnn[1]), "--tuning-db", str(db),
                        "--modes", "visible", "-o", str(tmp_path / "art")], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "verification passed" in p.stdout


def test_local_candidates_are_timed_at_the_threads_compiled_models_run_with(monkeypatch):
    """TVM's pool, left without TVM_NUM_THREADS, takes half the logical CPUs: on a 2-core VM
    `reidc tune` timed every candidate at 1 thread while `compile`'s builds run at 2 (a ResNet-18
    conv measured 0.682 ms there against 0.465 ms at 2 threads, and the schedule that won at 2
    did not at 1). The runner's worker process must run with the threads `Compiled` uses."""
    from tvm.runtime import num_threads

    from reidc.compiler.runtime import usable_cpus
    from reidc.compiler.tune import measure
    monkeypatch.delenv("TVM_NUM_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run = measure.runner(get_target("host"))
    assert os.environ["TVM_NUM_THREADS"] == str(usable_cpus())
    assert run.pool.submit(num_threads).result() == usable_cpus()
    monkeypatch.setenv("TVM_NUM_THREADS", "1")   # the user's choice stands
    assert measure.runner(get_target("host")).pool.submit(num_threads).result() == 1
    monkeypatch.setenv("TVM_NUM_THREADS", "two")   # (TVM would read 0, and run 1 thread)
    assert measure.runner(get_target("host")).pool.submit(num_threads).result() == usable_cpus()


def test_tune_records_where_it_measured(tuned):
    from reidc.compiler.runtime import tvm_threads
    db, _ = tuned
    index = json.loads((db / "index.json").read_text())
    assert [e["measured"] for e in index.values()] == [f"here at {tvm_threads()} threads"]
