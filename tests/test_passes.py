"""Every pass three ways: the IR it produces, its numbers against PyTorch, where it fires."""
from collections import Counter

import numpy as np
import pytest
import torch

from reidc.compiler.ir import Graph, Node, Op, verify
from reidc.compiler.passes import mixed_plan
from reidc.compiler.passes.bn_math import bn_affine, fold_affine_into_conv
from reidc.compiler.passes.dead_nodes import remove_dead_nodes
from reidc.compiler.passes.fold_bnneck import fold_bnneck
from reidc.compiler.passes.fold_modality_bn import fold_modality_bn
from reidc.compiler.passes.fold_shared_bn import fold_shared_bn
from reidc.compiler.passes.pipeline import run_pipeline
from reidc.compiler.passes.specialise_modality import specialise_modality
from reidc.frontend.capture import capture_module
from ir_interp import run_ir

X = np.random.default_rng(0).standard_normal((4, 3, 64, 32), dtype=np.float32)
MIX = np.array([0, 1, 1, 0], np.int32)


def _ref(model, mode):
    with torch.no_grad():
        arg = torch.from_numpy(MIX) if mode == "mixed" else mode
        return model(torch.from_numpy(X), arg).numpy()


def _graph(model):
    return capture_module(model, (3, 64, 32))


def test_bn_math_matches_torch():
    conv = torch.nn.Conv2d(3, 5, 3)
    bn = torch.nn.BatchNorm2d(5).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 2)
    s, t = bn_affine(*(p.detach().numpy() for p in (bn.weight, bn.bias, bn.running_mean, bn.running_var)), bn.eps)
    w, b = fold_affine_into_conv(conv.weight.detach().numpy(), conv.bias.detach().numpy(), s, t)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = bn(conv(x))
        got = torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("modality", ["visible", "infrared"])
def test_specialise_then_fold_single_modality(small_r18, modality):
    m = small_r18["random:7"]
    st = Counter()
    g = specialise_modality(_graph(m), modality, st)
    verify(g)
    assert all(n.modality != "split" for _, n in g.items() if n.op == Op.BATCH_NORM)
    assert st["specialise_split_bn"] == m.spec.split.count(0)
    g = fold_shared_bn(g, stats=st)
    verify(g)
    assert st["fold_shared_bn_into_conv"] == 20  # every backbone BN; the BNNeck BN is 1-D
    assert g.count(Op.BATCH_NORM) == 1
    np.testing.assert_allclose(run_ir(g, X), _ref(m, modality), rtol=1e-4, atol=1e-5)


