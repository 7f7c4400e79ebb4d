"""torchreid checkpoints as torchreid writes them (its model code and its `save_checkpoint`,
tests/torchreid_runs.py): reidc's features against torchreid's model in eval mode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import reidc
from reidc.compiler.base.errors import ArchError, CheckpointError, UnsupportedOpError
from reidc.compiler.compile import CompileOptions, load_source
from reidc.compiler.ir import Op
from reidc.compiler.ir.interp import run_all
from reidc.compiler.passes.pipeline import run_pipeline
from torchreid_runs import features, torchreid_run

SIZE = (64, 32)


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def images(n=2, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 3) + SIZE).astype(np.float32)


@pytest.mark.parametrize("arch, wrapped", [("osnet_x0_25", True), ("osnet_ibn_x1_0", False), ("osnet_ain_x0_5", False),
                                           ("mobilenetv2_x1_0", True), ("resnet50", False), ("resnet50_fc512", True)])
def test_torchreid_architectures_capture_to_its_features(tmp_path, arch, wrapped):
    """The training dict its engine saves (under DataParallel's module. where `wrapped`), through
    capture and the pass pipeline, in reidc's interpreter."""
    model, path = torchreid_run(tmp_path, arch, data_parallel=wrapped)
    _, g, modes, facts = load_source(path, CompileOptions(torchreid_arch=arch, input_size=SIZE))
    assert facts["family"] == "torchreid" and modes == ("main",)
    x = images()
    opt = run_pipeline(g, modes[0])
    assert opt.count(Op.BATCH_NORM) == 0
    assert (opt.count(Op.DEPTHWISE_CONV2D) > 0) == (not arch.startswith("resnet"))
    assert (opt.count(Op.INSTANCE_NORM) > 0) == ("ibn" in arch or "ain" in arch)
    assert (opt.count(Op.CLAMP) > 0) == arch.startswith("mobilenet")   # ReLU6
    assert rel(run_all(opt, {"x": x})[opt.outputs[0]], features(model, x)) < 1e-4


@pytest.fixture(scope="module")
def osnet(tmp_path_factory):
    d = tmp_path_factory.mktemp("osnet")
    return torchreid_run(d, "osnet_x1_0")


def test_osnet_compiles_runs_and_reverifies(osnet, tmp_path):
    model, path = osnet
    art = reidc.compile(path, "host", output=tmp_path / "art", torchreid_arch="osnet_x1_0", input_shape=(3,) + SIZE)
    assert art.manifest["model"] == "osnet_x1_0" and art.manifest["arch"]["torchreid_arch"] == "osnet_x1_0"
    x = images(3)
    assert rel(art.run(x), features(model, x)) < 1e-4
    assert reidc.verify(tmp_path / "art")["verification"]["status"] == "passed"


@pytest.mark.parametrize("arch", ["osnet_ain_x1_0", "mobilenetv2_x1_4"])
def test_osnet_ain_and_mobilenetv2_compile_and_run(arch, tmp_path):
    """AIN's InstanceNorms inside the residual branch; MobileNetV2 x1.4's widths (44, 22, 33, 89,
    ...) that no channel block divides."""
    model, path = torchreid_run(tmp_path, arch)
    art = reidc.compile(path, "host", output=tmp_path / "art", torchreid_arch=arch, input_shape=(3,) + SIZE)
    assert art.manifest["verification"]["status"] == "passed"
    x = images(3)
    assert rel(art.run(x), features(model, x)) < 1e-4


def test_a_model_zoo_state_dict_compiles_too(osnet, tmp_path):
    model, _ = osnet
    torch.save(model.state_dict(), tmp_path / "osnet_x1_0_market.pth")
    art = reidc.compile(tmp_path / "osnet_x1_0_market.pth", "host", output=tmp_path / "art",
                        torchreid_arch="osnet_x1_0", input_shape=(3,) + SIZE, verify=False)
    x = images()
    assert rel(art.run(x), features(model, x)) < 1e-4


def test_osnet_int8_keeps_its_features(osnet, tmp_path):
    model, path = osnet
    art = reidc.compile(path, "host", output=tmp_path / "art", torchreid_arch="osnet_x1_0", input_shape=(3,) + SIZE,
                        precision="int8", calibration_images=4)
    layers = art.manifest["precision"]["layers"]
    assert any(la["precision"] == "int8" for la in layers)
    x = np.concatenate([images(2, seed=3), images(2, seed=4)])
    got, want = art.run(x), features(model, x)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99


def test_unknown_and_mismatched_architectures_are_named(osnet, tmp_path):
    _, path = osnet
    with pytest.raises(ArchError, match="'osnet_x2_0': reidc builds osnet_x1_0"):
        reidc.compile(path, "host", output=tmp_path / "a", torchreid_arch="osnet_x2_0")
    with pytest.raises(CheckpointError, match=r"do not fit torchreid's osnet_ain_x1_0: .* missing, first "
                                              r"'conv2.0.conv2.0.layers.0.conv1.weight'"):
        reidc.compile(path, "host", output=tmp_path / "a", torchreid_arch="osnet_ain_x1_0")
    with pytest.raises(CheckpointError, match=r"do not fit torchreid's resnet50: .* missing, first 'conv1.weight'.*"
                                              r"holds 'conv1.conv.weight'"):
        reidc.compile(path, "host", output=tmp_path / "a", torchreid_arch="resnet50")
    assert not (tmp_path / "a").exists()


def test_a_dilated_conv_is_refused_by_name_and_nothing_is_written(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2, dilation=2))
    with pytest.raises(UnsupportedOpError, match=r"dilation=\(2, 2\) groups=2 at .*undilated"):
        reidc.compile(model, "host", output=tmp_path / "a", input_shape=(4, 8, 8))
    assert not (tmp_path / "a").exists()
