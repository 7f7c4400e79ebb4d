"""`reidc bench`: the compiled model against what users would run instead (PyTorch eager,
torch.compile, ONNX Runtime exported from the same module), each engine in a process of its own.

Engines timed in one process compete for the cores with each other's thread pools and report
figures no engine has alone. Here every engine is a worker process (compiler/bench_worker.py)
with its own thread settings, built once and then driven over a pipe: the parent asks one
worker to time a round, waits for it, pauses so its spinning threads go idle, then asks the
next; the order rotates from round to round. A round is `calls` back-to-back calls lasting
about ROUND_S; a row holds, per engine, the median, min and max over the rounds of the time
per call and the spread (max - min) / median. Warm-up is excluded and torch.compile's compile
time (its first call) is reported apart. Each worker returns its output on the seeded input;
the others are compared with PyTorch eager. On request (runtimes=, OPTIONAL_RUNTIMES) the
peers a user runs for reduced precision: ONNX Runtime on a static int8 QDQ model of the same
export, and OpenVINO fp32, bf16 and int8 (the same QDQ model).

A CUDA artifact is timed on this machine's GPU 0 beside PyTorch on the same GPU (eager in fp32,
torch.compile, and eager under fp16 autocast: GPU_RUNTIMES); every engine's call includes the
upload of the numpy input and the download of the features, as a user's call does. The CPU
engines (ONNX Runtime, OpenVINO) are refused for it, and so is a CUDA artifact where TVM sees
no GPU.

Everything a user can get wrong is refused before any worker starts (InputError, ArtifactError);
a worker that fails or dies is an EngineError naming the engine and how it ended.
"""
from __future__ import annotations

import importlib.util
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


from .base.atomic import guard_output_file
from .base.errors import ArtifactError, InputError
from .bench_load import OthersMeter
from .bench_process import Worker, shutdown, start_workers
from .base.modes import MODEL_MODES, RunMode

ROUND_S = 0.2      # each timed round lasts about this long (calls per round chosen in warm-up)
PAUSE_S = 0.2      # between two workers' rounds: the previous one's thread pool goes idle
BUSY_CORES = 0.25  # other processes using more than this while timing: the figures are suspect
RUNTIMES = ("torch_eager", "torch_compile", "onnxruntime")  # the default set
# reduced-precision peers and OpenVINO, on request (runtimes=...): int8 ones quantize with 8
# calibration inputs first (bench_worker.quantize_qdq); OpenVINO needs `pip install openvino`
OPTIONAL_RUNTIMES = ("onnxruntime_int8", "openvino", "openvino_bf16", "openvino_int8")
GPU_RUNTIMES = ("torch_eager", "torch_compile", "torch_fp16")  # a CUDA artifact's peers, all on its GPU
ALL_RUNTIMES = RUNTIMES + OPTIONAL_RUNTIMES + ("torch_fp16",)
NEEDS = {"onnxruntime_int8": ("onnxruntime",), "openvino": ("openvino",), "openvino_bf16": ("openvino",),
         "openvino_int8": ("openvino", "onnxruntime")}  # packages, checked before any worker starts
REDUCED = ("onnxruntime_int8", "openvino_bf16", "openvino_int8", "torch_fp16")  # rows add their per-sample cosine min


@dataclass(frozen=True)
class Plan:
    """Validated arguments of a benchmark: what runs where, nothing started yet."""
    manifest: dict
    entries: tuple[str, ...]
    batches: tuple[int, ...]
    threads: int
    repeat: int
    engines: dict[str, dict]       # name -> worker spec
    baseline_model: str | None = None
    json_out: Path | None = None
    device: str = "cpu"            # where every engine runs: "cpu", or "cuda" (GPU 0) for a CUDA artifact


def _path(artifact) -> Path:
    return Path(getattr(artifact, "path", artifact))


