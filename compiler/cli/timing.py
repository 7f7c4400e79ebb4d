"""`reidc bench` (reidc against other engines) and `reidc profile` (per-kernel time of an artifact)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api as reidc
from ..api import EngineError, UserError
from .common import _fail, _progress, err, out
from .toplevel import app


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
                                                     "onnxruntime_int8, openvino, openvino_bf16, openvino_int8; "
                                                     "a CUDA build: torch_compile,torch_fp16 on its GPU)"),
              json_out: Optional[Path] = typer.Option(None, "--json", help="write the rows as JSON")):
    """reidc vs PyTorch eager, torch.compile and ONNX Runtime, each in a process of its own, timed in turn."""
    from ..api.jobs import BUSY_CORES, ROUND_S, default_engines, engine_label
    try:
        engines = tuple(r.strip() for r in runtimes.split(",") if r.strip()) if runtimes else None
        if engines is None and no_compile:
            engines = tuple(r for r in default_engines(artifact) if r != "torch_compile")
        rows = reidc.bench(artifact, tuple(batch), modes=tuple(mode or ()) or None, checkpoint=checkpoint,
                           threads=threads, repeat=repeat, engines=engines,
                           progress=_progress, baseline=baseline, json_out=json_out)
    except (UserError, EngineError) as e:
        _fail(e)
    t = Table("model", "batch", "modality", "engine", "median ms", "min ms", "max ms", "spread",
              "reidc speedup", "rel err vs eager")
    errs = {"reidc": "max_rel_err", "torch_compile": "torch_compile_rel_err", "onnxruntime": "onnxruntime_rel_err",
            "baseline_reidc": "baseline_max_rel_err", "baseline_onnxruntime": "baseline_onnxruntime_rel_err",
            **{n: f"{n}_rel_err" for n in ("onnxruntime_int8", "openvino", "openvino_bf16", "openvino_int8",
                                           "torch_fp16", "torch_eager")}}
    for r in rows:
        for i, n in enumerate(r["worker_pids"]):
            label = engine_label(n) + (f" ({r['baseline_model']})" if n == "baseline_reidc" else "")
            if n == "torch_compile":
                label += f" (compile {r['torch_compile_compile_s']:.1f} s)"
            if f"{n}_precision" in r and n not in ("onnxruntime_int8", "torch_fp16"):  # their labels say it
                label += f" ({r[n + '_precision']})"
            if f"{n}_cos_min" in r:
                label += f" cos {r[n + '_cos_min']:.4f}"
            t.add_row(*((r["model"], str(r["batch"]), r["modality"]) if i == 0 else ("", "", "")), label,
                      f"{r[n + '_ms']:.2f}", f"{r[n + '_min_ms']:.2f}", f"{r[n + '_max_ms']:.2f}",
                      f"{r[n + '_spread']:.0%}", "" if n == "reidc" else f"{r['speedup_vs_' + n]:.2f}x",
                      f"{r[errs[n]]:.1e}" if errs.get(n) in r else "")
    out.print(t)
    where = "on GPU 0 (each call uploads the input and downloads the features)" if rows and rows[0]["device"] == "cuda" \
        else f"{threads} thread(s)"
    out.print(f"each engine in a process of its own, {where}, timed in turn: {repeat} rounds of about "
              f"{ROUND_S} s per engine, warm-up excluded; ms per call; spread (max-min)/median; "
              "speedup = engine median / reidc median" +
              (f"; errors against {rows[0]['reference']} (eager's own row: its error as timed)"
               if rows and "reference" in rows[0] else ""))
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
                ghz: Optional[float] = typer.Option(None, help="the clock for the peak (default: measured with an FMA loop on every thread)"),
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
                  f"{k['share']:.1%}", k.get("unit", "") + ("*" if k.get("effective") else ""), f"{k['gmac_per_s']:.0f}" if "gmac_per_s" in k else "",
                  f"{k['peak_fraction']:.0%}" if "peak_fraction" in k else "")
    out.print(t)
    p = r["peak_macs_per_cycle_per_core"]
    out.print(f"{r['model']} ({r['target']}), entry {r['entry']}, batch {r['batch']}, {r['threads']} threads: whole run "
              f"{r['whole_run_ms']:.2f} ms; its {len(r['kernels'])} kernels timed alone {r['kernels_alone_ms']:.2f} ms; "
              f"the rest {r['remainder_ms']:.2f} ms (the VM's {r['vm_builtin_calls']} builtin calls, caches a kernel "
              f"finds cold in a run). Peak = threads x {r['ghz']} GHz ({r['ghz_source']}) x MACs/cycle: fp32 "
              f"{p['fp32']:.0f}, int8 {p['int8']:.0f}, bf16 {p['bf16']:.0f}, binary {p['binary']:.0f}"
              + ("; fp32* / bf16*: Winograd, its rate in the direct conv's MACs (2.25x F(2x2)'s multiplies, "
                 "4x F(4x4)'s)"
                 if any(k.get("effective") for k in r["kernels"]) else ""))
    if json_out:
        out.print(f"wrote {json_out}")
