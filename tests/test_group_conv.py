"""Grouped convs (PyTorch's 1 < groups, not depthwise) end to end: a tiny ResNeXt-style network
(tests/resnext_tiny.py) captured from the module and from torch.export, its BNs folded into the
grouped convs, built with reidc's conv schedule and compared with PyTorch."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

import reidc
from reidc.compiler.base.errors import UnsupportedOpError
from reidc.compiler.ir import Op
from reidc.compiler.lower.build import build, fused_module
from reidc.compiler.lower.to_relax import to_relax
from reidc.compiler.passes.convert_bf16 import convert_bf16
from reidc.compiler.passes.pipeline import run_pipeline
from reidc.compiler.passes.quantize_int8 import int8_blocker
from reidc.frontend.capture import capture_module, capture_program
from reidc.kernels.cpu_schedules import Conv2dNCHWc
from reidc.targets import get_target
from resnext_tiny import SHAPE, resnext_tiny

GROUPED = 4     # resnext_tiny's grouped convs; two of them have a BN after them


def rel(got, want) -> float:
    """The largest per-sample relative L2 error."""
    return max(float(np.linalg.norm(g - w) / np.linalg.norm(w)) for g, w in zip(got, want))


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n,) + SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def captured():
    """(model, its captured graph, the optimised main graph, the pass statistics)."""
    model = resnext_tiny()
    g = capture_module(model, SHAPE)
    stats = Counter()
    return model, g, run_pipeline(g, "main", stats=stats), stats


def test_capture_makes_grouped_convs_and_the_bns_fold_into_them(captured):
    _, g, opt, stats = captured
    assert g.count(Op.GROUP_CONV2D) == GROUPED and g.count(Op.DEPTHWISE_CONV2D) == 0
    assert sorted(int(n.attrs["groups"]) for _, n in g.items() if n.op == Op.GROUP_CONV2D) == [2, 4, 8, 24]
    assert stats["fold_shared_bn_into_group_conv"] == 2
    assert opt.count(Op.GROUP_CONV2D) == GROUPED
    assert opt.count(Op.BATCH_NORM) == 0 and opt.count(Op.AFFINE) == 0


def test_the_module_capture_builds_and_matches_pytorch(captured):
    model, _, opt, _ = captured
    host = get_target("host")
    mod = to_relax({"main": opt})
    fused = fused_module(mod, host)
    grouped = [f for gv, f in fused.functions.items() if "group_conv2d" in gv.name_hint]
    assert len(grouped) == GROUPED
    assert all(Conv2dNCHWc().apply(f, host.tvm_target(), False) is not None for f in grouped)  # not the fallback
    vm = relax.VirtualMachine(build(mod, host), tvm.cpu())
    x = images(3, seed=1)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape and rel(got, want) < 1e-4


def test_the_exported_program_compiles_and_verifies(tmp_path):
    """torch.export -> capture_program (the .pt2 path) -> build -> the compile's verification."""
    model = resnext_tiny(seed=1)
    ep = torch.export.export(model, (torch.zeros((2,) + SHAPE),))
    assert capture_program(ep).count(Op.GROUP_CONV2D) == GROUPED
    art = reidc.compile(model, "host", output=tmp_path / "art", input_shape=SHAPE)
    v = art.manifest["verification"]
    assert v["status"] == "passed" and max(v["max_rel_err"].values()) < 1e-4
    x = images(2, seed=2)
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert rel(art.run(x), want) < 1e-4


def test_grouped_convs_stay_fp32_at_reduced_precision_and_say_why(captured):
    _, _, opt, _ = captured
    grouped = [nid for nid, n in opt.items() if n.op == Op.GROUP_CONV2D]
    assert all("grouped conv" in int8_blocker(opt, nid) for nid in grouped)
    out, facts = convert_bf16(opt)
    assert out.count(Op.GROUP_CONV2D) == GROUPED
    kept = facts["fp32_convs"]
    assert all("grouped conv" in kept[opt[nid].source or nid] for nid in grouped)


def test_a_dilated_grouped_conv_is_refused_by_name():
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2, dilation=2)).eval()
    ep = torch.export.export(model, (torch.zeros(1, 4, 8, 8),))
    with pytest.raises(UnsupportedOpError, match=r"dilation=\(2, 2\) groups=2 at .*undilated"):
        capture_program(ep)
