"""The BN passes (fold_shared_bn, specialise_modality, fold_modality_bn) as the IR each starts from
and the IR it must give (as TVM's transform tests and LCE's CHECK lines): `Before` is parsed, the
pass runs, the result must match `Expected` up to node ids (compiler/ir/compare.py). Channel counts
are tiny, so the folded constants are written by value and each is worked out by hand in a comment.
Each test also runs Before and the result through the IR interpreter on the same inputs (a mixed
modality vector, or one modality's for specialise_modality), and each pass has a Before it must leave
alone (Expected == Before). The shared helpers are in pass_cases.py.

BN statistics use eps=1e-05 with var 1 or 4, so scale = gamma / sqrt(var + eps) ~ gamma / sqrt(var)
within 5e-6 relative; the comparisons use RTOL = 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest

from reidc.compiler.ir import Op, dump, verify
from reidc.compiler.ir.compare import assert_ir
from reidc.compiler.ir.parse import parse
from reidc.compiler.passes.fold_modality_bn import fold_modality_bn
from reidc.compiler.passes.fold_shared_bn import fold_shared_bn
from reidc.compiler.passes.specialise_modality import specialise_modality
from pass_cases import CONV_BN, M, RTOL, X, graph, run_pass, unchanged


# --- fold_shared_bn -------------------------------------------------------------------------
def test_fold_shared_bn_into_the_conv():
    # scale = gamma / sqrt(var) = [1/2, 3/1] = [0.5, 3]; shift = beta - mean * scale = [0 - 0.5, 1 - 0] = [-0.5, 1]
    # weight[o] * scale[o] = [1 2 | 3 4] -> [0.5 1 | 9 12]; bias * scale + shift = [0.5 - 0.5, -3 + 1] = [0, -2]
    assert_ir(run_pass(fold_shared_bn, CONV_BN), graph(f"""
        {X}
        %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 0 -2>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 1 9 12>}}  # conv
        %r: float32[Nx2x4x4] = relu(%c)
    """), RTOL)


def test_fold_shared_bn_into_a_depthwise_conv():
    # the same per-output-channel fold: weight[c] * [0.5, 3] = [0.5 | 6], bias [1 -1] * scale + shift = [0, -2]
    before = CONV_BN.replace("conv2d(%x)", "depthwise_conv2d(%x)").replace("weight=<2x2x1x1 float32: 1 2 3 4>",
                                                                          "weight=<2x1x1x1 float32: 1 2>")
    assert_ir(run_pass(fold_shared_bn, before), graph(f"""
        {X}
        %c: float32[Nx2x4x4] = depthwise_conv2d(%x) {{bias=<2 float32: 0 -2>, padding=(0, 0), stride=(1, 1), weight=<2x1x1x1 float32: 0.5 6>}}  # conv
        %r: float32[Nx2x4x4] = relu(%c)
    """), RTOL)


def test_fold_shared_bn_into_a_group_conv():
    # 4 input channels in 2 groups: output 0 reads inputs 0-1, output 1 inputs 2-3, with CONV_BN's
    # (O, I/groups) weight; the fold is per output channel, as for the conv above: [0.5 1 | 9 12], [0, -2]
    x4 = X.replace("Nx2x4x4", "Nx4x4x4")
    before = CONV_BN.replace(X, x4).replace("conv2d(%x) {bias=<2 float32: 1 -1>,",
                                            "group_conv2d(%x) {bias=<2 float32: 1 -1>, groups=2,")
    assert "groups=2" in before
    assert_ir(run_pass(fold_shared_bn, before), graph(f"""
        {x4}
        %c: float32[Nx2x4x4] = group_conv2d(%x) {{bias=<2 float32: 0 -2>, groups=2, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 1 9 12>}}  # conv
        %r: float32[Nx2x4x4] = relu(%c)
    """), RTOL)


def test_fold_shared_bn_keeps_an_affine_after_a_conv_with_two_uses():
    before = CONV_BN.replace("relu(%bn)", "add(%bn, %c)")
    # the conv output is read twice: it cannot absorb the BN, which becomes its affine (scale, shift above)
    assert_ir(run_pass(fold_shared_bn, before), graph(f"""
        {X}
        %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
        %bn: float32[Nx2x4x4] = affine(%c) {{bias=<2 float32: -0.5 1>, scale=<2 float32: 0.5 3>}}  # bn
        %r: float32[Nx2x4x4] = add(%bn, %c)
    """), RTOL)


# --- a conv -> split BN, where specialise_modality and fold_modality_bn start ----------------
CONV_SPLIT_BN = graph(f"""
    {X}
    {M}
    %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
    %bn: float32[Nx2x4x4] = batch_norm @split(%c, %modality) {{eps=1e-05, params={{visible: (<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>), infrared: (<2 float32: 2 1>, <2 float32: 1 0>, <2 float32: 0 2>, <2 float32: 1 4>)}}}}  # bn
    %r: float32[Nx2x4x4] = relu(%bn)
