"""fast-reid checkpoints as fast-reid writes them: the network built with fast-reid's own code
(fastreid 1.4.0, installed --no-deps by the set-up), given random weights and non-trivial BN,
IN and GeM parameters, saved by its `Checkpointer` with the optimizer and LR schedulers a
training run has, its config dumped as `config.yaml` beside it. reidc compiles that folder
and its features are compared with fast-reid's `Baseline` in eval mode on raw 0-255 images."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reidc
from reidc.compiler.base.errors import ArchError, CheckpointError
from reidc.compiler.compile import CompileOptions, load_source
from reidc.compiler.ir import Op
from reidc.compiler.ir.interp import run_all
from reidc.frontend.fastreid_config import read_fastreid_config
from fastreid_runs import SIZE, fastreid_features, fastreid_run, images


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def sbs_r50(tmp_path_factory):
    """fast-reid's SBS R50-IBN (Base-SBS.yml): IBN, non-local blocks, GeM with learned p, BN neck."""
    folder = tmp_path_factory.mktemp("sbs_r50_ibn")
    model, _ = fastreid_run(folder, "50x", ibn=True, nl=True, pool="GeneralizedMeanPoolingP")
    return folder, model


def test_sbs_r50_ibn_checkpoint_compiles_and_matches_fastreid(sbs_r50, tmp_path):
    folder, model = sbs_r50
    art = reidc.compile(folder / "model_final.pth", "host", output=tmp_path / "art")  # config.yaml found beside it
    m = art.manifest
    assert m["family"] == "fast-reid" and m["model"] == "fastreid-r50-ibn-nl" and m["modes"] == ["main"]
    assert m["input_shape"] == [3, *SIZE] and "0-255" in m["input_contract"]
    assert m["pass_stats"]["fold_input_norm_into_conv"] == 1
    x = images()
    assert rel(art.run(x), fastreid_features(model, x)) < 1e-4
    # re-verification rebuilds the network from the spec in the manifest, not the config file
    (folder / "config.yaml").rename(folder / "config.moved")
    try:
        assert reidc.verify(tmp_path / "art")["verification"]["status"] == "passed"
    finally:
        (folder / "config.moved").rename(folder / "config.yaml")


def test_sbs_r50_ibn_in_int8_keeps_fastreids_features(sbs_r50, tmp_path):
    folder, model = sbs_r50
    art = reidc.compile(folder / "model_final.pth", "host", output=tmp_path / "art", precision="int8",
                        calibration_images=4)
    layers = art.manifest["precision"]["layers"]
    fp32 = [la["layer"] for la in layers if la["precision"] != "int8"]
    assert len(layers) == 73 and len(fp32) == 20 and all(".NL_" in name for name in fp32)
    # every backbone conv in int8, the stem too (0-255 pixels are exact in uint8); the non-local
    # blocks' 1-channel convs stay fp32 (the int8 kernel works in groups of 4 and blocks of 16)
    x = images(4)
    got, want = art.run(x), fastreid_features(model, x)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99


@pytest.mark.parametrize("values", [
    dict(depth="18x", se=True, pool="GlobalMaxPool", emb=64, last_stride=2),
    dict(depth="34x", ibn=True, pool="AdaptiveAvgMaxPool", bnneck=False),
    dict(depth="50x", se=True, pool="GeneralizedMeanPooling", bnneck=False, emb=128),
    dict(depth="101x", pool="FastGlobalAvgPool"),
    dict(depth="50x", ibn=True, nl=True, pool="GeneralizedMeanPoolingP"),
], ids=["r18-se-max-emb-ls2", "r34-ibn-avgmax", "r50-se-gem-emb", "r101-avg", "r50-ibn-nl-gemp (SBS)"])
def test_fastreid_configs_capture_to_its_features(values, tmp_path):
    """Each config's IR (captured, then through the pass pipeline) in reidc's interpreter
    against fast-reid's forward."""
    model, _ = fastreid_run(tmp_path, **values)
    torch_model, g, modes, facts = load_source(tmp_path / "model_final.pth", CompileOptions())
    x = images(2)
    want = fastreid_features(model, x)
    assert rel(run_all(g, {"x": x})[g.outputs[0]], want) < 1e-4
    from reidc.compiler.passes.pipeline import run_pipeline
    opt = run_pipeline(g, modes[0])
    assert opt.count(Op.BATCH_NORM) == 0 and opt.count(Op.AFFINE) == int(values.get("bnneck", True))
    assert [n.source for _, n in opt.items() if n.attr("pad_value") is not None] == ["backbone.conv1"]
    assert rel(run_all(opt, {"x": x})[opt.outputs[0]], want) < 1e-4
    assert (opt.count(Op.INSTANCE_NORM) > 0) == bool(values.get("ibn"))
    assert (opt.count(Op.SCALE_CHANNELS) > 0) == bool(values.get("se") or values.get("nl"))
    assert opt.count(Op.MULTIPLY) == (5 if values.get("nl") else 0)   # R50: 2 + 3 non-local blocks