def _check_artifact(path: Path, modes, batches, flag: str = "") -> tuple[dict, tuple[str, ...], str]:
    """The artifact's manifest, the entries to time (`modes` None: its visible and mixed
    entries, or its only one) and the device it runs on ("cpu" | "cuda"), refusing what bench
    cannot time truthfully here."""
    from reidc.targets import TargetError, preset_from_manifest
    from reidc.targets.presets import CUDA, QEMU_AARCH64
    from .runtime import read_manifest
    man = read_manifest(path)
    where = f"{flag} {path}" if flag else str(path)
    try:
        preset = preset_from_manifest(man["target"])
    except (KeyError, TargetError) as e:
        raise ArtifactError(f"{where}: bad target entry: {e}") from None
    if preset.runs_via == QEMU_AARCH64 and platform.machine() != "aarch64":
        raise ArtifactError(f"{where} is an aarch64 build, run here under qemu: its timings say nothing "
                            "about ARM speed; time it on the board with `reidc_run ... --repeat N` (README, Deploying)")
    device = "cuda" if preset.runs_via == CUDA else "cpu"
    have = list(man["modes"])
    entries = tuple(modes) if modes else (tuple(m for m in (RunMode.VISIBLE, RunMode.MIXED) if m in have)
                                          or tuple(have[:1]))
    for e in entries:
        if e not in have:
            hint = ("a single-input network: omit --mode" if have == [RunMode.MAIN]
                    else f"recompile with --modes including {e}")
            raise InputError(f"--mode {e}: {where} has no {e} entry (its entries: {', '.join(have)}); {hint}")
    fixed = man.get("batch")
    for b in batches:
        if fixed and b != fixed:
            raise InputError(f"--batch {b}: {where} was built for batch {fixed} only (compile without --batch "
                             "for any batch size)")
    return man, entries, device


def _checkpoint(man: dict, where: str, given=None) -> str:
    """The checkpoint the workers load the PyTorch side from (they check its digest)."""
    ck = given or man.get("checkpoint")
    if not ck:
        raise ArtifactError(f"{where}: the manifest names no checkpoint; pass --checkpoint")
    if not Path(ck).exists():
        raise ArtifactError(f"{where}: checkpoint {ck} is not here" + ("" if given else "; pass --checkpoint"))
    return str(Path(ck).resolve())


def default_runtimes(device: str) -> tuple[str, ...]:
    """The engines a bench runs when none are named: RUNTIMES on a CPU, GPU_RUNTIMES on CUDA."""
    return GPU_RUNTIMES if device == "cuda" else RUNTIMES


def artifact_device(artifact) -> str:
    """Where bench would time an artifact: "cpu" or "cuda"."""
    return _check_artifact(_path(artifact), None, ())[2]


def _check_runtimes(runtimes, device: str) -> None:
    for r in runtimes:
        if device == "cuda" and r not in GPU_RUNTIMES:
            raise InputError(f"runtime {r}: runs on the CPU, and this artifact is a CUDA build timed on the GPU "
                             f"(GPU engines: {', '.join(GPU_RUNTIMES)})")
        if device == "cpu" and r == "torch_fp16":
            raise InputError("runtime torch_fp16: PyTorch's fp16 autocast is a GPU engine; this artifact runs on "
                             "the CPU (its reduced-precision peers: onnxruntime_int8, openvino_bf16, openvino_int8)")
        for need in NEEDS.get(r, ()):
            if importlib.util.find_spec(need) is None:
                raise InputError(f"runtime {r}: needs the {need} package, not installed here "
                                 "(pip install 'reidc[bench]')")


def plan(artifact, checkpoint=None, batches=(1, 16), modes=None, threads: int = 2, repeat: int = 5,
         runtimes=None, baseline=None, json_out=None) -> Plan:
    """Check every argument against the artifact(s) before anything runs.

    `modes` None: the artifact's visible and mixed entries (or whatever single entry it has).
    PyTorch eager always runs: it is the reference the others are compared with. `runtimes`
    may name any of ALL_RUNTIMES that runs where the artifact does (None: default_runtimes,
    which leaves out OPTIONAL_RUNTIMES on a CPU)."""
    for flag, v in (("--repeat", repeat), ("--threads", threads)):
        if not isinstance(v, int) or v < 1:
            raise InputError(f"{flag} {v}: must be at least 1")
    batches = tuple(batches)
    if not batches:
        raise InputError("--batch: give at least one batch size")
    for b in batches:
        if not isinstance(b, int) or b < 1:
            raise InputError(f"--batch {b}: must be at least 1")
    try:
        modes = tuple(RunMode.parse(m, MODEL_MODES, "--mode") for m in modes) if modes else None
    except ValueError as e:
        raise InputError(str(e)) from None
    for r in runtimes or ():
        if r not in ALL_RUNTIMES:
            raise InputError(f"runtime {r!r}: expected one of {', '.join(ALL_RUNTIMES)}")
    json_out = guard_output_file(json_out, "--json") if json_out is not None else None
    path = _path(artifact)
    man, entries, device = _check_artifact(path, modes, batches)
    runtimes = default_runtimes(device) if runtimes is None else tuple(runtimes)
    _check_runtimes(runtimes, device)
    if device == "cuda":
        from reidc.targets.devices import cuda_device_count
        if cuda_device_count() == 0:
            raise ArtifactError(f"{path} is a CUDA build ({man['target']['preset']}) and TVM sees no CUDA GPU "
                                "here: bench it on the GPU machine")
    common = {"threads": threads, "artifact": str(path.resolve()), "device": device,
              "checkpoint": _checkpoint(man, str(path), checkpoint)}
    names = ("reidc", "torch_eager") + tuple(r for r in ALL_RUNTIMES[1:] if r in runtimes)
    engines = {n: {**common, "engine": n} for n in names}
    base_model = None
    if baseline is not None:
        bpath = _path(baseline)
        bman, _, bdevice = _check_artifact(bpath, entries, batches, "--baseline")
        if bdevice != device:
            raise InputError(f"--baseline {bpath}: runs on the {bdevice.upper()}, {path} on the {device.upper()}: "
                             "bench compares builds for one device")
        if bman["input_shape"] != man["input_shape"]:
            raise InputError(f"--baseline {bpath}: takes inputs {tuple(bman['input_shape'])}, "
                             f"{path} takes {tuple(man['input_shape'])}")
        bcommon = {"threads": threads, "artifact": str(bpath.resolve()), "device": device,
                   "checkpoint": _checkpoint(bman, f"--baseline {bpath}")}
        for n in ("reidc", "torch_eager") + (("onnxruntime",) if device == "cpu" else ()):
            engines[f"baseline_{n}"] = {**bcommon, "engine": n}
        base_model = bman["model"]
    return Plan(man, entries, batches, threads, repeat, engines, base_model, json_out, device)


