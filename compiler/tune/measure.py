"""Builders and runners for tuning: candidates are built (cross-compiled for aarch64) on this
machine in worker processes, and measured here (LocalRunner) or on devices registered with TVM's
RPC tracker (RPCRunner). A candidate that fails to build, crashes or runs past the timeout comes
back as an error and MetaSchedule records it as failed; tuning goes on."""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from reidc.compiler.lower.build import tir_pipeline_for
from reidc.compiler.runtime import tvm_threads

from .runner_side import alloc_local, alloc_rpc, create_session
from reidc.targets import TargetPreset
from reidc.targets.presets import ToolchainError


def build_candidate(mod, target, _params):
    """Worker-side build (MetaSchedule's default imports every tensor intrinsic, ~30 s here),
    through the TIR pipeline `reidc compile` uses (on CPUs, AMX tile configurations hoisted out
    of the tile loops: kernels/amx_config.py), so a candidate is timed as it would run."""
    return tvm.compile(mod, target=target, tir_pipeline=tir_pipeline_for(target))


def export_native(rt_mod) -> str:
    path = os.path.join(tempfile.mkdtemp(prefix="reidc-ms-"), "candidate.so")
    rt_mod.export_library(path)
    return path


def export_cross(rt_mod, compiler: str) -> str:
    from tvm.support.cc import cross_compiler
    path = os.path.join(tempfile.mkdtemp(prefix="reidc-ms-"), "candidate.so")
    rt_mod.export_library(path, fcompile=cross_compiler(compiler))
    return path


def cross_compiler(preset: TargetPreset) -> str:
    """The C++ driver that links an aarch64 candidate; ToolchainError when it is missing."""
    compiler = preset.cross_compiler or "aarch64-linux-gnu-g++"
    if not shutil.which(compiler):
        raise ToolchainError(f"target {preset.name}: building its candidates needs {compiler} "
                             "(apt-get install g++-aarch64-linux-gnu)")
    return compiler


def check(preset: TargetPreset, tracker: str | None) -> None:
    """What builder() and runner() would refuse, without starting their worker processes."""
    if preset.arch == "aarch64":
        cross_compiler(preset)
        if not tracker:
            raise ValueError(f"target {preset.name} is aarch64: measure it on a board (or a qemu server) through "
                             "--rpc-tracker HOST:PORT --rpc-key KEY")
    if preset.kind == "cuda" and not tracker:
        raise ValueError("tuning CUDA targets is not supported yet (reidc's GPU schedules have no tuning space)")


@derived_object
class PooledBuilder(ms.builder.PyBuilder):
    """MetaSchedule's LocalBuilder, but its worker processes live across batches. LocalBuilder
    starts a fresh pool for every batch, and a worker's imports (TVM, reidc's schedules and
    tensor intrinsics) take ~9 s on a Zen 3: on CM-NAS ResNet-50 at 12 trials per task that was
    more than half of a 26.5-minute tuning run. A worker is replaced after `uses` builds (what
    LocalBuilder's restarts guard against: memory the workers leak over many builds) or when a
    build runs past the timeout. `shutdown()` ends the workers."""

    def __init__(self, f_export, timeout_s: float, workers: int, uses: int = 64):
        super().__init__()
        self.f_export, self.timeout_s, self.workers, self.uses = f_export, timeout_s, workers, uses
        self.pool = None

    def build(self, build_inputs):
        from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
        from tvm.support.popen_pool import PopenPoolExecutor, StatusKind
        if self.pool is None:
            self.pool = PopenPoolExecutor(max_workers=self.workers, timeout=self.timeout_s,
                                          maximum_process_uses=self.uses)
        jobs = [(build_candidate, self.f_export, b.mod, b.target, _serialize_params(b.params)) for b in build_inputs]
        out = []
        for r in self.pool.map_with_error_catching(lambda job: _worker_func(*job), jobs):
            if r.status == StatusKind.COMPLETE:
                out.append(ms.builder.BuilderResult(r.value, None))
            elif r.status == StatusKind.TIMEOUT:
                out.append(ms.builder.BuilderResult(None, f"build timed out after {self.timeout_s:g} s"))
            else:
                out.append(ms.builder.BuilderResult(None, f"build failed\n{r.value}"))
        return out

    def shutdown(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None


def builder(preset: TargetPreset, timeout_s: float = 60.0, workers: int | None = None) -> PooledBuilder:
    export = export_native
    if preset.arch == "aarch64":
        export = functools.partial(export_cross, compiler=cross_compiler(preset))
    return PooledBuilder(export, timeout_s, workers or max(1, (os.cpu_count() or 2) // 2))


def evaluator(number: int = 3, repeat: int = 3) -> ms.runner.EvaluatorConfig:
    return ms.runner.EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=20, enable_cpu_cache_flush=False)


def runner(preset: TargetPreset, tracker: str | None = None, key: str | None = None, timeout_s: float = 30.0,
           workers: int = 1):
    if tracker:
        host, _, port = tracker.rpartition(":")
        cfg = ms.runner.RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                                  session_timeout_sec=int(timeout_s), session_priority=1)
        return ms.runner.RPCRunner(rpc_config=cfg, evaluator_config=evaluator(), max_workers=workers,
                                   f_create_session=create_session, f_alloc_argument=alloc_rpc)
    check(preset, tracker)
    tvm_threads()   # the runner's worker process inherits it: candidates are timed at the threads compile's runs use
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator(), f_alloc_argument=alloc_local)


