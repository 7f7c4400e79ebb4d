"""Builders and runners for tuning: candidates are built (cross-compiled for aarch64) on this
machine in worker processes, and measured here (LocalRunner) or on devices registered with TVM's
RPC tracker (RPCRunner). A candidate that fails to build, crashes or runs past the timeout comes
back as an error and MetaSchedule records it as failed; tuning goes on."""
from __future__ import annotations

import functools
import os
import shutil
import tempfile

import tvm
from tvm.s_tir import meta_schedule as ms

from reidc.compiler.lower.build import tir_pipeline_for
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


def builder(preset: TargetPreset, timeout_s: float = 60.0, workers: int | None = None) -> ms.builder.LocalBuilder:
    export = export_native
    if preset.arch == "aarch64":
        export = functools.partial(export_cross, compiler=cross_compiler(preset))
    return ms.builder.LocalBuilder(f_build=build_candidate, f_export=export, timeout_sec=timeout_s,
                                   max_workers=workers or max(1, (os.cpu_count() or 2) // 2))


def _fill(tensor) -> None:
    """Random floats and words; int32 inputs are index vectors (border classes, modality),
    so zeros, which index validly (random ones would read out of bounds and crash)."""
    import numpy as np
    rng = np.random.default_rng(0)
    shape, dtype = tuple(int(d) for d in tensor.shape), str(tensor.dtype)
    if dtype.startswith("float"):
        a = rng.standard_normal(shape).astype(dtype)
    elif dtype.startswith("uint"):
        a = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    else:
        a = np.zeros(shape, dtype)
    tensor.copyfrom(a)


def alloc_local(device, args_info, alloc_repeat):
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common
    return alloc_argument_common(_fill, device, args_info, alloc_repeat)


def alloc_rpc(session, device, args_info, alloc_repeat):
    return alloc_local(device, args_info, alloc_repeat)  # tensors on the remote device; the fill copies over


def create_session(rpc_config):
    """Fail at once when the tracker has no device for the key (TVM's request would wait for one
    forever), so a farm whose last device died ends the tuning with a message, not a hang."""
    if rpc_config.count_num_servers(allow_missing=True) == 0:
        raise RuntimeError(f"the tracker has no device with key {rpc_config.tracker_key!r}")
    return rpc_config.connect_server()


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
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator(), f_alloc_argument=alloc_local)


def measure_once(sch, preset: TargetPreset, build, run) -> tuple[float | None, str | None]:
    """(seconds, error) of one schedule through the same builder and runner the search uses."""
    return measure_many([sch], preset, build, run)[0]


def measure_many(schs: list, preset: TargetPreset, build, run) -> list[tuple[float | None, str | None]]:
    """(seconds, error) per schedule: built in one batch (the builder's workers in parallel),
    then run one after another, as a search batch is."""
    target = preset.tvm_target()
    built = build.build([ms.builder.BuilderInput(sch.mod, target) for sch in schs])
    out: list[tuple[float | None, str | None]] = [(None, b.error_msg) for b in built]
    ok = [i for i, b in enumerate(built) if not b.error_msg]
    dev = "cuda" if preset.kind == "cuda" else "cpu"
    try:
        futs = run.run([ms.runner.RunnerInput(built[i].artifact_path, dev,
                                              ms.arg_info.ArgInfo.from_prim_func(schs[i].mod["main"])) for i in ok])
        for i, fut in zip(ok, futs):
            r = fut.result()
            secs = [float(s) for s in r.run_secs] if not r.error_msg else []
            out[i] = (sum(secs) / len(secs), None) if secs else (None, r.error_msg or "no time measured")
    finally:
        for i in ok:
            ms.utils.remove_build_dir(built[i].artifact_path)
    return out