@pytest.mark.parametrize("values", [
    dict(backbone="osnet", depth="x0_25", ibn=True, pool="GeneralizedMeanPoolingP"),
    dict(backbone="osnet", depth="x0_75", pool="GlobalMaxPool", emb=64, bnneck=False),
    dict(backbone="mobilenetv2", depth="0.35x", pool="GeneralizedMeanPooling"),
    dict(backbone="mobilenetv2", depth="0.1x"),
], ids=["osnet-x0_25-ibn-gemp", "osnet-x0_75-max-emb", "mobilenetv2-0.35x-gem", "mobilenetv2-0.1x"])
def test_fastreid_mobile_backbones_capture_to_its_features(values, tmp_path):
    """fast-reid's OSNet (with IBN) and MobileNetV2 backbones, built from its config, through
    the pass pipeline in the interpreter against its forward; the input normalisation still
    folds into the stem conv."""
    model, _ = fastreid_run(tmp_path, **values)
    _, g, modes, facts = load_source(tmp_path / "model_final.pth", CompileOptions())
    assert facts["model"] == f"fastreid-{values['backbone']}_{values['depth']}" + ("-ibn" if values.get("ibn") else "")
    from reidc.compiler.passes.pipeline import run_pipeline
    opt = run_pipeline(g, modes[0])
    x = images(2)
    assert opt.count(Op.BATCH_NORM) == 0 and opt.count(Op.DEPTHWISE_CONV2D) > 0
    assert [n.source for _, n in opt.items() if n.attr("pad_value") is not None] == ["backbone.conv1.conv" if
                                                                                      values["backbone"] == "osnet"
                                                                                      else "backbone.features.0.0"]
    assert (opt.count(Op.INSTANCE_NORM) > 0) == bool(values.get("ibn"))
    assert (opt.count(Op.CLAMP) > 0) == (values["backbone"] == "mobilenetv2")   # ReLU6
    assert rel(run_all(opt, {"x": x})[opt.outputs[0]], fastreid_features(model, x)) < 1e-4


def test_fastreid_osnet_ibn_compiles_for_the_host(tmp_path):
    model, _ = fastreid_run(tmp_path / "run", "x0_25", ibn=True, pool="GeneralizedMeanPoolingP", backbone="osnet")
    art = reidc.compile(tmp_path / "run" / "model_final.pth", "host", output=tmp_path / "art")
    assert art.manifest["model"] == "fastreid-osnet_x0_25-ibn"
    x = images()
    assert rel(art.run(x), fastreid_features(model, x)) < 1e-4


def test_r18_se_compiles_for_the_host(tmp_path):
    model, _ = fastreid_run(tmp_path / "run", "18x", se=True, ibn=True, pool="GeneralizedMeanPoolingP", emb=64)
    art = reidc.compile(tmp_path / "run" / "model_final.pth", "host", output=tmp_path / "art")
    x = images()
    assert rel(art.run(x), fastreid_features(model, x)) < 1e-4


