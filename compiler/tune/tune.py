"""`reidc tune`: one MetaSchedule search per task of the compiled model, task after task.

On x86 in fp32 the graph's Winograd algorithms are measured first (algorithms.py): the tasks are
those of the graph that takes the fastest, as `reidc compile --tuning-db` builds it.

For each task (a fused PrimFunc of the model at a fixed batch) reidc first measures its default
schedule and records it, then lets MetaSchedule search (evolutionary, XGBoost cost model) over
reidc's rule variants and MetaSchedule's generated space. Every measured trial is appended to
the database as it comes back (MetaSchedule's AddToDatabase); reidc's per-task trial counts are
saved after every batch, so a killed run resumes with the trials it has not done yet.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import tvm
from tvm.s_tir import meta_schedule as ms

from reidc.compiler.base.errors import InputError
from reidc.compiler.compile import CompileOptions, load_source, prepare
from reidc.compiler.prepare import check_precision, winograd_step
from reidc.compiler.passes.choose_winograd import winograd_target
from reidc.compiler.ir import RunMode
from reidc.compiler.lower.build import fused_module, int8_flavour, lowering_options
from reidc.compiler.lower.to_relax import to_relax
from reidc.compiler.runtime import tvm_threads
from reidc.compiler.tunedb.database import TuningDatabaseError, workload_key
from reidc.compiler.tunedb.records import register_cpu_tensor_intrinsics
from reidc.targets import TargetError, get_target
from reidc.targets.presets import ToolchainError

from . import algorithms, measure
from .progress import Clock, Hold, Progress, ms_text
from .database import TunedTarget
from .interrupt import Interrupts, TuningInterrupted
from .space import default_schedule, reidc_schedules, rule_variants, search_space


class TuningAborted(ToolchainError):
    pass


@dataclass
class TuneOptions:
    db: str
    target: str = "host"
    trials: int = 64               # per task
    batch: int = 1
    modes: tuple[str, ...] | None = None   # entries to tune; None: visible where the model has it, else its only one
    source: dict = field(default_factory=dict)   # how to read a bare weights file: CompileOptions' arch,
                                                 # split_config, fastreid_config, torchreid_arch, weights
    only: tuple[str, ...] = ()     # tune only tasks whose name contains one of these
    precision: str = "fp32"        # the real-valued layers' precision whose kernels to tune: as `compile`
                                   # takes it, but one ("fp32", "int8" or "bf16"; not "auto")
    int8_weight_bits: int | None = None   # int8: as `compile`'s (None: the target's fastest)
    calibration: str = "synthetic"  # int8: as `compile`'s; the same as compile's, so the kernels match
    rpc_tracker: str | None = None  # HOST:PORT
    rpc_key: str | None = None
    timeout_s: float = 30.0
    per_iter: int = 8              # trials measured per batch (also what a kill can lose at most)
    confirm_rounds: int = 3        # paired rounds re-measuring each task's best record against reidc's
                                   # default before compile may apply it (0: trust the search's minimum)
    cores: int | None = None       # the device's cores (MetaSchedule's parallel tiling); default: this
                                   # machine's when measuring here, 4 through RPC
    algorithms: bool = True        # fp32 on a Winograd target: time each 3x3 conv shape's direct, F(2x2) and
                                   # F(4x4) first (algorithms.py); compile --tuning-db builds the fastest
    seed: int = 0
    progress: Callable[[str], None] = field(default=lambda msg: None)
    on_stop_now: Callable[[], None] = field(default=lambda: None)  # second Ctrl-C: last words before exit 130


def load_graphs(ckpt, opts: TuneOptions, preset, winograd: bool = True, measured: dict | None = None):
    """(compile options, {mode: graph}, facts): the target's own graphs (which convs take
    Winograd, bf16 or not; int8's weight range), as compile prepares them for that target, not
    host's; without the Winograd step where `winograd` is off (the algorithms are measured first)."""
    copts = CompileOptions(target=opts.target, batch=opts.batch, progress=opts.progress, precision=opts.precision,
                           int8_weight_bits=opts.int8_weight_bits, calibration=opts.calibration, **opts.source)
    opts.progress(f"loading {ckpt}")
    source = load_source(ckpt, copts)
    modes = opts.modes or ((RunMode.VISIBLE,) if RunMode.VISIBLE in source[2] else source[2][:1])
    copts = replace(copts, modes=tuple(modes))
    _, graphs, _, facts, _ = prepare(ckpt, replace(copts, winograd=winograd and copts.winograd), source=source,
                                     measured=measured)
    return copts, graphs, facts


