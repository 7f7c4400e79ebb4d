"""The `reidc` command line. Thin: parses arguments and calls library functions."""
from __future__ import annotations

from collections import Counter

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from . import api as reidc
from .api import EngineError, UserError, __version__
from .api import INPUT_CONTRACT
from .base.errors import one_line

err = Console(stderr=True)
out = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole when piped
_debug = {"on": False}


class _Guarded(TyperGroup):
    """The top-level handler: every command ends with its result, one `error:` line and exit 1,
    or (Ctrl-C) one `interrupted` line and exit 130; never a traceback unless --debug."""

    def invoke(self, ctx):
        import signal
        import warnings
        warnings.showwarning = lambda message, *a, **k: err.print(f"[yellow]warning:[/] {escape(str(message))}",
                                                                   highlight=False, soft_wrap=True)
        interrupted = []

        def on_sigint(signum, frame):  # remember it: TVM's FFI turns the KeyboardInterrupt raised
            interrupted.append(signum)  # inside a C++ call into a RuntimeError
            raise KeyboardInterrupt
        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread
            previous = None
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except KeyboardInterrupt:
            interrupted.append(signal.SIGINT)
        except Exception as e:  # noqa: BLE001  (the one place every other error is turned into a line)
            if not interrupted:
                if _debug["on"]:
                    raise
                internal = not isinstance(e, (UserError, OSError, ValueError))
                msg = f"{type(e).__name__}: {one_line(e)}" if internal else one_line(e)
                err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
                if internal:
                    err.print("[dim](a bug in reidc, not in your input: rerun with --debug for the traceback and "
                              "please report it)[/]", highlight=False)
                raise typer.Exit(1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        err.print("interrupted: nothing half-written was kept (outputs are replaced only when complete)",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130)


app = typer.Typer(cls=_Guarded, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False,
                  help="reidc: compile person re-identification networks for real hardware.")
zoo_app = typer.Typer(no_args_is_help=True, help="Deterministic zoo checkpoints.")
app.add_typer(zoo_app, name="zoo")


def _version(value: bool):
    if value:
        out.print(f"reidc {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show the full traceback of an error"),
          version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print reidc's version and exit")):
    """reidc: compile person re-identification networks for real hardware."""
    _debug["on"] = debug


def _fail(e: Exception) -> None:
    err.print(f"[bold red]error:[/] {escape(one_line(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _progress(msg: str) -> None:
    err.print(f"[dim]reidc:[/] {escape(msg)}", highlight=False)


@zoo_app.command("list")
def zoo_list():
    """List zoo models."""
    for name, z in reidc.zoo_models().items():
        kind = "binarized BiRe-ID style" if z["family"] == "bire" else "CM-NAS"
        out.print(f"{name}  ({kind} ResNet-{z['depth']}, switchable BNs, BNNeck, 256x128)")


@zoo_app.command("export")
def zoo_export(name: str = typer.Argument(..., help="zoo model, e.g. cmnas-resnet50"),
               output: Path = typer.Option(..., "-o", "--output", help="checkpoint directory to write"),
               split: str = typer.Option("all-split", help="all-split | all-shared | random:SEED | '0 1 ...'"),
               split_config: Optional[Path] = typer.Option(None, help="CM-NAS config.cfg (overrides --split)"),
               seed: int = typer.Option(0, help="seed for weights and BN statistics"),
               input_size: str = typer.Option("256x128", help="HxW")):
    """Write a deterministic checkpoint (seeded weights and BN statistics; no downloads)."""
    try:
        h, w = (int(v) for v in input_size.lower().split("x"))
        ck = reidc.export_zoo(name, output, split=split, split_config=split_config, seed=seed, input_size=(h, w))
    except (ValueError, UserError) as e:
        _fail(e)
    out.print(f"wrote {output} ({ck['model']}, {ck['split_bns']} of {ck['bns']} BNs split)")


@zoo_app.command("train")
def zoo_train(name: str = typer.Argument(..., help="zoo model, e.g. cmnas-resnet18"),
              output: Path = typer.Option(..., "-o", "--output", help="checkpoint directory to write"),
              dataset: str = typer.Option("synthetic", help="synthetic[:IDS] | sysu:PATH | regdb:PATH[#TRIAL]"),
              split: str = typer.Option("all-split", help="all-split | all-shared | random:SEED | '0 1 ...'"),
              steps: int = typer.Option(300, help="training steps (8 identities x 4 images each)"),
              input_size: str = typer.Option("128x64", help="HxW the network takes (images are resized)"),
              seed: int = typer.Option(0, help="seed for data, weights and batches"),
              objective: str = typer.Option("cmnas", help="training loss: cmnas (CM-NAS's) | reidc (reidc's older one)")):
    """Train a zoo network on a re-ID dataset (CPU, minutes), to judge compiles by accuracy.

    Writes a checkpoint folder (`reidc compile` loads it) and train.json: the settings, the loss
    trace, and the test protocol's rank-1/mAP of the untrained and the trained network."""
    try:
        res = reidc.train_zoo(name, output, dataset=dataset, split=split, steps=steps, input_size=_hw(input_size),
                              seed=seed, progress=_progress, objective=objective)
    except (ValueError, UserError) as e:
        _fail(e)
    out.print(f"wrote {output} ({res['model']}, {res['steps']} steps on {res['dataset_name']}, "
              f"{res['seconds']['train']:.0f} s training)")
    for setting, after in res["test"]["after"].items():
        before = res["test"]["before"][setting]
        out.print(f"  test {setting}: rank-1 {before['rank1']:.3f} -> {after['rank1']:.3f}, "
                  f"mAP {before['mAP']:.3f} -> {after['mAP']:.3f} (untrained -> trained)")


@app.command()
def targets():
    """List target presets and what each enables."""
    t = Table("name", "description", "TVM target", "enables", "runs from here")
    for p in reidc.target_presets():
        t.add_row(p["name"], p["description"], json.dumps(p["tvm"]), ", ".join(p["features"]),
                  p["runs"] if not p["missing_here"] else "no (needs " + ", ".join(p["missing_here"]) + ")")
    out.print(t)


@app.command("compile")
def compile_cmd(checkpoint: Path = typer.Argument(..., help="checkpoint dir, .safetensors/.pt file, or .pt2 program"),
                output: Path = typer.Option(..., "-o", "--output", help="artifact directory"),
                target: str = typer.Option("host", help="preset name (see `reidc targets`) or TVM target JSON"),
                arch: Optional[Path] = typer.Option(None, help="architecture spec JSON for a bare weights file"),
                split_config: Optional[Path] = typer.Option(None, help="CM-NAS config.cfg for a bare weights file"),
                fastreid_config: Optional[Path] = typer.Option(None, help="fast-reid's config.yaml for its "
                                                                          "model_final.pth (default: config.yaml "
                                                                          "beside the checkpoint, if there is one)"),
                torchreid_arch: Optional[str] = typer.Option(None, help="torchreid architecture of the checkpoint: "
                                                                        "osnet_x1_0 (x0_75, x0_5, x0_25), "
                                                                        "osnet_ibn_x1_0, osnet_ain_x1_0 (...), "
                                                                        "mobilenetv2_x1_0 (x1_4), resnet50, "
                                                                        "resnet50_fc512"),
                dump_ir: Optional[Path] = typer.Option(None, help="write the IR after every pass here"),
                mixed_strategy: str = typer.Option("auto", help="auto | affine | weights (mixed-batch BN plan)"),
                modes: Optional[str] = typer.Option(None, help="entries to build, e.g. visible or visible,mixed (default: all)"),
                verify: bool = typer.Option(True, help="check against PyTorch before writing (default on)"),
                batch: Optional[int] = typer.Option(None, help="fixed batch size (default: any); tuned kernels need one"),
                tuning_db: Optional[Path] = typer.Option(None, help="apply the records of a `reidc tune` database"),
                weights: str = typer.Option("model", help="a training checkpoint's weights: model, or ema (CM-NAS)"),
                feature: str = typer.Option("bnneck", help="bnneck: the feature after the BNNeck BN (CM-NAS's feat); "
                                                           "pool: before it (its global_feat)"),
                input_size: Optional[str] = typer.Option(None, help="HxW the network takes (default: the spec's, "
                                                                    "256x128 for a bare weights file)"),
                precision: str = typer.Option("fp32", help="fp32 | int8 | bf16 | auto: the real-valued layers (binary "
                                                           "convs stay 1-bit); int8 is calibrated, int8 and bf16 (AMX "
                                                           "targets) are verified by feature cosine; auto builds fp32, "
                                                           "int8 (and bf16 on AMX) and keeps the fastest here"),
                calibration: str = typer.Option("synthetic", help="int8 calibration images: synthetic (rendered "
                                                                  "persons) or a folder (visible/ and infrared/ "
                                                                  "subfolders for a cross-modality model)"),
                calibration_images: int = typer.Option(16, help="int8: calibration images per entry"),
                retrieval: Optional[str] = typer.Option(None, help="int8/bf16: also verify rank-1/mAP on this dataset's "
                                                                   "test protocol (synthetic, sysu:PATH, regdb:PATH) "
                                                                   "within 0.5 points of PyTorch fp32")):
    """Compile a checkpoint for a target; the artifact is written only after it verifies."""
    if mixed_strategy not in ("auto", "affine", "weights"):
        _fail(ValueError(f"--mixed-strategy {mixed_strategy!r}: expected auto, affine or weights"))
    try:
        man = reidc.compile(checkpoint, target, output=output, arch=arch, split_config=split_config,
                            fastreid_config=fastreid_config, torchreid_arch=torchreid_arch, dump_ir=dump_ir,
                            mixed_strategy=None if mixed_strategy == "auto" else mixed_strategy, verify=verify,
                            batch=batch, tuning_db=tuning_db,
                            modes=tuple(m.strip() for m in modes.split(",")) if modes else None, weights=weights,
                            feature=None if feature == "bnneck" else feature,
                            input_shape=(3,) + _hw(input_size) if input_size else None, progress=_progress,
                            precision=precision, calibration=calibration,
                            calibration_images=calibration_images, retrieval=retrieval).manifest
    except (UserError, ValueError) as e:
        _fail(e)
    v = man["verification"]
    errs = ", ".join(f"{m} {e:.1e}" for m, e in v.get("max_rel_err", {}).items())
    cos = ", ".join(f"{m} {c:.4f}" for m, c in v.get("min_cosine", {}).items())
    how = (f" (min feature cosine to PyTorch fp32: {cos}; budget {v['budget']['min_feature_cosine']})" if cos else
           f" (max rel. L2 error: {errs}; tolerance {v['tolerance']:g})" if errs else "")
    out.print(f"compiled {man['model']} for {man['target']['preset']} in {man['total_seconds']} s "
              f"(build {man['build_seconds']} s) -> {output}; verification {v['status']}" + how)
    for setting, r in (v.get("retrieval") or {}).get("settings", {}).items():
        out.print(f"  {v['retrieval']['dataset']} {setting}: " + ", ".join(
            f"{k} " + " -> ".join(f"{val:.2f}" for val in pair.values()) for k, pair in r.items() if k != "queries")
            + f" (fp32 -> build; {r['queries']} queries)")
    prec = man.get("precision") or {}
    if prec.get("auto"):
        out.print(f"  --precision auto chose {prec['auto']['chose']}: {prec['auto']['why']}")
    if prec.get("real_valued", "fp32") != "fp32":
        n = Counter(r["precision"] for r in prec["layers"])
        out.print(f"  {prec['real_valued']}: " + ", ".join(f"{k} {c} layers" for k, c in sorted(n.items()))
                  + "".join(f"; {r['layer']} stays fp32: {r['why']}" for r in prec["layers"]
                            if r["precision"] == "fp32" and r["op"] in ("conv2d", "group_conv2d")))
    w, ops = man["weights"], man["per_sample"]
    if man.get("binary_layers"):
        out.print(f"  {man['binary_layers']} binary convs; weights {w['stored_weight_bytes'] / 1e6:.2f} MB stored vs "
                  f"{w['fp32_weight_bytes'] / 1e6:.1f} MB fp32; library {w['artifact_bytes'] / 1e6:.2f} MB; "
                  f"{ops['ops'] / 1e9:.3f} GOPs/sample vs {ops['fp32_equivalent_ops'] / 1e9:.3f} G fp32 MACs "
                  f"({ops['fp32_equivalent_ops'] / max(ops['ops'], 1):.1f}x fewer)")
    for mode, rows in v.get("sign_flips", {}).items():
        if rows:
            out.print(f"  {mode}: {len(rows)} of {v['batch']} samples flipped signs under float rounding (first flips "
                      f"within {max(r['first_site_max_abs_presign'] for r in rows):.1e} of the threshold; max feature "
                      f"change {max(r['rel_err'] for r in rows):.2g}); details in manifest.json")


@app.command()
def tune(checkpoint: Optional[Path] = typer.Argument(None, help="checkpoint to tune (omit with --report)"),
         db: Optional[Path] = typer.Option(None, "--db", help="tuning database directory (created if new; resumes)"),
         target: str = typer.Option("host", help="preset name or TVM target JSON"),
         trials: int = typer.Option(64, help="measured trials per task"),
         batch: int = typer.Option(1, help="the batch size to tune for"),
         modes: Optional[str] = typer.Option(None, help="entries whose kernels to tune, e.g. visible,mixed (default: "
                                                        "visible, or the model's only entry)"),
         torchreid_arch: Optional[str] = typer.Option(None, help="torchreid architecture of the checkpoint"),
         fastreid_config: Optional[Path] = typer.Option(None, help="fast-reid's config.yaml (default: beside it)"),
         arch: Optional[Path] = typer.Option(None, help="architecture spec JSON for a bare weights file"),
         split_config: Optional[Path] = typer.Option(None, help="CM-NAS config.cfg for a bare weights file"),
         only: Optional[str] = typer.Option(None, help="tune only tasks whose name contains one of these (comma list)"),
         rpc_tracker: Optional[str] = typer.Option(None, help="HOST:PORT of a TVM RPC tracker to measure through"),
         rpc_key: Optional[str] = typer.Option(None, help="device key registered with the tracker"),
         timeout: float = typer.Option(30.0, help="seconds a candidate may run (and an RPC session may wait)"),
         cores: Optional[int] = typer.Option(None, help="the device's CPU cores (default: this machine's; 4 via RPC)"),
         report: Optional[Path] = typer.Option(None, "--report", help="print a report of this database and plot it")):
    """Auto-tune a model's kernels with MetaSchedule (locally or through an RPC tracker); Ctrl-C
    keeps every finished trial and a rerun resumes. `--report DB` summarises a database."""
    if report is not None:
        return _tune_report(report)
    if checkpoint is None or db is None:
        _fail(ValueError("reidc tune needs a CHECKPOINT and --db DIR (or --report DB)"))
    def interrupted():
        err.print(f"interrupted: every finished trial is in {db}; run the same command again to resume",
                  highlight=False, soft_wrap=True)

    try:
        res = reidc.tune(checkpoint, db, target, trials=trials, batch=batch,
                         modes=tuple(m.strip() for m in modes.split(",")) if modes else None,
                         torchreid_arch=torchreid_arch, fastreid_config=fastreid_config, arch=arch,
                         split_config=split_config,
                         only=tuple(o.strip() for o in only.split(",")) if only else (),
                         rpc_tracker=rpc_tracker, rpc_key=rpc_key, timeout_s=timeout, cores=cores,
                         progress=_progress, on_stop_now=interrupted)
    except KeyboardInterrupt:  # the first Ctrl-C, after the batch; the second ends in on_stop_now
        interrupted()
        raise typer.Exit(130)
    except (UserError, ValueError) as e:
        _fail(e)
    how = "".join(f" {flag} {v}" for flag, v in (("--torchreid-arch", torchreid_arch), ("--fastreid-config", fastreid_config),
                                                   ("--arch", arch), ("--split-config", split_config)) if v)
    out.print(f"tuned {res['tasks']} tasks; {res['records']} records in {res['database']}; "
              f"`reidc compile {checkpoint}{how} --target {target} --tuning-db {db}` applies them")


def _tune_report(db: Path) -> None:
    try:
        data = reidc.tune_report(db)
    except UserError as e:
        _fail(e)
    for key, d in data.items():
        t = Table("task", "calls", "trials", "failed", "default ms", "tuned ms", "speedup", "share of run",
                  title=f"{key} ({d['preset']})")
        for r in d["rows"]:
            f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
            t.add_row(r["task"][:60], str(r["calls"]), str(r["trials"]), str(r["failed"]), f(r["default_ms"]),
                      f(r["tuned_ms"]), "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      "-" if r["share"] is None else f"{100 * r['share']:.1f}%")
        out.print(t)
        out.print(f"kernel time per run: {d['total_default_ms']:.3f} ms default -> {d['total_ms']:.3f} ms tuned; "
                  f"plot: {d['plot']}")


def _duration(text: str) -> float:
    """`20m`, `90s`, `1.5h` or plain seconds."""
    import math
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        s = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        s = math.nan
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"--time-limit {text!r}: expected e.g. 20m, 90s or 1.5h (a positive duration)")
    return s


@app.command()
def search(output: Path = typer.Option(..., "-o", "--output", help="directory for the supernet, the results and the pick"),
           latency_aware: bool = typer.Option(True, "--latency-aware/--accuracy-only",
                                              help="score by latency on the target too, or by accuracy alone"),
           target: str = typer.Option("host", help="preset name or TVM target JSON the latency is measured for"),
           budget_ms: Optional[float] = typer.Option(None, help="latency budget (ms) for the latency-aware pick"),
           dataset: str = typer.Option("synthetic", help="synthetic[:IDS] | sysu:PATH | regdb:PATH[#TRIAL]"),
           time_limit: str = typer.Option("20m", help="wall-clock limit for the whole search, e.g. 20m"),
           scenario: str = typer.Option("mixed:8", help="what latency means: MODE:BATCH, MODE visible|infrared|mixed"),
           input_size: str = typer.Option("64x32", help="HxW the networks take (images are resized)"),
           train_steps: int = typer.Option(600, help="supernet training steps (8 ids x 4 images each)"),
           population: int = typer.Option(12, help="candidates per generation"),
           generations: int = typer.Option(6, help="generations of the evolutionary search"),
           margin: Optional[float] = typer.Option(None, help="latency-aware without a budget: mAP it may give up for "
                                                             "speed (default: whatever validation cannot tell from "
                                                             "the most accurate, by a paired bootstrap)"),
           measure_front: int = typer.Option(6, help="Pareto candidates compiled and measured at the end"),
           latency_table: str = typer.Option("all", help="all: measure the 16 real/binary stage patterns; "
                                                         "stages: 6, the rest summed per stage (faster, less accurate)"),
           seed: int = typer.Option(0, help="seed for data, training and search"),
           rpc_tracker: Optional[str] = typer.Option(None, help="HOST:PORT of a TVM RPC tracker to measure through"),
           rpc_key: Optional[str] = typer.Option(None, help="device key registered with the tracker"),
           latency_cache: Optional[Path] = typer.Option(None, help="latency cache file (default: in REIDC_CACHE)"),
           objective: str = typer.Option("cmnas", help="supernet's loss: cmnas (CM-NAS's) | reidc (reidc's older one)"),
           standalone_steps: Optional[int] = typer.Option(None, help="the pick's stand-alone fine-tuning steps before "
                                                                      "its test metrics (default: train-steps / 4; 0: "
                                                                      "report the supernet child's)"),
           standalone_check: int = typer.Option(4, help="candidates fine-tuned stand-alone, the pick included, to "
                                                        "rank-correlate with the supernet (Kendall tau)")):
    """Search BN splits and binarized stages by validation accuracy and measured latency."""
    try:
        if (rpc_tracker is None) != (rpc_key is None):
            raise ValueError("--rpc-tracker and --rpc-key go together")
        h, w = (int(v) for v in input_size.lower().split("x"))
        res = reidc.search(output, latency_aware=latency_aware, dataset=dataset, input_size=(h, w), target=target,
                           scenario=scenario, budget_ms=budget_ms, margin=margin, time_limit_s=_duration(time_limit),
                           train_steps=train_steps, population=population, generations=generations,
                           measure_front=measure_front, latency_table=latency_table, seed=seed,
                           rpc=(rpc_tracker, rpc_key) if rpc_tracker else None, latency_cache=latency_cache,
                           objective=objective, standalone_steps=standalone_steps, standalone_check=standalone_check,
                           progress=_progress)
    except KeyboardInterrupt:
        err.print(f"interrupted: the supernet's last checkpoint and every score are in {output}; rerun to resume",
                  highlight=False, soft_wrap=True)
        raise typer.Exit(130)
    except (UserError, ValueError) as e:
        _fail(e)
    t = Table("", "binary stages", "split BNs", "val mAP (95% CI)", "vs best", "predicted ms", "measured ms", "weights MB",
              title=f"Pareto front ({res['mode']}, {res['target']['target']}, {res['scenario']})")
    for r in res["pareto_front"]:
        star = "*" if r["key"] == res["pick"]["key"] else ""
        ci, vs = r["val_mAP_ci95"], r["val_vs_most_accurate"]
        t.add_row(star, r["arch"]["binary_stages"], str(r["arch"]["split_bns"]),
                  f"{r['val_score_mAP']:.4f} ({ci[0]:.3f}-{ci[1]:.3f})",
                  "best" if vs is None else ("tied" if vs["indistinguishable"] else f"{vs['difference']:+.3f}"),
                  f"{r['predicted_ms']:.2f}", "-" if r["measured_ms"] is None else f"{r['measured_ms']:.2f}",
                  "-" if r["weight_bytes"] is None else f"{r['weight_bytes'] / 2**20:.2f}")
    out.print(t)
    p, e = res["pick"], res["latency_table"]["error"]
    def scores(settings):
        return "; ".join(f"{k} rank-1 {v['rank1']:.3f} mAP {v['mAP']:.3f} ({v['mAP_ci95'][0]:.3f}-{v['mAP_ci95'][1]:.3f}) "
                         f"mINP {v['mINP']:.3f}" for k, v in settings.items())
    out.print(f"pick (*): binary stages {p['arch']['binary_stages']}, {p['arch']['split_bns']} split BNs, "
              f"{p['measured_ms']:.2f} ms measured; test (single-shot): {scores(p['test'])}")
    if p.get("test_multi_shot"):
        out.print(f"test (multi-shot): {scores(p['test_multi_shot'])}")
    ab = res.get("pick_vs_most_accurate")
    if ab:
        d = ab["val_mAP_difference"]
        out.print(f"pick vs the most accurate candidate (val mAP {ab['pick_val_mAP']:.4f} vs {ab['most_accurate_val_mAP']:.4f}: "
                  f"{'indistinguishable' if d['indistinguishable'] else 'measurably lower'}, difference 95% CI "
                  f"{d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f}), "
                  f"timed in alternating rounds: {ab['pick_ms']:.2f} ms vs {ab['most_accurate_ms']:.2f} ms "
                  f"({ab['speedup']:.2f}x)")
    sa = res.get("standalone")
    if sa:
        tau = "n/a (fewer than 3)" if sa["kendall_tau"] is None else f"{sa['kendall_tau']:+.2f}"
        out.print(f"stand-alone check: {len(sa['candidates'])} candidates fine-tuned for {sa['steps']} steps; "
                  f"Kendall tau, supernet vs stand-alone validation mAP: {tau}")
    if e["candidates"]:
        out.print(f"latency table error on {e['candidates']} measured candidates: mean {100 * e['mean_abs_rel_err']:.1f}%, "
                  f"max {100 * e['max_abs_rel_err']:.1f}%")
    out.print(f"checkpoint: {p['checkpoint']}  (compiled and verified: {p['artifact']})")


@app.command()
def verify(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
           checkpoint: Optional[Path] = typer.Option(None, help="the checkpoint (default: the path in the manifest)")):
    """Verify an artifact against PyTorch where it runs (e.g. a CUDA build made with --no-verify
    on a machine without a GPU); updates its manifest."""
    try:
        man = reidc.verify(artifact, checkpoint, progress=_progress)
    except UserError as e:
        _fail(e)
    errs = ", ".join(f"{m} {e:.1e}" for m, e in man["verification"]["max_rel_err"].items())
    out.print(f"{artifact}: verification passed (max rel. L2 error: {errs})")


@app.command()
def runner(output: Path = typer.Option(..., "-o", "--output", help="directory to write the aarch64 runner bundle to")):
    """Cross-compile reidc's C++ runner for aarch64, with TVM's aarch64 runtime libraries beside it:
    copy the directory and an artifact to a board and run `./reidc_run ARTIFACT/model.so ...`."""
    try:
        libs = reidc.runner_bundle(output, _progress)
    except UserError as e:
        _fail(e)
    out.print(f"wrote {output}: reidc_run + {', '.join(libs)} (aarch64; the runner finds the libraries beside it)")


@app.command("qemu-server")
def qemu_server(tracker: Optional[str] = typer.Option(None, help="HOST:PORT of the RPC tracker to register with"),
                key: str = typer.Option("qemu-aarch64", help="device key to register under"),
                setup_only: bool = typer.Option(False, help="only build the emulated aarch64 Python (cached)")):
    """Run TVM's RPC server on an aarch64 Python under qemu-user: an emulated ARM device for
    `reidc tune --rpc-tracker` (proves the path; its timings are not ARM speed)."""
    if not (setup_only or tracker):
        _fail(ValueError("--tracker HOST:PORT is required (or --setup-only)"))
    try:
        if setup_only:
            out.print(f"emulated aarch64 Python ready: {reidc.qemu_server(None, setup_only=True, progress=_progress)}")
            return
        code = reidc.qemu_server(tracker, key, _progress, announce=out.print)
    except UserError as e:
        _fail(e)
    except KeyboardInterrupt:
        return
    sys.exit(code)


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--input-size {text!r}: expected HxW, e.g. 256x128") from None
    return h, w


@app.command()
def run(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
        input: Path = typer.Option(..., "--input", help=".npy images (N, C, H, W) (" + INPUT_CONTRACT + "), or a "
                                   "folder of image files, preprocessed as the manifest states"),
        modality: str = typer.Option("visible", help="visible | infrared | halves (first half visible, second "
                                                      "infrared: CM-NAS's mode 0) | a .npy int vector (0 visible, 1 infrared)"),
        normalize: str = typer.Option("none", help="none | l2: unit-length features, ready for cosine retrieval"),
        output: Path = typer.Option(..., "-o", "--output", help=".npy features to write")):
    """Run a compiled model on images (a .npy batch or a folder of image files)."""
    try:
        res = reidc.run_files(artifact, input, modality, output, _progress, normalize)
    except UserError as e:
        _fail(e)
    rows = f" (rows in file-name order: {res['files'][0]} ... {res['files'][-1]})" if res["files"] else ""
    out.print(f"wrote {output}: features {res['shape']}{rows}")


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
            json_out: bool = typer.Option(False, "--json", help="print the summary as JSON")):
    """What an artifact is: model, entries, input contract, target, precision, verification, tuning."""
    try:
        info = reidc.inspect(artifact)
    except UserError as e:
        _fail(e)
    if json_out:
        print(json.dumps(info, indent=1))
        return
    t = Table("", "", title=str(artifact), show_header=False)
    for key, value in info.items():
        if key != "path":
            t.add_row(key, escape(value if isinstance(value, str) else json.dumps(value)))
    out.print(t)


@app.command("bench")
def bench_cmd(artifact: Path = typer.Argument(...),
              batch: List[int] = typer.Option([1, 16], "--batch", help="batch sizes (repeatable)"),
              mode: Optional[List[str]] = typer.Option(None, "--mode", help="visible | infrared | mixed (repeatable; "
                                                       "default: the artifact's visible and mixed entries)"),
              checkpoint: Optional[Path] = typer.Option(None, help="the PyTorch side (default: the one compiled)"),
              threads: int = typer.Option(2, help="threads of every engine (each runs in a process of its own)"),
              repeat: int = typer.Option(5, help="timed rounds per engine (each about 0.2 s, warm-up excluded)"),
              baseline: Optional[Path] = typer.Option(None, help="another artifact to compare with (e.g. the fp32 "
                                                       "network a binarized one replaces): its reidc, eager and ORT times"),
              no_compile: bool = typer.Option(False, "--no-torch-compile", help="skip torch.compile (slow to compile)"),
              runtimes: Optional[str] = typer.Option(None, "--runtimes", help="comma-separated engines beside reidc and "
                                                     "PyTorch eager (default: torch_compile,onnxruntime; also "
                                                     "onnxruntime_int8, openvino, openvino_bf16, openvino_int8)"),
              json_out: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON")):
    """reidc vs PyTorch eager, torch.compile and ONNX Runtime, each in a process of its own, timed in turn."""
    from .api.jobs import BUSY_CORES, ENGINES, ROUND_S, engine_label
    try:
        rows = reidc.bench(artifact, tuple(batch), modes=tuple(mode or ()) or None, checkpoint=checkpoint,
                           threads=threads, repeat=repeat,
                           engines=(tuple(r.strip() for r in runtimes.split(",") if r.strip()) if runtimes else
                                    tuple(r for r in ENGINES if not (no_compile and r == "torch_compile"))),
                           progress=_progress, baseline=baseline, json_out=json_out)
    except (UserError, EngineError) as e:
        _fail(e)
    t = Table("model", "batch", "modality", "engine", "median ms", "min ms", "max ms", "spread",
              "reidc speedup", "rel err vs eager")
    errs = {"reidc": "max_rel_err", "torch_compile": "torch_compile_rel_err", "onnxruntime": "onnxruntime_rel_err",
            "baseline_reidc": "baseline_max_rel_err", "baseline_onnxruntime": "baseline_onnxruntime_rel_err",
            **{n: f"{n}_rel_err" for n in ("onnxruntime_int8", "openvino", "openvino_bf16", "openvino_int8")}}
    for r in rows:
        for i, n in enumerate(r["worker_pids"]):
            label = engine_label(n) + (f" ({r['baseline_model']})" if n == "baseline_reidc" else "")
            if n == "torch_compile":
                label += f" (compile {r['torch_compile_compile_s']:.1f} s)"
            if f"{n}_precision" in r and n != "onnxruntime_int8":
                label += f" ({r[n + '_precision']})"
            if f"{n}_cos_min" in r:
                label += f" cos {r[n + '_cos_min']:.4f}"
            t.add_row(*((r["model"], str(r["batch"]), r["modality"]) if i == 0 else ("", "", "")), label,
                      f"{r[n + '_ms']:.2f}", f"{r[n + '_min_ms']:.2f}", f"{r[n + '_max_ms']:.2f}",
                      f"{r[n + '_spread']:.0%}", "" if n == "reidc" else f"{r['speedup_vs_' + n]:.2f}x",
                      f"{r[errs[n]]:.1e}" if n in errs else "")
    out.print(t)
    out.print(f"each engine in a process of its own, {threads} thread(s), timed in turn: {repeat} rounds of about "
              f"{ROUND_S} s per engine, warm-up excluded; ms per call; spread (max-min)/median; "
              "speedup = engine median / reidc median")
    busy = max((r["others_cpu_cores"] or 0.0 for r in rows), default=0.0)
    if busy > BUSY_CORES:
        err.print(f"[yellow]warning:[/] other processes used {busy:.1f} CPU cores on average while timing "
                  f"(this machine has {os.cpu_count()}): these figures come from a busy machine", highlight=False,
                  soft_wrap=True)
    if json_out:
        out.print(f"wrote {json_out}")


@app.command("profile")
def profile_cmd(artifact: Path = typer.Argument(...),
                batch: int = typer.Option(1, help="batch size (a fixed-batch build uses its own)"),
                mode: Optional[str] = typer.Option(None, help="the entry: visible | infrared | mixed | main "
                                                              "(default: visible, or the artifact's only one)"),
                ghz: Optional[float] = typer.Option(None, help="the clock for the peak (default: /proc/cpuinfo's)"),
                top: int = typer.Option(25, help="kernels shown (all go to --json)"),
                json_out: Optional[Path] = typer.Option(None, "--json", help="write the report as JSON")):
    """Where an artifact's time goes here: per kernel time, calls, share, GMAC/s and fraction of peak."""
    try:
        r = reidc.profile(artifact, batch, mode, ghz=ghz, json_out=json_out, progress=_progress)
    except (UserError, EngineError) as e:
        _fail(e)
    t = Table("kernel", "calls", "ms/call", "ms", "share", "unit", "GMAC/s", "of peak")
    for k in r["kernels"][:top]:
        t.add_row(escape(k["kernel"]), str(k["calls"]), f"{k['ms_per_call']:.3f}", f"{k['ms']:.3f}",
                  f"{k['share']:.1%}", k.get("unit", ""), f"{k['gmac_per_s']:.0f}" if "gmac_per_s" in k else "",
                  f"{k['peak_fraction']:.0%}" if "peak_fraction" in k else "")
    out.print(t)
    p = r["peak_macs_per_cycle_per_core"]
    out.print(f"{r['model']} ({r['target']}), entry {r['entry']}, batch {r['batch']}, {r['threads']} threads: whole run "
              f"{r['whole_run_ms']:.2f} ms; its {len(r['kernels'])} kernels timed alone {r['kernels_alone_ms']:.2f} ms; "
              f"the rest {r['remainder_ms']:.2f} ms (the VM's {r['vm_builtin_calls']} builtin calls, caches a kernel "
              f"finds cold in a run). Peak = threads x {r['ghz']} GHz ({r['ghz_source']}) x MACs/cycle: fp32 "
              f"{p['fp32']:.0f}, int8 {p['int8']:.0f}, bf16 {p['bf16']:.0f}, binary {p['binary']:.0f}")
    if json_out:
        out.print(f"wrote {json_out}")


@app.command()
def demo(model: str = typer.Option("cmnas-resnet50", help="zoo model"),
         workdir: Path = typer.Option(Path("demo"), help="where the checkpoint and artifact go")):
    """The main job on the embedded default: export, compile for this machine, verify, compare with PyTorch."""
    try:
        man, r = reidc.demo(model, workdir, _progress)
    except (UserError, EngineError) as e:
        _fail(e)
    out.print(f"{model} at {man['input_shape'][1]}x{man['input_shape'][2]}, batch 1, 2 threads: reidc {r['reidc_ms']:.1f} ms, "
              f"PyTorch eager {r['torch_eager_ms']:.1f} ms -> speedup {r['speedup_vs_torch_eager']:.2f}x "
              f"(features agree to {r['max_rel_err']:.1e})")


def main():  # pragma: no cover
    """The `reidc` script. After Ctrl-C the process ends at once once its one line is out:
    interpreter teardown would run TVM's destructors and join worker threads mid-task."""
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C outside a command (while starting up or exiting)
        err.print("interrupted", highlight=False)
        raise SystemExit(130)  # noqa: B904
    except SystemExit as e:
        if e.code == 130:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