def _config(tmp_path, text: str):
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("yaml_text, key, value", [
    ("MODEL:\n  BACKBONE:\n    WITH_NL: maybe\n", "MODEL.BACKBONE.WITH_NL", "'maybe'"),
    ("MODEL:\n  BACKBONE:\n    DEPTH: 152x\n", "MODEL.BACKBONE.DEPTH", "'152x'"),
    ("MODEL:\n  BACKBONE:\n    NAME: build_regnet_backbone\n", "MODEL.BACKBONE.NAME", "'build_regnet_backbone'"),
    ("MODEL:\n  BACKBONE:\n    NAME: build_osnet_backbone\n", "MODEL.BACKBONE.DEPTH", "'50x'"),
    ("MODEL:\n  BACKBONE:\n    NAME: build_osnet_backbone\n    DEPTH: x1_0\n", "MODEL.BACKBONE.FEAT_DIM", "2048"),
    ("MODEL:\n  BACKBONE:\n    NAME: build_mobilenetv2_backbone\n    DEPTH: 1.4x\n", "MODEL.BACKBONE.DEPTH",
     "'1.4x'"),
    ("MODEL:\n  BACKBONE:\n    NORM: GN\n", "MODEL.BACKBONE.NORM", "'GN'"),
    ("MODEL:\n  HEADS:\n    POOL_LAYER: Identity\n", "MODEL.HEADS.POOL_LAYER", "'Identity'"),
    ("MODEL:\n  META_ARCHITECTURE: MGN\n", "MODEL.META_ARCHITECTURE", "'MGN'"),
    ("MODEL:\n  BACKBONE:\n    DEPTH: 18x\n", "MODEL.BACKBONE.FEAT_DIM", "2048"),
    ("MODEL:\n  PIXEL_STD: [1, 0, 1]\n", "MODEL.PIXEL_STD", "[1, 0, 1]"),
])
def test_a_config_value_reidc_does_not_support_is_named(tmp_path, yaml_text, key, value):
    with pytest.raises(ArchError) as e:
        read_fastreid_config(_config(tmp_path, yaml_text))
    assert f"{key}: {value} is not supported" in str(e.value) and "\n" not in str(e.value)


def test_base_configs_merge_under_the_file(tmp_path):
    (tmp_path / "Base-SBS.yml").write_text("MODEL:\n  BACKBONE:\n    WITH_IBN: true\n    DEPTH: 34x\n"
                                           "    FEAT_DIM: 512\n  HEADS:\n    POOL_LAYER: GeneralizedMeanPoolingP\n")
    (tmp_path / "sub").mkdir()
    spec = read_fastreid_config(_config(tmp_path / "sub", "_BASE_: ../Base-SBS.yml\nMODEL:\n  BACKBONE:\n"
                                                          "    DEPTH: 18x\nINPUT:\n  SIZE_TEST: [384, 128]\n"))
    assert (spec.depth, spec.with_ibn, spec.pool, spec.input_size) == (18, True, "gem_learned", (384, 128))
    with pytest.raises(ArchError, match="not a fast-reid config"):
        read_fastreid_config(_config(tmp_path, "- just\n- a list\n"))


def test_a_config_that_does_not_fit_the_checkpoint_is_refused_before_anything_is_written(tmp_path):
    fastreid_run(tmp_path / "run", "18x", ibn=True)
    other = _config(tmp_path, "MODEL:\n  BACKBONE:\n    DEPTH: 18x\n    FEAT_DIM: 512\n")  # no IBN
    with pytest.raises(CheckpointError, match=r"missing, first 'backbone.layer1.0.bn1.weight'; the checkpoint "
                       r"holds 'backbone.layer1.0.bn1.IN.weight'.*does the config belong"):
        reidc.compile(tmp_path / "run" / "model_final.pth", "host", output=tmp_path / "art", fastreid_config=other)
    assert not (tmp_path / "art").exists()
    r = subprocess.run([str(Path(sys.executable).parent / "reidc"), "compile", str(tmp_path / "run" / "model_final.pth"), "-o", str(tmp_path / "art"),
                        "--fastreid-config", str(other)], capture_output=True, text=True)
    assert r.returncode != 0 and "does the config belong" in r.stderr and not (tmp_path / "art").exists()


def test_the_spec_reidc_records_reads_back(tmp_path):
    spec = read_fastreid_config(_config(tmp_path, "MODEL:\n  HEADS:\n    WITH_BNNECK: true\n"))
    back = tmp_path / "spec.json"
    back.write_text(json.dumps(spec.to_json()))
    assert read_fastreid_config(back) == spec