def tasks_of(graphs: dict, opts: TuneOptions, preset) -> list:
    """The MetaSchedule tasks (fused PrimFuncs) of the graphs at the tuned batch, less those
    `opts.only` leaves out."""
    mod = fused_module(to_relax(graphs, opts.batch, **lowering_options(preset)), preset)
    tasks = ms.relax_integration.extract_tasks(mod, preset.tvm_target())
    if opts.only:
        tasks = [t for t in tasks if any(s in t.task_name for s in opts.only)]
    return tasks


def extract_tasks(ckpt, opts: TuneOptions, preset):
    _, graphs, facts = load_graphs(ckpt, opts, preset)
    return tasks_of(graphs, opts, preset), facts


def measures_algorithms(opts: TuneOptions, preset) -> bool:
    """Whether tune times each fp32 3x3 conv shape's algorithms first (algorithms.py)."""
    return opts.algorithms and opts.precision == "fp32" and winograd_target(preset)


def check_options(opts: TuneOptions, preset) -> None:
    """What can be refused about the options before anything is loaded or created."""
    if preset.kind == "cuda":
        if any("GPU" in m for m in preset.missing_on_host()):
            raise TargetError(f"--target {opts.target}: CUDA tuning needs a GPU to measure on, and no GPU is "
                              "reachable from here; tune a CPU target (see `reidc targets`)")
        raise TargetError(f"--target {opts.target}: reidc does not tune CUDA targets yet (its GPU schedules have "
                          f"no tuning space); compile for {preset.name} without --tuning-db")
    if opts.precision not in ("fp32", "int8", "bf16"):
        raise InputError(f"--precision {opts.precision}: tune one precision's kernels (fp32, int8 or bf16); "
                         "`compile --precision auto` then uses the records of the precision it picks")
    if opts.int8_weight_bits is not None and opts.precision != "int8":
        raise InputError("--int8-weight-bits needs --precision int8")
    check_precision(CompileOptions(target=opts.target, precision=opts.precision,
                                   int8_weight_bits=opts.int8_weight_bits), preset, int8_flavour(preset))
    for flag, value in (("--trials", opts.trials), ("--batch", opts.batch), ("--cores", opts.cores or 1),
                        ("per_iter", opts.per_iter)):
        if value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    if opts.confirm_rounds < 0:
        raise InputError(f"--confirm-rounds {opts.confirm_rounds}: must be 0 (off) or more")
    if not opts.timeout_s > 0:
        raise InputError(f"--timeout {opts.timeout_s}: must be more than 0 seconds")
    if opts.rpc_tracker:
        host, _, port = opts.rpc_tracker.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise InputError(f"--rpc-tracker {opts.rpc_tracker}: expected HOST:PORT")
        if not opts.rpc_key:
            raise InputError("--rpc-tracker needs --rpc-key (the key the devices registered with)")
    elif opts.rpc_key:
        raise InputError("--rpc-key needs --rpc-tracker HOST:PORT (the tracker the devices registered with)")
    measure.check(preset, opts.rpc_tracker)


