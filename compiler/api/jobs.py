"""The long jobs as functions returning results: `tune` (MetaSchedule into a database),
`tune_report`, `search` (latency-aware architecture search), `bench` (reidc beside the engines
users would run instead), `profile` (per-kernel time of an artifact), `verify` (an artifact against PyTorch again). ENGINES, engine_label,
ROUND_S and BUSY_CORES say how to read bench's rows."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from reidc.compiler.bench import BUSY_CORES, ROUND_S, RUNTIMES as ENGINES  # noqa: F401  (for printing rows)
from reidc.compiler.bench_process import engine_label  # noqa: F401  (for printing rows)

from .needs import needs_compiler


def tune(checkpoint: str | Path, db: str | Path, target: str = "host", *, trials: int = 64, batch: int = 1,
         modes: Sequence[str] | None = None, only: Sequence[str] = (), rpc_tracker: str | None = None,
         rpc_key: str | None = None, timeout_s: float = 30.0, cores: int | None = None, seed: int = 0,
         progress: Callable[[str], None] | None = None, on_stop_now: Callable[[], None] | None = None,
         arch: str | Path | None = None, split_config: str | Path | None = None,
         fastreid_config: str | Path | None = None, torchreid_arch: str | None = None,
         weights: str = "model", precision: str = "fp32", int8_weight_bits: int | None = None,
         calibration: str | Path = "synthetic", confirm_rounds: int = 3, algorithms: bool = True) -> dict[str, Any]:
    """Auto-tune a model's kernels with MetaSchedule, measured here or on a device registered
    with TVM's RPC tracker (`rpc_tracker` "HOST:PORT", `rpc_key`), into the database folder `db`
    (created if new; a rerun resumes). Ctrl-C keeps every finished trial (TuningInterrupted, a
    KeyboardInterrupt). Returns {"target_key", "database", "tasks", "records"}; compile with
    `tuning_db=db, batch=batch` to use them, and `tune_report(db)` for the gains. `modes`: the
    entries whose kernels to tune (default: visible, or a fast-reid/torchreid model's only one);
    arch ... weights: how to read a bare weights file, as `compile` takes them. `precision`
    ("fp32", "int8" or "bf16"), `int8_weight_bits` and `calibration`: which real-valued kernels
    to tune, as `compile` takes them; compile with the same ones for the records to apply.
    `confirm_rounds`: after each task, its best record and reidc's default are re-measured in
    this many alternating rounds, and compile applies the record only if it wins them (0: trust
    the search's minimum, which noise biases low). `algorithms`: on x86 in fp32, first time each
    3x3 conv shape as a direct conv, F(2x2, 3x3) and F(4x4, 3x3) Winograd (`confirm_rounds`
    paired rounds), so that compiling with the database builds the fastest instead of
    `winograd_tiles`' guess, and tune that graph's kernels (measured in `confirm_rounds` rounds,
    at least one)."""
    with needs_compiler("tuning"):
        from reidc.compiler.tune.tune import TuneOptions, tune_checkpoint
    source = {k: str(v) if isinstance(v, Path) else v for k, v in (
        ("arch", arch), ("split_config", split_config), ("fastreid_config", fastreid_config),
        ("torchreid_arch", torchreid_arch), ("weights", weights)) if v is not None}
    opts = TuneOptions(db=str(db), target=target, trials=trials, batch=batch, modes=tuple(modes) if modes else None,
                       only=tuple(only), source=source, precision=precision, int8_weight_bits=int8_weight_bits,
                       calibration=str(calibration), confirm_rounds=confirm_rounds, algorithms=algorithms,
                       rpc_tracker=rpc_tracker, rpc_key=rpc_key, timeout_s=timeout_s, cores=cores, seed=seed,
                       progress=progress or (lambda msg: None), on_stop_now=on_stop_now or (lambda: None))
    return tune_checkpoint(checkpoint, opts)


def tune_report(db: str | Path, *, plot: bool = True) -> dict[str, dict]:
    """Per target in the database: its preset, per-kernel rows (calls, trials, default and tuned
    ms, speedup, share of a run) and totals, and under "algorithms" per batch and 3x3 conv shape
    the Winograd algorithms tune timed, the one chosen and `winograd_tiles="auto"`'s; with `plot`,
    a report.png per target (its path, or
    why it was not written, under "plot")."""
    from reidc.compiler.base.atomic import OutputError
    with needs_compiler("the tuning report"):
        from reidc.compiler.tune.report import plot as draw, report_rows
    data = report_rows(db)
    for key, d in data.items():
        if plot:
            try:
                d["plot"] = str(draw(key, d, Path(db) / key / "report.png"))
            except (OSError, OutputError) as e:  # a read-only database still gets its rows
                d["plot"] = f"not written ({getattr(e, 'strerror', None) or e})"
    return data


def search(output: str | Path, *, latency_aware: bool = True, dataset: str = "synthetic", target: str = "host",
           budget_ms: float | None = None, time_limit_s: float = 1200.0, scenario: str = "mixed:8",
           input_size: tuple[int, int] = (64, 32), train_steps: int = 600, population: int = 12,
           generations: int = 6, margin: float | None = None, measure_front: int = 6, latency_table: str = "all",
           seed: int = 0, latency_holdout: int = 4, train_procs: int = 1, rpc: tuple[str, str] | None = None,
           latency_cache: str | Path | None = None,
           progress: Callable[[str], None] | None = None, objective: str = "cmnas",
           standalone_steps: int | None = None, standalone_check: int = 4, method: str = "evolution",
           arch_steps: int = 150, latency_weight: float = 0.5, memory_weight: float = 0.0,
           gal: str = "none") -> dict[str, Any]:
    """Search which BNs to split and which stages to binarize, by validation accuracy and (if
    latency_aware) latency measured on `target`, writing the supernet, the scores and the pick
    (a checkpoint, compiled and verified) under `output`. Returns the result: "pareto_front"
    (rows with arch, val_score_mAP, predicted_ms, measured_ms, weight_bytes), "pick" (with its
    test-identity metrics, checkpoint and artifact), "latency_table" (the measured table and the
    prediction's error on the measured Pareto candidates) and "latency_model" (the per-kernel
    model and its error on `latency_holdout` random candidates it was not fitted on). `objective`:
    the supernet's training loss, "cmnas" (CM-NAS's released objective) or "reidc" (reidc's
    earlier variant); the result and the supernet's train.json record it. The pick is fine-tuned
    stand-alone for `standalone_steps` (default train_steps // 4; 0: its supernet weights) before
    its test metrics, and `standalone_check` candidates (the pick included) are, to report the
    Kendall tau between the supernet's ranking and stand-alone training's ("standalone").
    `train_procs`: supernet training on that many processes (torch.distributed; the result is
    one process's up to float summation order). `method`: "evolution" over the weight-sharing
    supernet, or "differentiable", CM-NAS's: a continuous weight per choice optimised by gradient
    on validation batches for `arch_steps` steps, latency-aware with `latency_weight` x the
    expected latency over the all-real network's (and `memory_weight` x the expected weight
    memory), the argmax the pick; its results go to "differentiable-<mode>" and the result's
    "differentiable" holds its trajectory and final probabilities. `gal`: BiRe-ID's KR-GAL and/or
    FR-GAL ("kr", "fr", "kr,fr") in the stand-alone fine-tunes of binarized candidates."""
    with needs_compiler("the search"):
        from reidc.compiler.search.search import SearchOptions, search as run
    opts = SearchOptions(latency_aware=latency_aware, dataset=dataset, input_size=tuple(input_size), target=target,
                         scenario=scenario, budget_ms=budget_ms, margin=margin, time_limit_s=time_limit_s,
                         train_steps=train_steps, population=population, generations=generations,
                         measure_front=measure_front, latency_table=latency_table, seed=seed, rpc=rpc,
                         latency_holdout=latency_holdout, train_procs=train_procs,
                         latency_cache=None if latency_cache is None else Path(latency_cache),
                         objective=objective, standalone_steps=standalone_steps, standalone_check=standalone_check,
                         method=method, arch_steps=arch_steps, latency_weight=latency_weight,
                         memory_weight=memory_weight, gal=gal, progress=progress or (lambda msg: None))
    return run(output, opts)


def bench(artifact, batches: Sequence[int] = (1, 16), *, modes: Sequence[str] | None = None,
          checkpoint: str | Path | None = None, threads: int = 2, repeat: int = 5,
          engines: Sequence[str] | None = None, baseline: str | Path | None = None,
          json_out: str | Path | None = None, progress: Callable[[str], None] | None = None) -> list[dict]:
    """Time an artifact (folder or Artifact) beside PyTorch eager, torch.compile and ONNX
    Runtime (`engines`, default `default_engines(artifact)`; a CUDA build on this machine's GPU
    beside PyTorch on it), each in a process of its own, in turn: one row per
    (entry, batch) with every engine's median/min/max ms, reidc's speedups and errors against
    eager. `baseline`: another artifact (e.g. the fp32 network a binarized one replaces)."""
    from reidc.compiler.bench import bench as run
    path = getattr(artifact, "path", artifact)
    with needs_compiler("benchmarking"):
        return run(path, checkpoint, tuple(batches), tuple(modes) if modes else None, threads, repeat,
                   tuple(engines) if engines else None, progress or (lambda msg: None), baseline, json_out)


def default_engines(artifact) -> tuple[str, ...]:
    """The engines `bench` runs beside reidc when none are named: PyTorch eager, torch.compile
    and ONNX Runtime for a CPU build; PyTorch eager, torch.compile and fp16 autocast on the GPU
    for a CUDA build."""
    from reidc.compiler.bench import artifact_device, default_runtimes
    with needs_compiler("benchmarking"):
        return default_runtimes(artifact_device(getattr(artifact, "path", artifact)))


def profile(artifact, batch: int = 1, mode: str | None = None, *, ghz: float | None = None,
            json_out: str | Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Where an artifact's time goes on this machine: per kernel (TVM's fused functions) its
    calls per run, ms per call timed alone, share of the whole run, and for convs GMAC/s and the
    fraction of the unit's peak (cores x `ghz` (default: measured with an FMA loop) x MACs per cycle:
    compiler/profile.py); the whole run's time and what the kernels alone leave out of it."""
    from reidc.compiler.profile import profile as run
    report = run(getattr(artifact, "path", artifact), batch, mode, ghz=ghz, progress=progress or (lambda msg: None))
    if json_out is not None:
        from reidc.compiler.base.atomic import atomic_write_json
        atomic_write_json(Path(json_out), report, indent=1)
    return report


def verify(artifact, checkpoint: str | Path | None = None, progress: Callable[[str], None] | None = None,
           module: Any = None) -> dict[str, Any]:
    """Verify an artifact (folder or Artifact) against PyTorch where it can run (e.g. a CUDA or
    aarch64 build made elsewhere); its manifest's "verification" is replaced. The reference:
    `checkpoint`, else `module` (the nn.Module it was compiled from, checked by its weights'
    digest), else the checkpoint its manifest names. Returns the manifest."""
    with needs_compiler("verification"):
        from reidc.compiler.compile import reverify
        return reverify(getattr(artifact, "path", artifact), checkpoint, progress or (lambda msg: None), module=module)
