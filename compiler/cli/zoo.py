"""The zoo: `reidc zoo list|export|train`, and `reidc demo` (a zoo model exported, compiled,
verified and timed against PyTorch)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import api as reidc
from ..api import EngineError, UserError
from .common import _fail, _hw, _progress, out
from .toplevel import app

zoo_app = typer.Typer(no_args_is_help=True, help="Deterministic zoo checkpoints.")
app.add_typer(zoo_app, name="zoo")


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
              objective: str = typer.Option("cmnas", help="training loss: cmnas (CM-NAS's) | reidc (reidc's older one)"),
              gal: str = typer.Option("none", help="BiRe-ID's training of binarized convs: none | kr | fr | kr,fr "
                                                   "(KR-GAL, FR-GAL)")):
    """Train a zoo network on a re-ID dataset (CPU, minutes), to judge compiles by accuracy.

    Writes a checkpoint folder (`reidc compile` loads it) and train.json: the settings, the loss
    trace, and the test protocol's rank-1/mAP of the untrained and the trained network."""
    try:
        res = reidc.train_zoo(name, output, dataset=dataset, split=split, steps=steps, input_size=_hw(input_size),
                              seed=seed, progress=_progress, objective=objective, gal=gal)
    except (ValueError, UserError) as e:
        _fail(e)
    out.print(f"wrote {output} ({res['model']}, {res['steps']} steps on {res['dataset_name']}, "
              f"{res['seconds']['train']:.0f} s training)")
    for setting, after in res["test"]["after"].items():
        before, ci = res["test"]["before"][setting], res["test"]["mAP_ci95"][setting]
        out.print(f"  test {setting}: rank-1 {before['rank1']:.3f} -> {after['rank1']:.3f}, "
                  f"mAP {before['mAP']:.3f} -> {after['mAP']:.3f} (untrained -> trained), trained mAP 95% CI "
                  f"{ci[0]:.3f}-{ci[1]:.3f}")


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