def tune_checkpoint(ckpt, opts: TuneOptions) -> dict:
    """Tune every task of the model. The options, the database folder, the toolchain and the
    checkpoint are all checked before the database is created. Ctrl-C (see interrupt.py) ends
    in TuningInterrupted, a KeyboardInterrupt, with every finished trial in the database."""
    say = opts.progress
    preset = get_target(opts.target)
    check_options(opts, preset)
    db = TunedTarget(Path(opts.db), preset)
    db.check_writable()
    where = f"through RPC key {opts.rpc_key}" if opts.rpc_tracker else f"here at {tvm_threads()} threads"
    warning = db.check_measured(where)
    if warning:
        say(warning)
    with Interrupts(say, opts.on_stop_now) as stop:
        first = measures_algorithms(opts, preset)
        # compile --tuning-db builds the algorithms the database holds: so are the tasks here
        stored = None if first or not db.path.is_dir() else db.algorithms().get(str(opts.batch))
        copts, graphs, facts = load_graphs(ckpt, opts, preset, winograd=not first, measured=stored)
        tasks = None if first else tasks_of(graphs, opts, preset)
        if first and opts.only:   # (refused before the database is created; checked again once measured)
            tasks = tasks_of(winograd_step(graphs, copts, Counter()), opts, preset)
        if tasks == []:
            raise InputError(_no_tasks(opts))
        run = measure.runner(preset, opts.rpc_tracker, opts.rpc_key, opts.timeout_s)
        build = measure.builder(preset)  # (their worker processes inherit the blocked SIGINT)
        opened = False
        try:
            stop.check()
            register_cpu_tensor_intrinsics()
            with stop.writing:
                database = db.open(say)
                opened = True
                db.register(opts.batch, where)
            if first:   # the algorithm of each 3x3 conv shape, then the tasks of the graph that takes them

                def save(table):
                    with stop.writing:
                        db.save_algorithms(table)
                measured = algorithms.choose(db.algorithms(), graphs, opts.batch, preset, build, run,
                                             opts.confirm_rounds, save, say, stop.check)
                graphs = winograd_step(graphs, copts, Counter(), measured)
                tasks = tasks_of(graphs, opts, preset)
                if not tasks:
                    raise InputError(_no_tasks(opts))
            _tune_tasks(tasks, facts, opts, preset, db, database, build, run, stop)
        finally:
            build.shutdown()
            with stop.writing, contextlib.suppress(TuningDatabaseError):  # (a cache: best effort)
                if opened:
                    db.stamp()  # what this run appended is TVM's own writing: no need to check it again
    return {"target_key": db.key, "database": str(db.path), "tasks": len(tasks), "records": db.record_count()}


def _searchable(task) -> bool:
    """Whether MetaSchedule's task scheduler can take the task: it estimates every task's FLOPs
    first, and that analysis raises on a tir.Let expression (TVM 0.27), which the Winograd
    transforms use (kernels/winograd.py `_row`). Such a task is measured with reidc's default
    and variants, and not searched."""
    from tvm.s_tir.analysis import estimate_tir_flops
    try:
        estimate_tir_flops(task.dispatched[0])
    except RuntimeError:   # TVM's InternalError
        return False
    return True


def _no_tasks(opts: TuneOptions) -> str:
    return f"no tuning tasks{' match --only ' + ','.join(opts.only) if opts.only else ''}"


def _tune_tasks(tasks, facts, opts, preset, db, database, build, run, stop) -> None:
    say = opts.progress
    cores = opts.cores or (4 if opts.rpc_tracker else tvm_threads())
    target = tvm.target.Target({**{k: v for k, v in preset.tvm.items() if k != "num-cores"}, "num-cores": cores})
    info = db.tasks()

    def save():
        db.save_tasks(info)

    for t in tasks:  # bookkeeping first: the report knows every task even if tuning stops early
        e = info.setdefault(workload_key(t.dispatched[0]), {"trials": 0, "failed": 0})
        e.update(name=t.task_name, weight=int(t.weight), batch=opts.batch, model=facts["model"])
    with stop.writing:
        save()
    say(f"{len(tasks)} tasks for {preset.name} at batch {opts.batch}; {opts.trials} trials each; database {db.path}")
    clock = Clock(sum(max(0, opts.trials - info[workload_key(t.dispatched[0])]["trials"]) for t in tasks))
    for k, task in enumerate(tasks, 1):
        stop.check()
        entry = info[workload_key(task.dispatched[0])]
        label = f"task {k}/{len(tasks)} {task.task_name}"
        if "default_s" not in entry:
            _measure_default(task, preset, build, run, database, entry, say, label, stop, save)
            stop.check()
        fresh = not entry.get("variants_done")
        if fresh:
            _measure_variants(task, preset, build, run, database, entry, opts, label, stop, save, clock)
            stop.check()
        left = opts.trials - entry["trials"]
        if left > 0 and not entry.get("exhausted") and not _searchable(task):
            say(f"{label}: MetaSchedule cannot analyse this kernel (its transforms bind values with tir.Let, "
                "which its FLOP estimate rejects); reidc's variants only")
            with stop.writing:
                entry["exhausted"] = True
                save()
        elif left > 0 and not entry.get("exhausted"):
            _search(k, task, target, preset, build, run, database, db, entry, opts, label, stop, save, clock, left)
        elif not fresh and entry.get("confirmed", {}).get("trials") == entry["trials"]:
            say(f"{label}: done earlier ({entry['trials']} trials)")
        stop.check()
        _confirm(task, preset, build, run, database, entry, opts, label, stop, save)


