"""Winograd F(4x4, 3x3) and F(2x2, 3x3) for fp32 3x3 convs (kernels/winograd.py, compiler/passes/choose_winograd.py):
the pass fires where it should and nowhere else (the IR it writes), the kernel matches PyTorch
on the shapes that stress its tiling (odd maps, batches, input blocks of 8, a residual
epilogue), and a compiled network records the layers it chose."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import tvm
from tvm import te, topi

from reidc.compiler.ir import Graph, IRError, Node, Op, const, dump, verify
from reidc.compiler.ir.shapes import infer
from reidc.compiler.passes.choose_winograd import WINOGRAD, WINOGRAD_F4, choose_winograd, winograd_target
from reidc.kernels.winograd import conv2d_winograd_nchwc, transform_weight
from reidc.kernels.winograd_schedule import WinogradNCHWc
from reidc.targets import get_target

RNG = np.random.default_rng(11)


def _conv_graph(c=64, o=64, k=3, stride=(1, 1), padding=(1, 1), modal=False, pad_value=False, hw=(8, 8)):
    g = Graph("w")
    g.add("x", Node(Op.INPUT, (), ("N", c) + hw, attrs={"name": "x"}))
    inputs = ("x",)
    if modal:
        g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
        inputs += ("modality",)
    w = RNG.standard_normal(((2,) if modal else ()) + (o, c, k, k)).astype(np.float32)
    attrs = {"weight": const(w), "stride": stride, "padding": padding}
    if pad_value:
        attrs["pad_value"] = const(np.ones(c, np.float32))
    g.add("conv", Node(Op.CONV2D, inputs, infer(Op.CONV2D, [g[i].shape for i in inputs], attrs), attrs=attrs,
                       source="layer.conv"))
    g.outputs = ["conv"]
    return verify(g)


@pytest.mark.parametrize("kw, fires, guard", [
    ({}, True, None),
    ({"stride": (2, 2)}, False, "3x3_stride1_pad1"),
    ({"k": 1, "padding": (0, 0)}, False, "3x3_stride1_pad1"),
    ({"padding": (2, 2)}, False, "3x3_stride1_pad1"),
    ({"c": 32}, False, "channels"),          # measured slower below 64 channels
    ({"o": 72}, False, "channels"),          # output channels not in 16-channel blocks
    ({"modal": True}, False, "one_weight_set"),
    ({"pad_value": True}, False, "zero_border"),
])
def test_the_pass_fires_only_on_wide_3x3_stride1_convs(kw, fires, guard):
    g = _conv_graph(**kw)
    stats = Counter()
    out = choose_winograd(g, stats)
    assert (out["conv"].attr("algorithm") == WINOGRAD_F4) == fires   # 64 channels: F(4x4)'s U is small
    assert stats["winograd"] == int(fires)
    if guard:
        assert stats[f"winograd:skipped:{guard}"] == 1
    assert ("algorithm=" in dump(out)) == fires                   # the IR dump shows the choice
    assert g["conv"].attr("algorithm") is None                    # the input graph is untouched
    again = Counter()
    choose_winograd(out, again)
    assert again["winograd"] == 0                                 # idempotent


@pytest.mark.parametrize("c, hw, auto, fast", [
    (512, (8, 4), WINOGRAD, WINOGRAD),         # 37.7 MB of U read for 2 tiles an image: F(4x4) measured 0.53x
    (512, (16, 8), WINOGRAD, WINOGRAD_F4),     # 8 tiles an image: F(4x4) 1.39x at batch 1, but 4x the weights
    (256, (8, 4), WINOGRAD_F4, WINOGRAD_F4),   # U 9.4 MB: 1.23x
    (64, (7, 9), WINOGRAD_F4, WINOGRAD_F4),
])
def test_the_pass_takes_f4_as_its_tiles_policy_says(c, hw, auto, fast):
    """"auto": F(4x4) where its U stays in the caches; "4": wherever it was measured faster;
    "2": never. Anything else is refused by name."""
    g = _conv_graph(c=c, o=c, hw=hw)
    for tiles, algorithm in (("auto", auto), ("4", fast), ("2", WINOGRAD)):
        out = choose_winograd(g, tiles=tiles)
        assert out["conv"].attr("algorithm") == algorithm, tiles
        assert algorithm in dump(out)
    assert choose_winograd(g)["conv"].attr("algorithm") == auto
    with pytest.raises(ValueError, match="winograd tiles '3': expected one of auto, 4, 2"):
        choose_winograd(g, tiles="3")


def test_measured_algorithms_replace_the_policy_for_their_shapes_only():
    """A tuning database's measured fastest algorithm per shape ("CxHxW->O") overrides
    `tiles` for convs of that shape; "direct" leaves the conv alone; other shapes, and convs
    the guards refuse, are as without it; a name that is no algorithm is refused."""
    from reidc.compiler.passes.choose_winograd import candidates, policy, signature
    g = _conv_graph(c=512, o=512, hw=(16, 8))
    sig = signature(g["conv"])
    assert sig == "512x16x8->512" and policy(sig) == WINOGRAD and policy(sig, "4") == WINOGRAD_F4
    assert list(candidates(g)) == ["conv"] and candidates(_conv_graph(stride=(2, 2))) == {}
    stats = Counter()
    out = choose_winograd(g, stats, measured={sig: WINOGRAD_F4})
    assert out["conv"].attr("algorithm") == WINOGRAD_F4 and stats["winograd"] == 1   # "auto" alone says F(2x2)
    stats = Counter()
    out = choose_winograd(g, stats, tiles="4", measured={sig: "direct"})
    assert out["conv"].attr("algorithm") is None and stats["winograd"] == 0 and "algorithm=" not in dump(out)
    assert choose_winograd(g, measured={"64x8x8->64": "direct"})["conv"].attr("algorithm") == WINOGRAD
    strided = _conv_graph(c=512, o=512, hw=(16, 8), stride=(2, 2))
    assert choose_winograd(strided, measured={signature(strided["conv"]): WINOGRAD_F4})["conv"].attr("algorithm") is None
    with pytest.raises(ValueError, match="measured algorithms .*winograd_f6.*: expected one of direct, winograd_f2, "
                                         "winograd_f4"):
        choose_winograd(g, measured={sig: "winograd_f6"})


def test_the_verifier_refuses_winograd_where_the_kernel_cannot_run():
    g = _conv_graph(stride=(2, 2))
    g.replace("conv", g["conv"].with_(attrs={**g["conv"].attrs, "algorithm": WINOGRAD}))
    with pytest.raises(IRError, match=r"winograd_f2 needs one 3x3 weight set, stride 1, padding 1"):
        verify(g)
    g.replace("conv", g["conv"].with_(attrs={**g["conv"].attrs, "algorithm": "winograd_f6"}))
    with pytest.raises(IRError, match=r"algorithm 'winograd_f6': expected direct, winograd_f2 or winograd_f4"):
        verify(g)


def test_targets():
    assert winograd_target(get_target("x86-avx512")) and winograd_target(get_target("x86-avx2"))
    assert not winograd_target(get_target("rpi5"))


def _blocked(a, cb):
    return np.ascontiguousarray(a.reshape(a.shape[0], -1, cb, *a.shape[2:]).transpose(0, 1, 3, 4, 2))


@pytest.mark.parametrize("n, c, h, w, o, cb", [
    (1, 64, 8, 4, 64, 16),     # ResNet's layer4 map at 128x64 input
    (2, 32, 7, 9, 48, 16),     # odd map: the last tiles overhang; three output blocks
    (3, 24, 5, 6, 32, 8),      # input in blocks of 8, batch 3
])
@pytest.mark.parametrize("rule", [dict(vector_lanes=16, accumulators=24), dict(vector_lanes=8, accumulators=12),
                                  dict(vector_lanes=16, accumulators=16, max_oc_tile=1)],   # a tuning variant
                         ids=["avx512-tile", "avx2-tile", "one-block-tile"])
@pytest.mark.parametrize("m", [2, 4])
def test_the_kernel_matches_pytorch(n, c, h, w, o, cb, rule, m):
    x = RNG.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (RNG.standard_normal((o, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    res = RNG.standard_normal((n, o, h, w)).astype(np.float32)
    X = te.placeholder((n, c // cb, h, w, cb), "float32", name="X")
    U = te.placeholder((m + 2, m + 2, o // 16, c, 16), "float32", name="U")
    R = te.placeholder((n, o // 16, h, w, 16), "float32", name="R")
    func = te.create_prim_func([X, U, R, topi.nn.relu(topi.add(conv2d_winograd_nchwc(X, U), R))])
    sch = WinogradNCHWc(**rule).apply(func, get_target("host").tvm_target(), False)
    assert sch is not None
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}),
                      target=get_target("host").tvm_target())
    out = tvm.runtime.tensor(np.zeros((n, o // 16, h, w, 16), np.float32))
    lib["main"](*(tvm.runtime.tensor(a) for a in (_blocked(x, cb), transform_weight(wt, 16, m), _blocked(res, 16))), out)
    ref = torch.relu(torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(wt), padding=1)
                     + torch.from_numpy(res)).numpy()
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(ref.shape)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 1e-5      # F(2x2) adds ~1e-7 here, F(4x4) ~1e-6


def test_the_weight_transform_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="needs a"):
        transform_weight(np.zeros((16, 4, 1, 1), np.float32), 16)
    with pytest.raises(ValueError, match="multiple of 16"):
        transform_weight(np.zeros((24, 4, 3, 3), np.float32), 16)
    with pytest.raises(ValueError, match="m=3"):
        transform_weight(np.zeros((16, 4, 3, 3), np.float32), 16, 3)


def test_a_network_compiles_with_and_without_winograd(tmp_path):
    """Default: the stride-1 3x3 convs of 64+ channels run as Winograd (F(4x4) on layer1's 16x8
    map, F(2x2) for layer4's 512-channel convs, whose F(4x4) weights would outgrow the caches) and verify against PyTorch; winograd=False keeps
    every conv direct (and the stored weights at fp32 size)."""
    import reidc
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    on = reidc.compile(model, output=tmp_path / "on", modes="visible")
    off = reidc.compile(model, output=tmp_path / "off", modes="visible", winograd=False)
    rows = {r["layer"]: r.get("algorithm") for r in on.manifest["precision"]["layers"]}
    assert rows["layer1.0.conv1"] == "winograd F(4x4, 3x3)" and rows["layer2.0.conv1"] is None   # stride 2
    assert rows["layer4.1.conv1"] == "winograd F(2x2, 3x3)"
    assert not any(r.get("algorithm") for r in off.manifest["precision"]["layers"])
    assert on.manifest["verification"]["status"] == off.manifest["verification"]["status"] == "passed"
    with pytest.raises(reidc.InputError, match="winograd_tiles='8': expected one of auto, 4, 2"):
        reidc.compile(model, output=tmp_path / "bad", winograd_tiles="8")
    assert not (tmp_path / "bad").exists()
    assert off.manifest["weights"]["stored_weight_bytes"] == off.manifest["weights"]["fp32_weight_bytes"]
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 32)).astype(np.float32)
    a, b = on.run(x, "visible"), off.run(x, "visible")
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5