def test_fold_shared_bn_does_not_fire_on_split_bns_or_shared_conv_outputs(small_r18):
    st = Counter()
    g = fold_shared_bn(_graph(small_r18["all-split"]), stats=st)
    assert st["fold_shared_bn_into_conv"] == 0
    assert g.count(Op.BATCH_NORM) == 21
    # a conv whose output is read twice cannot absorb the BN
    h = Graph("two_uses")
    h.add("x", Node(Op.INPUT, (), ("N", 3, 8, 8), attrs={"name": "x"}))
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    h.add("c", Node(Op.CONV2D, ("x",), ("N", 4, 8, 8), attrs={"weight": w, "stride": (1, 1), "padding": (1, 1)}))
    p = tuple(np.full(4, v, np.float32) for v in (2.0, 0.5, 0.1, 1.0))
    h.add("bn", Node(Op.BATCH_NORM, ("c",), ("N", 4, 8, 8), attrs={"eps": 1e-5, "params": {"shared": p}},
                     modality="shared"))
    h.add("sum", Node(Op.ADD, ("bn", "c"), ("N", 4, 8, 8)))
    h.outputs = ["sum"]
    st = Counter()
    out = verify(fold_shared_bn(h, stats=st))
    assert st["fold_shared_bn_into_conv"] == 0 and st["shared_bn_to_affine"] == 1
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(run_ir(out, x), run_ir(h, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strategy", [None, "affine", "weights"])
def test_fold_modality_bn_mixed(small_r18, strategy):
    m = small_r18["all-split"]
    st = Counter()
    g, plan = fold_modality_bn(fold_shared_bn(_graph(m), stats=st), stats=st, strategy=strategy)
    verify(g)
    assert st["fold_split_bn_after_conv"] == 20
    assert g.count(Op.BATCH_NORM) == 1  # only the BNNeck is left for fold_bnneck
    assert "mixed_plan" not in g.meta  # the plan is the pass's value; run_pipeline records it
    assert len(plan) == 20 and all(p["reason"] for p in plan.values())
    per_mod = [n for _, n in g.items() if n.op == Op.CONV2D and n.attrs["weight"].ndim == 5]
    affines = [n for _, n in g.items() if n.op == Op.AFFINE]
    if strategy == "affine":
        assert not per_mod and len(affines) == 20
    elif strategy == "weights":
        assert len(per_mod) == 20 and not affines
    else:  # the cost model: small layers keep per-modality weights, large ones an affine
        assert per_mod and affines
        assert plan["conv1"]["strategy"] == "weights" and plan["layer4.1.conv2"]["strategy"] == "affine"
    np.testing.assert_allclose(run_ir(g, X, MIX), _ref(m, "mixed"), rtol=1e-4, atol=1e-5)


def test_mixed_plan_cost_model():
    assert mixed_plan.choose((64, 3, 7, 7), ("N", 64, 128, 64)).strategy == "weights"
    big = mixed_plan.choose((512, 512, 3, 3), ("N", 512, 16, 8))
    assert big.strategy == "affine" and "KiB" in big.reason
    assert mixed_plan.choose((512, 512, 3, 3), ("N", 512, 16, 8), forced="weights").strategy == "weights"


def test_fold_bnneck(small_r18):
    m = small_r18["all-shared"]
    st = Counter()
    g = fold_bnneck(fold_shared_bn(_graph(m)), stats=st)
    verify(g)
    assert st["bnneck_to_affine"] == 1 and st["fold_affine_into_dense"] == 0  # no dense: stays an affine
    assert g.count(Op.BATCH_NORM) == 0 and g.count(Op.AFFINE) == 1
    np.testing.assert_allclose(run_ir(g, X), _ref(m, "visible"), rtol=1e-4, atol=1e-5)


def test_fold_bnneck_into_dense():
    g = Graph("neck")
    g.add("x", Node(Op.INPUT, (), ("N", 6), attrs={"name": "x"}))
    rng = np.random.default_rng(3)
    p = (rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6))
    g.add("bn", Node(Op.BATCH_NORM, ("x",), ("N", 6), attrs={"eps": 1e-5, "params": {"shared": tuple(
        a.astype(np.float32) for a in p)}}, modality="shared"))
    g.add("fc", Node(Op.DENSE, ("bn",), ("N", 3), attrs={"weight": rng.normal(size=(3, 6)).astype(np.float32),
                                                          "bias": np.zeros(3, np.float32)}))
    g.outputs = ["fc"]
    st = Counter()
    out = verify(fold_bnneck(g, stats=st))
    assert st["fold_affine_into_dense"] == 1 and len(out) == 2
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_allclose(run_ir(out, x.reshape(4, 6)), run_ir(g, x.reshape(4, 6)), rtol=1e-5, atol=1e-5)


def test_remove_dead_nodes_drops_the_unused_modality_input(small_r18):
    g = fold_shared_bn(specialise_modality(_graph(small_r18["all-split"]), "visible"))
    assert "modality" in g
    st = Counter()
    out = remove_dead_nodes(g, st)
    assert "modality" not in out and st["remove_dead_nodes"] == 1
    assert len(remove_dead_nodes(out, Counter())) == len(out)  # idempotent


@pytest.mark.parametrize("split", ["all-split", "all-shared", "random:7"])
@pytest.mark.parametrize("mode", ["visible", "infrared", "mixed"])
def test_pipeline_numbers_and_no_bn_left(small_r18, split, mode, tmp_path):
    m = small_r18[split]
    g = run_pipeline(_graph(m), mode, dump_dir=tmp_path)
    assert g.count(Op.BATCH_NORM) == 0
    final = sorted(tmp_path.glob(f"{mode}.*.ir"))[-1].read_text()
    assert "batch_norm" not in final
    if mode == "mixed" and split != "all-shared":  # the pass's plan, recorded by the pipeline
        assert g.meta["mixed_plan"] and "# mixed_plan:" in final
    np.testing.assert_allclose(run_ir(g, X, MIX if mode == "mixed" else None), _ref(m, mode), rtol=1e-4, atol=1e-5)