def _search(k, task, target, preset, build, run, database, db, entry, opts, label, stop, save, clock, left):
    """MetaSchedule's evolutionary search over what is left of the task's budget."""
    ctx = ms.TuneContext(mod=task.dispatched[0], target=target, space_generator=search_space(preset),
                         search_strategy=_strategy(opts.trials), task_name=task.task_name,
                         rand_state=opts.seed + 1000 * k + entry["trials"], num_threads=1)
    watch = Progress(entry, save, opts.progress, label, opts.trials, clock, opts, stop)
    callbacks = [Hold(watch), ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact(),
                 ms.measure_callback.UpdateCostModel(), watch]
    try:
        ms.tune.tune_tasks(tasks=[ctx], task_weights=[1.0], work_dir=str(db.path / "logs"),
                           max_trials_global=left, max_trials_per_task=left,
                           num_trials_per_iter=min(opts.per_iter, left), builder=build, runner=run,
                           database=database, cost_model="xgb", measure_callbacks=callbacks,
                           task_scheduler="round-robin")
    except Exception:  # noqa: BLE001  (our callbacks' stops arrive wrapped by TVM's FFI)
        watch.release()
        if stop.requested:
            raise TuningInterrupted() from None
        if watch.abort:
            raise TuningAborted(watch.abort) from None
        raise
    if entry["trials"] < opts.trials:  # the space ran out of new candidates before the budget
        opts.progress(f"{label}: search space exhausted after {entry['trials']} trials")
        entry["exhausted"] = True
        with stop.writing:
            save()


def _confirm(task, preset, build, run, database, entry, opts, label, stop, save):
    """Re-measure the task's best record against reidc's default, alternating, in
    `opts.confirm_rounds` paired rounds; the record is kept only if it is faster at the minimum
    and wins most rounds, else `reidc compile` leaves the kernel to reidc's default (its records
    stay in the database; tunedb/database.py, kept_default). The search's best is the minimum of
    many single noisy measurements: on a Zen 3 whose timings move 15-50% within minutes that
    minimum is biased low (CM-NAS ResNet-50 int8, 12 trials per task: the report said 1.20x,
    end to end the tuned build was 1.03x). Done again when a rerun adds trials."""
    done = entry.get("confirmed")
    if opts.confirm_rounds < 1 or entry.get("default_s") is None or (done and done["trials"] == entry["trials"]):
        return
    mod = task.dispatched[0]
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top:
        return
    best_s = sum(float(x) for x in top[0].run_secs) / len(top[0].run_secs)
    result = {"trials": entry["trials"], "rounds": 0, "wins": 0, "default_s": entry["default_s"], "tuned_s": None,
              "keep": "default"}
    if best_s < entry["default_s"]:   # else the top record is reidc's default itself (or ties it)
        best = tvm.s_tir.Schedule(mod)
        top[0].trace.apply_to_schedule(best, remove_postproc=False)
        times, err = measure.measure_paired([default_schedule(mod["main"], preset), best], preset, build, run,
                                            opts.confirm_rounds)
        if err:
            opts.progress(f"{label}: the paired re-measure failed ({err.strip().splitlines()[-1][:200]}); "
                          "keeping reidc's default")
        else:
            wins = sum(t < d for d, t in zip(*times))
            keep = "tuned" if min(times[1]) < min(times[0]) and 2 * wins > len(times[0]) else "default"
            result.update(rounds=len(times[0]), wins=wins, default_s=min(times[0]), tuned_s=min(times[1]), keep=keep)
    with stop.writing:
        entry["confirmed"] = result
        save()
    if result["rounds"]:
        opts.progress(f"{label}: paired re-measure, {result['rounds']} rounds: best record {ms_text(result['tuned_s'])} "
                      f"(faster in {result['wins']}), reidc default {ms_text(result['default_s'])}; "
                      f"keeping {'the tuned record' if result['keep'] == 'tuned' else 'reidc default'}")


