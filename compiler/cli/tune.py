"""`reidc tune`: MetaSchedule over a model's kernels, and `--report` on a tuning database."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .. import api as reidc
from ..api import UserError
from .common import _fail, _progress, err, out
from .toplevel import app


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
         precision: str = typer.Option("fp32", help="the real-valued kernels to tune: fp32, int8 or bf16 (compile "
                                                    "with the same --precision to use the records)"),
         int8_weight_bits: Optional[int] = typer.Option(None, help="int8 weights' bits, as compile takes them"),
         calibration: str = typer.Option("synthetic", help="int8 calibration images, as compile takes them"),
         rpc_tracker: Optional[str] = typer.Option(None, help="HOST:PORT of a TVM RPC tracker to measure through"),
         rpc_key: Optional[str] = typer.Option(None, help="device key registered with the tracker"),
         timeout: float = typer.Option(30.0, help="seconds a candidate may run (and an RPC session may wait)"),
         cores: Optional[int] = typer.Option(None, help="the device's CPU cores (default: the threads candidates run with here, TVM_NUM_THREADS or every usable CPU; 4 via RPC)"),
         confirm_rounds: int = typer.Option(3, help="paired rounds re-measuring each task's best record against "
                                                    "reidc's default; compile applies it only if it wins (0: off)"),
         algorithms: bool = typer.Option(True, help="x86 fp32: first time each 3x3 conv shape as direct, F(2x2) and "
                                                    "F(4x4) Winograd; compile --tuning-db then builds the fastest"),
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
                         confirm_rounds=confirm_rounds, algorithms=algorithms,
                         precision=precision, int8_weight_bits=int8_weight_bits, calibration=calibration,
                         progress=_progress, on_stop_now=interrupted)
    except KeyboardInterrupt:  # the first Ctrl-C, after the batch; the second ends in on_stop_now
        interrupted()
        raise typer.Exit(130)
    except (UserError, ValueError) as e:
        _fail(e)
    how = "".join(f" {flag} {v}" for flag, v in (("--torchreid-arch", torchreid_arch), ("--fastreid-config", fastreid_config),
                                                   ("--arch", arch), ("--split-config", split_config),
                                                   ("--precision", None if precision == "fp32" else precision),
                                                   ("--int8-weight-bits", int8_weight_bits),
                                                   ("--calibration", None if calibration == "synthetic" else calibration))
                  if v)
    out.print(f"tuned {res['tasks']} tasks; {res['records']} records in {res['database']}; "
              f"`reidc compile {checkpoint}{how} --target {target} --tuning-db {db}` applies them")


def _tune_report(db: Path) -> None:
    try:
        data = reidc.tune_report(db)
    except UserError as e:
        _fail(e)
    for key, d in data.items():
        t = Table("task", "calls", "trials", "failed", "default ms", "tuned ms", "speedup", "share of run", "applies",
                  title=f"{key} ({d['preset']})")
        for r in d["rows"]:
            f = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
            t.add_row(r["task"][:60], str(r["calls"]), str(r["trials"]), str(r["failed"]), f(r["default_ms"]),
                      f(r["tuned_ms"]), "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      "-" if r["share"] is None else f"{100 * r['share']:.1f}%",
                      {"tuned": "tuned (paired)" if r["paired"] else "tuned", "default": "reidc default"}.get(
                          r["kept"], "best record (unchecked)"))
        out.print(t)
        out.print(f"kernel time per run: {d['total_default_ms']:.3f} ms default -> {d['total_ms']:.3f} ms tuned; "
                  f"plot: {d['plot']}")
        if d["algorithms"]:
            a = Table("batch", "3x3 conv (CxHxW->O)", "direct ms", "F(2x2) ms", "F(4x4) ms", "chosen",
                      "--winograd-tiles auto", "speedup", title=f"{key}: algorithms measured")
            f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            for r in d["algorithms"]:
                a.add_row(str(r["batch"]), r["conv"], f(r["ms"].get("direct")), f(r["ms"].get("winograd_f2")),
                          f(r["ms"].get("winograd_f4")), r["chosen"], r["policy"],
                          "-" if r["speedup"] is None else f"{r['speedup']:.2f}x")
            out.print(a)
        unchecked = sum(1 for r in d["rows"] if r["kept"] is None and r["tuned_ms"])
        if unchecked:
            out.print(f"{unchecked} tasks' tuned figures are the search's minimum, not re-measured in pairs "
                      "against the default (tuned before reidc did that, or interrupted): they overstate the gain")
