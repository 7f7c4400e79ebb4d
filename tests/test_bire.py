"""Binarized networks end to end: models, the four binary passes (IR, numbers, where they
fire), compilation with exact sign-flip accounting, and a BNN written outside the zoo."""
import subprocess
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidc.compiler.compile import CompileOptions, compile_checkpoint
from reidc.compiler.ir import Graph, Node, Op, verify
from reidc.compiler.passes.binary_math import binary_weight_scale, sign_threshold
from reidc.compiler.passes.detect_binary_conv import detect_binary_conv
from reidc.compiler.passes.pipeline import run_pipeline
from reidc.compiler.runtime import Compiled
from reidc.frontend.arch import ArchSpec, bn_names
from reidc.frontend.bire import binarize
from reidc.frontend.capture import capture_module
from reidc.frontend.checkpoint import load_checkpoint, save_checkpoint
from reidc.frontend.zoo import zoo_model
from ir_interp import run_ir

SMALL = (64, 32)
X = np.random.default_rng(0).standard_normal((4, 3, 64, 32), dtype=np.float32)
MIX = np.array([0, 1, 1, 0], np.int32)


@pytest.fixture(scope="module")
def bire():
    return {s: zoo_model("bire-resnet18", s, seed=1, input_size=SMALL) for s in ("all-shared", "random:5")}


def _ref(model, mode):
    with torch.no_grad():
        return model(torch.from_numpy(X), torch.from_numpy(MIX) if mode == "mixed" else mode).numpy()