""")
# visible:  scale [0.5, 3], shift [-0.5, 1] (as CONV_BN)
# infrared: scale = [2/1, 1/2] = [2, 0.5]; shift = [1 - 0, 0 - 2 * 0.5] = [1, -1]


def test_fold_shared_bn_leaves_split_bns_alone():
    unchanged(fold_shared_bn, CONV_SPLIT_BN)


@pytest.mark.parametrize("modality, code, stats", [
    ("visible", 0, "<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>"),
    ("infrared", 1, "<2 float32: 2 1>, <2 float32: 1 0>, <2 float32: 0 2>, <2 float32: 1 4>")])
def test_specialise_modality_keeps_that_modalitys_bn(modality, code, stats):
    # numbers equal on a batch of that modality only; the modality input stays (remove_dead_nodes drops it)
    out = run_pass(specialise_modality, CONV_SPLIT_BN, codes=np.full(4, code, np.int32), modality=modality)
    assert out.meta["modality"] == modality
    assert_ir(out, graph(f"""
        {X}
        {M}
        %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
        %bn: float32[Nx2x4x4] = batch_norm @shared(%c) {{eps=1e-05, params={{shared: ({stats})}}}}  # bn
        %r: float32[Nx2x4x4] = relu(%bn)
    """), rtol=0)


def test_specialise_modality_leaves_shared_bns_alone():
    unchanged(specialise_modality, CONV_BN, modality="visible")


@pytest.mark.parametrize("modality, code, table", [("visible", 0, "bias=<2 float32: -0.5 1>, scale=<2 float32: 0.5 3>"),
                                                   ("infrared", 1, "bias=<2 float32: 1 -1>, scale=<2 float32: 2 0.5>")])
def test_specialise_modality_sharing_weights_keeps_the_conv_and_an_affine(modality, code, table):
    # an artifact with several entries: the split BN after a real-valued conv becomes that
    # modality's affine, so fold_shared_bn leaves the conv's weights as every entry has them
    out = run_pass(specialise_modality, CONV_SPLIT_BN, codes=np.full(4, code, np.int32), modality=modality,
                   share_weights=True)
    assert_ir(out, graph(f"""
        {X}
        {M}
        %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
        %bn: float32[Nx2x4x4] = affine(%c) {{{table}}}  # bn
        %r: float32[Nx2x4x4] = relu(%bn)
    """), RTOL)
    unchanged(fold_shared_bn, dump(out))


def test_specialise_modality_sharing_weights_keeps_a_group_convs_weights_too():
    # a grouped conv (4 inputs in 2 groups) is real-valued: the visible BN becomes its affine as above
    x4 = X.replace("Nx2x4x4", "Nx4x4x4")
    before = CONV_SPLIT_BN.replace(X, x4).replace("conv2d(%x) {bias=<2 float32: 1 -1>,",
                                                  "group_conv2d(%x) {bias=<2 float32: 1 -1>, groups=2,")
    out = run_pass(specialise_modality, before, codes=np.zeros(4, np.int32), modality="visible", share_weights=True)
    assert [str(n.op) for _, n in out.items()][2:] == ["group_conv2d", "affine", "relu"]
    unchanged(fold_shared_bn, dump(out))


def test_specialise_modality_sharing_weights_keeps_a_bn_after_a_binary_conv():
    # a conv of sign(x) becomes a binary conv, whose BN lands in its scale: it stays a BN
    before = graph(f"""
        {X}
        {M}
        %s: float32[Nx2x4x4] = sign(%x)
        %c: float32[Nx2x4x4] = conv2d(%s) {{padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 -1 1 1>}}  # conv
        %bn: float32[Nx2x4x4] = batch_norm @split(%c, %modality) {{eps=1e-05, params={{visible: (<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>), infrared: (<2 float32: 2 1>, <2 float32: 1 0>, <2 float32: 0 2>, <2 float32: 1 4>)}}}}  # bn
    """)
    out = run_pass(specialise_modality, before, codes=np.zeros(4, np.int32), modality="visible", share_weights=True)
    assert out["bn"].op == Op.BATCH_NORM


# --- fold_modality_bn -----------------------------------------------------------------------
def test_fold_modality_bn_weights_gives_a_weight_set_per_modality():
    # weight[k, o] = weight[o] * scale[k, o]: visible [0.5 1 | 9 12], infrared [2 4 | 1.5 2]
    # bias[k] = bias * scale[k] + shift[k]: visible [0.5 - 0.5, -3 + 1] = [0, -2], infrared [2 + 1, -0.5 - 1] = [3, -1.5]
    assert_ir(run_pass(fold_modality_bn, CONV_SPLIT_BN, strategy="weights"), graph(f"""
        {X}
        {M}
        %c: float32[Nx2x4x4] = conv2d @split(%x, %modality) {{bias=<2x2 float32: 0 -2 3 -1.5>, padding=(0, 0), stride=(1, 1), weight=<2x2x2x1x1 float32: 0.5 1 9 12 2 4 1.5 2>}}  # conv
        %r: float32[Nx2x4x4] = relu(%c)
    """), RTOL)


def test_fold_modality_bn_affine_keeps_the_conv_and_a_per_sample_affine():
    # the conv's bias moves into the shift: shift[k] + bias * scale[k] = visible [0, -2], infrared [3, -1.5]
    assert_ir(run_pass(fold_modality_bn, CONV_SPLIT_BN, strategy="affine"), graph(f"""
        {X}
        {M}
        %c: float32[Nx2x4x4] = conv2d(%x) {{padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
        %bn: float32[Nx2x4x4] = affine @split(%c, %modality) {{bias=<2x2 float32: 0 -2 3 -1.5>, scale=<2x2 float32: 0.5 3 2 0.5>}}  # bn
        %r: float32[Nx2x4x4] = relu(%bn)
    """), RTOL)


@pytest.mark.parametrize("strategy, reason", [(None, "<= 256 KiB budget"), ("affine", "forced"), ("weights", "forced")])
def test_fold_modality_bn_returns_the_plan_it_followed(strategy, reason):
    g, plan = fold_modality_bn(verify(parse(CONV_SPLIT_BN)), strategy=strategy)
    assert list(plan) == ["conv"] and plan["conv"]["strategy"] == (strategy or "weights")  # 16 bytes of weights
    assert reason in plan["conv"]["reason"]
    assert (g["c"].attrs["weight"].ndim == 5) == (plan["conv"]["strategy"] == "weights")


def test_fold_modality_bn_sharing_weights_chooses_the_affine_that_shares_them():
    g, plan = fold_modality_bn(verify(parse(CONV_SPLIT_BN)), share_weights=True)
    assert plan["conv"]["strategy"] == "affine" and "the other entries keep this conv's weights" in plan["conv"]["reason"]
    assert g["c"].attrs["weight"].ndim == 4
    g, plan = fold_modality_bn(verify(parse(CONV_SPLIT_BN)), strategy="weights", share_weights=True)
    assert plan["conv"]["strategy"] == "weights"   # a forced strategy still wins


def test_fold_modality_bn_makes_a_split_bn_without_a_conv_an_affine():
    before = graph(f"""
        {X}
        {M}
        %bn: float32[Nx2x4x4] = batch_norm @split(%x, %modality) {{eps=1e-05, params={{visible: (<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>), infrared: (<2 float32: 2 1>, <2 float32: 1 0>, <2 float32: 0 2>, <2 float32: 1 4>)}}}}  # bn
        %r: float32[Nx2x4x4] = relu(%bn)
    """)
    # CONV_SPLIT_BN's statistics as tables, row = modality code: scale [0.5 3 | 2 0.5], shift [-0.5 1 | 1 -1]
    assert_ir(run_pass(fold_modality_bn, before), graph(f"""
        {X}
        {M}
        %bn: float32[Nx2x4x4] = affine @split(%x, %modality) {{bias=<2x2 float32: -0.5 1 1 -1>, scale=<2x2 float32: 0.5 3 2 0.5>}}  # bn
        %r: float32[Nx2x4x4] = relu(%bn)
    """), RTOL)


def test_fold_modality_bn_leaves_shared_bns_alone():
    unchanged(fold_modality_bn, CONV_BN)