def _stats(rounds: list[tuple[float, float]]) -> dict:
    """Median / min / max of the rounds' mean time per call, their spread, and the fastest call."""
    ts = [mean for mean, _ in rounds]
    med = statistics.median(ts)
    return {"ms": med, "min_ms": min(ts), "max_ms": max(ts), "spread": (max(ts) - min(ts)) / med, "rounds_ms": ts,
            "best_call_ms": min(best for _, best in rounds)}


def time_rounds(workers: dict[str, Worker], entry: str, x, m, repeat: int, round_s: float = ROUND_S,
                pause_s: float = PAUSE_S, say=lambda s: None) -> dict[str, dict]:
    """Prepare every worker on (x, m), then `repeat` rounds, one worker at a time, the order
    rotating. Per engine: stats over the rounds, its output, first-call time and calls per round."""
    names = list(workers)
    prepared = {}
    for n in names:
        w = workers[n]
        say(f"warming up {w.label}" + (" (compiling)" if w.name.endswith("torch_compile") else ""))
        prepared[n] = w.ask(("prepare", entry, x, m, round_s), f"warming up on {entry} batch {len(x)}")
    rounds: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for r in range(repeat):
        say(f"round {r + 1}/{repeat}")
        k = r % len(names)
        for n in names[k:] + names[:k]:
            time.sleep(pause_s)
            rounds[n].append(workers[n].ask(("round",), f"timing {entry} batch {len(x)}"))
    return {n: {**_stats(rounds[n]), **prepared[n], "pid": workers[n].pid} for n in names}


def _row(p: Plan, entry: str, batch: int, res: dict[str, dict], others: float | None) -> dict:
    from .reference import rel_err
    man = p.manifest
    row = {"model": man["model"], "target": man["target"]["preset"], "batch": batch, "modality": entry,
           "device": p.device, "threads": p.threads, "repeat": p.repeat, "isolation": "one process per engine",
           "worker_pids": {n: r["pid"] for n, r in res.items()}, "others_cpu_cores": others}
    for n, r in res.items():
        row[f"{n}_ms"] = r["ms"]
        row.update({f"{n}_{k}": r[k] for k in ("min_ms", "max_ms", "spread", "rounds_ms", "best_call_ms")})
        row[f"{n}_calls_per_round"] = r["calls"]
    if "torch_compile" in res:
        row["torch_compile_compile_s"] = res["torch_compile"]["first_s"]
    # on a GPU eager's worker also returns `ref`, its output with TF32 off (bench_worker)
    ref = res["torch_eager"].get("ref", res["torch_eager"]["out"])
    if "ref" in res["torch_eager"]:
        row["reference"] = "PyTorch eager fp32, TF32 off"
        row["torch_eager_rel_err"] = rel_err(res["torch_eager"]["out"], ref)   # its TF32 error
    row["max_rel_err"] = rel_err(res["reidc"]["out"], ref)
    for n in ("torch_compile",) + ALL_RUNTIMES[2:]:
        if n in res:
            row[f"{n}_rel_err"] = rel_err(res[n]["out"], ref)
            if n in REDUCED:
                row[f"{n}_cos_min"] = cos_min(res[n]["out"], ref)
            for k in ("precision", "inference_precision_hint", "conv_precisions"):
                if k in res[n]:
                    row[f"{n}_{k}"] = res[n][k]
    if p.baseline_model:
        row["baseline_model"] = p.baseline_model
        bref = res["baseline_torch_eager"].get("ref", res["baseline_torch_eager"]["out"])
        row["baseline_max_rel_err"] = rel_err(res["baseline_reidc"]["out"], bref)
        if "baseline_onnxruntime" in res:
            row["baseline_onnxruntime_rel_err"] = rel_err(res["baseline_onnxruntime"]["out"], bref)
    for n in res:
        if n != "reidc":
            row[f"speedup_vs_{n}"] = row[f"{n}_ms"] / row["reidc_ms"]
    return row