def test_spec_and_sign_convention():
    assert len(bn_names(18, "bire")) == 36 and len(bn_names(34, "bire")) == 68
    spec = ArchSpec(depth=18, split=(1,) * 36, family="bire", binary_stages=(False, True, True, True))
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert binarize(torch.tensor([-0.5, 0.0, 2.0])).tolist() == [-1.0, 1.0, 1.0]
    x = torch.tensor([-2.0, -0.5, 0.5, 2.0], requires_grad=True)
    binarize(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # straight-through inside [-1, 1]


def test_binary_math():
    w = np.array([[[[0.5]], [[-0.5]]], [[[-2.0]], [[2.0]]]], np.float32)
    signs, alpha = binary_weight_scale(w)
    assert signs.ravel().tolist() == [1, -1, -1, 1] and alpha.tolist() == [0.5, 2.0]
    assert binary_weight_scale(w * np.array([1, 1.1], np.float32)[None, :, None, None]) is None
    thr, flip = sign_threshold(np.array([2.0, -2.0, 0.0, 0.0]), np.array([1.0, 1.0, -1.0, 1.0]))
    assert thr[:2].tolist() == [-0.5, 0.5] and flip.tolist() == [0, 1, 0, 0]
    assert 1e30 < thr[2] and thr[3] < -1e30  # constant channels: always -1, never -1


@pytest.mark.parametrize("mode", ["visible", "infrared", "mixed"])
def test_binary_passes_ir_numbers_and_counts(bire, mode):
    m = bire["random:5"]
    st = Counter()
    g = run_pipeline(capture_module(m, (3,) + SMALL), mode, stats=st)
    assert st["detect_binary_conv"] == 16 and st["fold_bn_into_bconv"] == 16
    assert st["fold_sign_threshold"] == 16 and st["bitpack_weights"] == 16
    assert g.count(Op.BCONV2D) == 16 and g.count(Op.BITPACK) == 16
    assert g.count(Op.SIGN) == 0 and g.count(Op.BATCH_NORM) == 0 and g.count(Op.CONV2D) == 4  # stem + 3 shortcuts
    for _, n in g.items():
        if n.op == Op.BCONV2D:
            assert n.attrs["packed"].shape == n.attrs["signs"].shape[:1] + n.attrs["signs"].shape[2:] + (1 if n.attrs[
                "signs"].shape[1] <= 64 else n.attrs["signs"].shape[1] // 64,)
    out = run_ir(g, X, MIX if mode == "mixed" else None)
    np.testing.assert_allclose(out, _ref(m, mode), rtol=1e-4, atol=1e-4)


def test_binary_passes_do_not_fire_on_float_networks(small_r18):
    st = Counter()
    run_pipeline(capture_module(small_r18["all-split"], (3,) + SMALL), "mixed", stats=st)
    assert not any(st[k] for k in ("detect_binary_conv", "fold_bn_into_bconv", "fold_sign_threshold"))


def test_detect_needs_plus_minus_alpha_weights():
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 4, 6, 6), attrs={"name": "x"}))
    g.add("s", Node(Op.SIGN, ("x",), ("N", 4, 6, 6)))
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)  # not +-alpha
    g.add("c", Node(Op.CONV2D, ("s",), ("N", 8, 6, 6), attrs={"weight": w, "stride": (1, 1), "padding": (1, 1)}))
    g.outputs = ["c"]
    st = Counter()
    out = verify(detect_binary_conv(g, st))
    assert st["detect_binary_conv"] == 0 and "detect_binary_conv:skipped:weights are +-alpha per output channel" in st
    assert out.count(Op.CONV2D) == 1
    g2 = Graph("t2")
    for nid, n in g.items():
        g2.add(nid, n if nid != "c" else n.with_(attrs={**n.attrs, "weight": np.sign(w) * 0.3}))
    g2.outputs = ["c"]
    st = Counter()
    out = verify(detect_binary_conv(g2, st))
    assert st["detect_binary_conv"] == 1 and out.count(Op.BCONV2D) == 1 and out.count(Op.SIGN) == 0
    xin = np.random.default_rng(1).standard_normal((2, 4, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run_ir(out, xin), run_ir(g2, xin), rtol=1e-5, atol=1e-5)


def _compile(tmp_path, model, **kw):
    save_checkpoint(model, tmp_path / "ck")
    return compile_checkpoint(tmp_path / "ck", tmp_path / "art", CompileOptions(**kw)), Compiled(tmp_path / "art")


@pytest.mark.parametrize("split", ["all-shared", "random:5"])
def test_bire_resnet18_compiles_and_verifies_all_modes(tmp_path, bire, split):
    man, comp = _compile(tmp_path, bire[split])
    v = man["verification"]
    assert v["status"] == "passed" and max(v["max_rel_err"].values()) <= 1e-4
    assert man["binary_layers"] == 16 and len(man["bit_sites"]["visible"]) == 16
    for rows in v.get("sign_flips", {}).values():  # every reported flip started at a rounding-size value
        assert all(r["rounding_only"] and r["first_site_max_abs_presign"] < 1e-4 for r in rows)
    assert set(comp.modes) == {"visible", "infrared", "mixed"}
    # issue 13's size target for the default build; the library carries no DWARF (build.LINK_OPTIONS)
    w = man["weights"]
    assert w["fp32_weight_bytes"] >= 11.75 * w["artifact_bytes"], w
    sections = subprocess.run(["readelf", "-S", "-W", str(tmp_path / "art" / "model.so")], capture_output=True,
                              text=True, check=True).stdout
    assert ".text" in sections and ".debug_" not in sections


def test_partly_real_and_binary_downsample_variants(tmp_path):
    m = zoo_model("bire-resnet18", "random:2", seed=3, input_size=SMALL,
                  binary_stages=(True, False, True, True), binary_downsample=True)
    man, _ = _compile(tmp_path, m)
    assert man["binary_layers"] == 12 + 2  # 3 binary stages x 4 convs + 2 binary 1x1 shortcuts
    assert man["verification"]["status"] == "passed"
    assert load_checkpoint(tmp_path / "ck").spec.binary_stages == (True, False, True, True)


class UserBNN(nn.Module):
    """A BNN written outside reidc: torch.sign on activations, sign(W) * alpha in forward."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.stem = nn.Conv2d(3, 32, 3, 2, 1)
        self.bn_a = nn.BatchNorm2d(32)
        self.w = nn.Parameter(torch.randn(48, 32, 3, 3, generator=g))
        self.alpha = nn.Parameter(torch.rand(48, generator=g) + 0.5)
        self.bn_b = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)
        for bn in (self.bn_a, self.bn_b):
            bn.running_mean.uniform_(-0.2, 0.2, generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
        self.bn_b.running_var.mul_(32 * 9 * 0.5)

    def forward(self, x):
        y = self.stem(x)
        wb = torch.sign(self.w) * self.alpha.view(-1, 1, 1, 1)
        z = F.conv2d(torch.sign(self.bn_a(y)), wb, stride=2, padding=1)
        z = torch.relu(self.bn_b(z))
        return self.fc(z.mean(dim=(2, 3)))


def test_bnn_from_a_pt2_outside_the_zoo(tmp_path):
    m = UserBNN().eval()
    x = torch.randn(2, 3, 32, 32)
    torch.export.save(torch.export.export(m, (x,)), tmp_path / "bnn.pt2")
    man = compile_checkpoint(tmp_path / "bnn.pt2", tmp_path / "art")
    assert man["binary_layers"] == 1 and man["verification"]["status"] == "passed"
    with torch.no_grad():
        ref = m(x).numpy()
    got = Compiled(tmp_path / "art").run(x.numpy())
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4


class ChainBNN(nn.Module):
    """Binary convs in a row (bconv -> BN -> sign -> bconv): the second sign's threshold must
    land on the first bconv's integer accumulator. Some BN gains are negative (flipped bits)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.stem = nn.Conv2d(3, 32, 3, 2, 1)
        self.bn0 = nn.BatchNorm2d(32)
        self.w1 = nn.Parameter(torch.randn(64, 32, 3, 3, generator=g))
        self.a1 = nn.Parameter(torch.rand(64, generator=g) + 0.5)
        self.bn1 = nn.BatchNorm2d(64)
        self.w2 = nn.Parameter(torch.randn(64, 64, 3, 3, generator=g))
        self.a2 = nn.Parameter(torch.rand(64, generator=g) + 0.5)
        self.bn2 = nn.BatchNorm2d(64)
        with torch.no_grad():
            self.bn1.running_var.copy_(32 * 9 * self.a1 ** 2)
            self.bn1.running_mean.uniform_(-3, 3, generator=g)
            self.bn1.weight.copy_(torch.where(torch.arange(64) % 5 == 0, -1.0, 1.0))
            self.bn2.running_var.copy_(64 * 9 * self.a2 ** 2)

    def forward(self, x):
        y = torch.sign(self.bn0(self.stem(x)))
        y = F.conv2d(y, torch.sign(self.w1) * self.a1.view(-1, 1, 1, 1), padding=1)
        y = torch.sign(self.bn1(y))
        y = F.conv2d(y, torch.sign(self.w2) * self.a2.view(-1, 1, 1, 1), padding=1)
        return torch.relu(self.bn2(y)).mean(dim=(2, 3))


def test_binary_layers_chain_on_the_integer_accumulator(tmp_path):
    from reidc.frontend.capture import capture_exported
    m = ChainBNN().eval()
    x = torch.randn(4, 3, 32, 32)
    torch.export.save(torch.export.export(m, (x,)), tmp_path / "chain.pt2")
    st = Counter()
    g = run_pipeline(capture_exported(tmp_path / "chain.pt2"), "main", stats=st)
    # bn0 folds into the stem conv (so the first sign keeps threshold 0); bn1 lands on the accumulator
    assert st["detect_binary_conv"] == 2 and st["fold_shared_bn_into_conv"] == 1 and st["fold_sign_threshold"] == 0
    assert st["threshold_on_accumulator"] == 1
    acc = [n for _, n in g.items() if n.op == Op.BCONV2D and n.attr("accumulator")]
    assert len(acc) == 1 and acc[0].dtype == "int32"
    packs = [n for _, n in g.items() if n.op == Op.BITPACK and n.attrs["threshold"].dtype == np.int32]
    assert len(packs) == 1 and packs[0].attrs["flip"].sum() == 13  # the 13 channels with negative gain
    with torch.no_grad():
        np.testing.assert_allclose(run_ir(g, x.numpy()), m(x).numpy(), rtol=1e-4, atol=1e-5)
    man = compile_checkpoint(tmp_path / "chain.pt2", tmp_path / "art")
    assert man["verification"]["status"] == "passed" and man["binary_layers"] == 2
    with torch.no_grad():
        ref = m(x).numpy()
    got = Compiled(tmp_path / "art").run(x.numpy())
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4


class BinaryHead(nn.Module):
    """A binary dense layer (sign(feature) @ (sign(W) * alpha)^T) after a real feature extractor."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.stem = nn.Conv2d(3, 96, 3, 2, 1)
        self.bn = nn.BatchNorm1d(96)
        self.w = nn.Parameter(torch.randn(40, 96, generator=g))
        self.alpha = nn.Parameter(torch.rand(40, generator=g) + 0.5)
        self.bn_out = nn.BatchNorm1d(40)
        with torch.no_grad():
            self.bn.running_mean.uniform_(0.0, 0.3, generator=g)
            self.bn_out.running_var.copy_(96 * self.alpha ** 2)

    def forward(self, x):
        f = torch.relu(self.stem(x)).mean(dim=(2, 3))
        return self.bn_out(F.linear(torch.sign(self.bn(f)), torch.sign(self.w) * self.alpha.view(-1, 1)))


def test_binary_dense(tmp_path):
    from reidc.frontend.capture import capture_exported
    m = BinaryHead().eval()
    x = torch.randn(3, 3, 32, 32)
    torch.export.save(torch.export.export(m, (x,)), tmp_path / "head.pt2")
    st = Counter()
    g = run_pipeline(capture_exported(tmp_path / "head.pt2"), "main", stats=st)
    assert st["detect_binary_dense"] == 1 and st["fold_bn_into_bconv"] == 1 and st["fold_sign_threshold"] == 1
    (b,) = [n for _, n in g.items() if n.op == Op.BCONV2D]
    assert b.shape == ("N", 40) and b.attrs["signs"].shape == (40, 96, 1, 1) and b.attrs["packed"].shape == (40, 1, 1, 2)
    with torch.no_grad():
        ref = m(x).numpy()
    np.testing.assert_allclose(run_ir(g, x.numpy()), ref, rtol=1e-4, atol=1e-4)
    man = compile_checkpoint(tmp_path / "head.pt2", tmp_path / "art")
    assert man["verification"]["status"] == "passed" and man["binary_layers"] == 1
    got = Compiled(tmp_path / "art").run(x.numpy())
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-4