def _strategy(trials: int):
    """MetaSchedule's evolutionary search, its population scaled to the budget (the default 512
    costs ~50 s of sampling per task on 2 cores, too much for a 16-trial budget)."""
    population = max(32, min(512, 8 * trials))
    return ms.search_strategy.EvolutionarySearch(population_size=population,
                                                 init_min_unmeasured=min(50, population // 4),
                                                 genetic_num_iters=2 if trials < 64 else 4)


def _measure_default(task, preset, build, run, database, entry, say, label, stop, save):
    mod = task.dispatched[0]
    sch = default_schedule(mod["main"], preset)
    secs, err = measure.measure_once(sch, preset, build, run) if sch is not None else (None, None)
    with stop.writing:  # the record and the task's entry are written together
        entry["default_s"] = secs
        if secs is not None:
            wl = database.commit_workload(mod)
            database.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, wl, [secs], preset.tvm_target(), ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
        save()
    if err:
        say(f"{label}: the default schedule failed to measure: {err.strip().splitlines()[-1][:200]}")
    elif secs is not None:
        say(f"{label}: reidc default {secs * 1e3:.3f} ms")


def _measure_variants(task, preset, build, run, database, entry, opts, label, stop, save, clock):
    """reidc's rules with their other knob settings (space.rule_variants), each measured once,
    in batches of `per_iter`, before the evolutionary search spends what is left of the budget.
    The search alone rarely tries them: they have no sampled decisions to mutate and are a few
    among the hundreds of candidates an untrained cost model ranks (CM-NAS ResNet-50 int8 on a
    Zen 3, 16 trials per task: the best searched of two layer-2 convs 2.0 and 6.1 ms against
    reidc's 0.30 and 0.46). Each counts as a trial (a failure is recorded at 1e10 s, as
    MetaSchedule records one); a rerun resumes after the last batch measured."""
    mod = task.dispatched[0]
    found = reidc_schedules(mod["main"], preset.tvm_target(), rule_variants(preset))[1:]   # [0]: the default
    start = entry.get("variants", 0)
    todo = found[start:start + max(0, opts.trials - entry["trials"])]
    args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
    for i in range(0, len(todo), opts.per_iter):
        stop.check()
        batch = todo[i:i + opts.per_iter]
        results = measure.measure_many(batch, preset, build, run)
        ok = [secs for secs, _ in results if secs is not None]
        with stop.writing:   # the records and the counts are written together
            wl = database.commit_workload(mod)
            for sch, (secs, _) in zip(batch, results):   # a failure as MetaSchedule records one: 1e10 s
                database.commit_tuning_record(ms.database.TuningRecord(
                    sch.trace, wl, [1e10 if secs is None else secs], preset.tvm_target(), args))
            entry["trials"] += len(batch)
            entry["failed"] += len(batch) - len(ok)
            entry["variants"] = entry.get("variants", 0) + len(batch)
            if ok:
                entry["best_s"] = min(ok + ([entry["best_s"]] if entry.get("best_s") else []))
            save()
        clock.done += len(batch)
        opts.progress(f"{label}: {entry['variants']}/{len(found)} reidc variants measured ({entry['failed']} failed); "
                      f"best {ms_text(entry.get('best_s'))}, reidc default {ms_text(entry.get('default_s'))}; "
                      f"about {clock.left_s() / 60:.1f} min left")
    with stop.writing:
        entry["variants_done"] = True
        save()
