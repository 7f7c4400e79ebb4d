"""`reidc search`: BN splits and binarized stages by validation accuracy and measured latency."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .. import api as reidc
from ..api import UserError
from .common import _duration, _fail, _progress, err, out
from .toplevel import app


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
           latency_holdout: int = typer.Option(4, help="random candidates measured to test the latency model on "
                                                       "(never fitted on; 0: none)"),
           seed: int = typer.Option(0, help="seed for data, training and search"),
           rpc_tracker: Optional[str] = typer.Option(None, help="HOST:PORT of a TVM RPC tracker to measure through"),
           rpc_key: Optional[str] = typer.Option(None, help="device key registered with the tracker"),
           latency_cache: Optional[Path] = typer.Option(None, help="latency cache file (default: in REIDC_CACHE)"),
           objective: str = typer.Option("cmnas", help="supernet's loss: cmnas (CM-NAS's) | reidc (reidc's older one)"),
           standalone_steps: Optional[int] = typer.Option(None, help="the pick's stand-alone fine-tuning steps before "
                                                                      "its test metrics (default: train-steps / 4; 0: "
                                                                      "report the supernet child's)"),
           train_procs: int = typer.Option(1, help="processes training the supernet (torch.distributed; the same "
                                                   "result as one, up to float rounding)"),
           standalone_check: int = typer.Option(4, help="candidates fine-tuned stand-alone, the pick included, to "
                                                        "rank-correlate with the supernet (Kendall tau)"),
           method: str = typer.Option("evolution", help="evolution (over the supernet) | differentiable (CM-NAS's: "
                                                        "a weight per choice, by gradient; results in "
                                                        "differentiable-<mode>/)"),
           arch_steps: int = typer.Option(150, help="--method differentiable: alternating weight/architecture steps"),
           latency_weight: float = typer.Option(0.5, help="--method differentiable, latency-aware: weight of the "
                                                          "expected latency (relative to the all-real network's)"),
           memory_weight: float = typer.Option(0.0, help="--method differentiable, latency-aware: weight of the "
                                                         "expected weight memory (relative to the all-real network's)"),
           gal: str = typer.Option("none", help="BiRe-ID's training in the stand-alone fine-tunes: none | kr | fr | "
                                                "kr,fr (KR-GAL, FR-GAL)")):
    """Search BN splits and binarized stages by validation accuracy and measured latency."""
    try:
        if (rpc_tracker is None) != (rpc_key is None):
            raise ValueError("--rpc-tracker and --rpc-key go together")
        h, w = (int(v) for v in input_size.lower().split("x"))
        res = reidc.search(output, latency_aware=latency_aware, dataset=dataset, input_size=(h, w), target=target,
                           scenario=scenario, budget_ms=budget_ms, margin=margin, time_limit_s=_duration(time_limit),
                           train_steps=train_steps, population=population, generations=generations,
                           measure_front=measure_front, latency_table=latency_table, seed=seed,
                           latency_holdout=latency_holdout, train_procs=train_procs,
                           rpc=(rpc_tracker, rpc_key) if rpc_tracker else None, latency_cache=latency_cache,
                           objective=objective, standalone_steps=standalone_steps, standalone_check=standalone_check,
                           method=method, arch_steps=arch_steps, latency_weight=latency_weight,
                           memory_weight=memory_weight, gal=gal, progress=_progress)
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
    lm = res["latency_model"]
    if lm["held_out"] and lm["held_out"]["candidates"]:
        h = lm["held_out"]
        out.print(f"latency ({lm['predictor']}) on {h['candidates']} held-out random candidates: mean error "
                  f"{100 * h['mean_abs_rel_err']:.1f}%, max {100 * h['max_abs_rel_err']:.1f}%, "
                  f"{100 * h['within_10pct']:.0f}% within +-10%")
    if e["candidates"]:
        out.print(f"latency ({lm['predictor']}) on {e['candidates']} measured Pareto candidates: mean error "
                  f"{100 * e['mean_abs_rel_err']:.1f}%, max {100 * e['max_abs_rel_err']:.1f}%")
    d = res.get("differentiable")
    if d:
        lat = (f"; its expected latency (linear in the weights) {d['expected_ms_of_pick']:.2f} ms, predicted "
               f"{d['predicted_ms_of_pick']:.2f} ms" if d["expected_ms_of_pick"] is not None else "")
        out.print(f"differentiable search: {d['steps']} steps in {d['seconds']:.0f} s; the pick is the argmax of the "
                  f"architecture weights{lat}")
    out.print(f"search wall time (without training and the final phase): {res['search_seconds']:.0f} s")
    out.print(f"checkpoint: {p['checkpoint']}  (compiled and verified: {p['artifact']})")