def cos_min(out, ref) -> float:
    """Min over samples of the cosine between the output's and the reference's features."""
    import numpy as np
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    den = np.maximum(np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1), 1e-300)
    return float(((out * ref).sum(axis=1) / den).min())


def bench(artifact, checkpoint=None, batches=(1, 16), modes=None, threads: int = 2, repeat: int = 5,
          runtimes=None, progress: Callable[[str], None] = lambda s: None, baseline=None,
          json_out=None, round_s: float = ROUND_S, pause_s: float = PAUSE_S) -> list[dict]:
    """One row per (entry, batch): every engine's median / min / max / spread per call (ms),
    speedups of reidc (median over median), and errors against PyTorch eager (for the
    reduced-precision peers also `<name>_cos_min`, the lowest per-sample feature cosine;
    the optional peers add `<name>_precision`, for OpenVINO from what the compiled model
    reports: `<name>_inference_precision_hint` and `<name>_conv_precisions`, the precisions
    its convolutions run in, counted).

    `artifact` / `baseline`: artifact directories (or Compiled); each engine's worker loads the
    artifact or its checkpoint itself (`checkpoint` overrides the one the manifest names).
    `baseline` (e.g. the fp32 network a binarized one replaces) adds its reidc, eager and ORT
    times. `json_out`: the rows are written there (checked before anything runs)."""
    p = plan(artifact, checkpoint, batches, modes, threads, repeat, runtimes, baseline, json_out)
    model = p.manifest["model"]
    with tempfile.TemporaryDirectory(prefix="reidc-bench-") as onnx_dir:  # the ONNX engines' shared exports
        rows = _bench_rows(p, {n: {**s, "onnx_dir": onnx_dir} for n, s in p.engines.items()}, model, repeat,
                           round_s, pause_s, progress)
    if p.json_out is not None:
        from .base.atomic import atomic_write_json
        atomic_write_json(p.json_out, rows, flag="--json")
    return rows


def _bench_rows(p: Plan, engines: dict[str, dict], model: str, repeat: int, round_s: float, pause_s: float,
                progress: Callable[[str], None]) -> list[dict]:
    from .reference import seeded_inputs
    workers = start_workers(engines, progress)
    rows, done = [], False
    try:
        for entry in p.entries:
            for batch in p.batches:
                x, m = seeded_inputs(tuple(p.manifest["input_shape"]), batch, entry, seed=1)
                meter = OthersMeter([w.pid for w in workers.values()]).start()
                res = time_rounds(workers, entry, x, m, repeat, round_s, pause_s,
                                  lambda s: progress(f"{model} {entry} batch {batch}: {s}"))
                rows.append(_row(p, entry, batch, res, meter.cores()))
        done = True
    finally:
        shutdown(workers, polite=done)
    return rows


def time_alone(engine: str, artifact, checkpoint=None, entry: str = RunMode.VISIBLE, batch: int = 1, threads: int = 2,
               repeat: int = 5, round_s: float = ROUND_S) -> dict:
    """One engine in a fresh process of its own, nothing else running: the figure `bench`'s
    isolation should reproduce. Returns its stats, output, pid and `others_cpu_cores`."""
    from .reference import seeded_inputs
    p = plan(artifact, checkpoint, (batch,), (entry,), threads, repeat,
             (engine,) if engine in ALL_RUNTIMES else ())
    workers = start_workers({engine: p.engines[engine]})
    try:
        x, m = seeded_inputs(tuple(p.manifest["input_shape"]), batch, entry, seed=1)
        meter = OthersMeter([workers[engine].pid]).start()
        res = time_rounds(workers, entry, x, m, repeat, round_s, pause_s=0.0)[engine]
        return {**res, "others_cpu_cores": meter.cores()}
    finally:
        shutdown(workers)