def measure_once(sch, preset: TargetPreset, build, run) -> tuple[float | None, str | None]:
    """(seconds, error) of one schedule through the same builder and runner the search uses."""
    return measure_many([sch], preset, build, run)[0]


def measure_many(schs: list, preset: TargetPreset, build, run) -> list[tuple[float | None, str | None]]:
    """(seconds, error) per schedule: built in one batch (the builder's workers in parallel),
    then run one after another, as a search batch is."""
    with _built(schs, preset, build) as (built, out):
        for i, secs, err in _run(built, schs, preset, run, [i for i, b in enumerate(built) if b]):
            out[i] = (secs, err)
    return out


def measure_paired(schs: list, preset: TargetPreset, build, run, rounds: int) -> tuple[list[list[float]], str | None]:
    """Each schedule's time in each of `rounds` rounds, built once and run alternately (the
    order reversed every other round), so drifts of the machine's speed fall on all alike;
    (times[schedule][round], None), or ([], error) if any build or run fails."""
    with _built(schs, preset, build) as (built, out):
        errs = [e for _, e in out if e]
        if errs:
            return [], errs[0]
        times: list[list[float]] = [[] for _ in schs]
        for r in range(rounds):
            order = list(range(len(schs)))[::(-1 if r % 2 else 1)]
            for i, secs, err in _run(built, schs, preset, run, order):
                if err:
                    return [], err
                times[i].append(secs)
    return times, None


@contextlib.contextmanager
def _built(schs, preset, build):
    """(artifact paths, or None where the build failed; [(None, build error or None)] per
    schedule); the artifacts are removed on leaving."""
    results = build.build([ms.builder.BuilderInput(sch.mod, preset.tvm_target()) for sch in schs])
    built = [None if b.error_msg else b.artifact_path for b in results]
    try:
        yield built, [(None, b.error_msg) for b in results]
    finally:
        for path in built:
            if path:
                ms.utils.remove_build_dir(path)


def _run(built, schs, preset, run, order):
    """(index, seconds, error) of the built schedules in `order`, one after another."""
    dev = "cuda" if preset.kind == "cuda" else "cpu"
    futs = run.run([ms.runner.RunnerInput(built[i], dev, ms.arg_info.ArgInfo.from_prim_func(schs[i].mod["main"]))
                    for i in order])
    for i, fut in zip(order, futs):
        r = fut.result()
        secs = [float(s) for s in r.run_secs] if not r.error_msg else []
        yield (i, sum(secs) / len(secs), None) if secs else (i, None, r.error_msg or "no time measured")
