"""`reidc targets` and `reidc compile`: a checkpoint to a verified artifact."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .. import api as reidc
from ..api import UserError
from .common import _fail, _hw, _progress, out
from .toplevel import app


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
                tuning_db: Optional[Path] = typer.Option(None, help="apply the records of a `reidc tune` database "
                                                                    "(its kernels, and the Winograd algorithm it "
                                                                    "timed fastest per 3x3 conv shape)"),
                weights: str = typer.Option("model", help="a training checkpoint's weights: model, or ema (CM-NAS)"),
                feature: str = typer.Option("bnneck", help="bnneck: the feature after the BNNeck BN (CM-NAS's feat); "
                                                           "pool: before it (its global_feat)"),
                input_size: Optional[str] = typer.Option(None, help="HxW the network takes (default: the spec's, "
                                                                    "256x128 for a bare weights file)"),
                precision: str = typer.Option("fp32", help="fp32 | int8 | bf16 | auto: the real-valued layers (binary "
                                                           "convs stay 1-bit); int8 is calibrated, int8 and bf16 (AMX "
                                                           "tiles, AVX512-BF16 vdpbf16ps, tensor cores on CUDA "
                                                           "sm_80+, elsewhere float32 convs of the bf16 values) are "
                                                           "verified by feature cosine; auto builds fp32, "
                                                           "int8 (and bf16 where a bf16 unit runs it) and keeps the "
                                                           "fastest here"),
                calibration: str = typer.Option("synthetic", help="int8 calibration images: synthetic (rendered "
                                                                  "persons) or a folder (visible/ and infrared/ "
                                                                  "subfolders for a cross-modality model)"),
                calibration_images: int = typer.Option(16, help="int8: calibration images per entry"),
                retrieval: Optional[str] = typer.Option(None, help="int8/bf16: also verify rank-1/mAP on this dataset's "
                                                                   "test protocol (synthetic, sysu:PATH, regdb:PATH) "
                                                                   "within 0.5 points of PyTorch fp32"),
                int8_weight_bits: Optional[int] = typer.Option(None, help="int8: bits of the weights (default: the "
                                                                         "target's fastest, 6 on AVX2 without VNNI "
                                                                         "(7 where 6 miss the budget), else 8; "
                                                                         "AVX2 takes up to 7)"),
                winograd: bool = typer.Option(True, help="fp32 stride-1 3x3 convs as Winograd F(4x4, 3x3) or "
                                                         "F(2x2, 3x3) on x86, bf16 ones as F(2x2) on AVX512-BF16 "
                                                         "(faster; their weights take 4 or 16/9 the bytes); "
                                                         "--no-winograd keeps every conv direct"),
                winograd_tiles: str = typer.Option("auto", help="which 3x3 convs take Winograd F(4x4): auto (those "
                                                                "whose weights stay in the caches; F(2x2) beyond), "
                                                                "4 (wherever faster: the most speed, the biggest "
                                                                "library) or 2 (F(2x2) only); with --tuning-db, "
                                                                "only for conv shapes `reidc tune` did not time")):
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
                            precision=precision, calibration=calibration, winograd=winograd,
                            winograd_tiles=winograd_tiles,
                            calibration_images=calibration_images, retrieval=retrieval,
                            int8_weight_bits=int8_weight_bits).manifest
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
    wino = Counter(("bf16 " if r["precision"] == "bf16" else "") + r["algorithm"][len("winograd "):]
                   for r in prec.get("layers", []) if r.get("algorithm"))
    if wino:
        # bf16 convs take F(2x2) only (passes/choose_winograd.py): --winograd-tiles is fp32's choice
        measured = (man.get("tuning") or {}).get("measured_algorithms")
        trade = ("--no-winograd trades speed for size" if all(k.startswith("bf16") for k in wino) else
                 f"{len(measured)} conv shapes as `reidc tune` timed fastest, --no-winograd trades speed for size"
                 if measured else
                 "--winograd-tiles 4 trades size for speed, --winograd-tiles 2 or --no-winograd speed for size")
        out.print(f"  3x3 convs as Winograd: " + ", ".join(f"{c} {a}" for a, c in sorted(wino.items()))
                  + f"; library {w['artifact_bytes'] / 1e6:.1f} MB "
                  f"({w['fp32_weight_bytes'] / 1e6:.1f} MB of fp32 weights; {trade})")
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
