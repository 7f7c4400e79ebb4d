"""fold_bnneck, remove_dead_nodes, the whole pipeline on a binary block and fold_input_norm as the IR
each starts from and the IR it must give (as TVM's transform tests and LCE's CHECK lines): `Before`
is parsed, the pass runs, the result must match `Expected` up to node ids (compiler/ir/compare.py).
Channel counts are tiny, so the folded constants are written by value and each is worked out by hand
in a comment. Each test also runs Before and the result through the IR interpreter on the same
inputs (a mixed modality vector, or one modality's for the visible pipeline), and each pass has a
Before it must leave alone (Expected == Before). The shared helpers are in pass_cases.py.

BN statistics use eps=1e-05 with var 1 or 4, so scale = gamma / sqrt(var + eps) ~ gamma / sqrt(var)
within 5e-6 relative; the comparisons use RTOL = 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest

from reidc.compiler.ir.compare import assert_ir
from reidc.compiler.passes.dead_nodes import remove_dead_nodes
from reidc.compiler.passes.fold_bnneck import fold_bnneck
from reidc.compiler.passes.fold_input_norm import fold_input_norm
from reidc.compiler.passes.pipeline import run_pipeline
from pass_cases import CONV_BN, M, RTOL, X, graph, run_pass, unchanged


# --- fold_bnneck ----------------------------------------------------------------------------
NECK = f"""
    {X}
    %g: float32[Nx2] = global_avgpool(%x)
    %bn: float32[Nx2] = batch_norm @shared(%g) {{eps=1e-05, params={{shared: (<2 float32: 2 1>, <2 float32: 1 0>, <2 float32: 0 2>, <2 float32: 1 4>)}}}}  # neck
    %fc: float32[Nx2] = dense(%bn) {{bias=<2 float32: 0.5 0.5>, weight=<2x2 float32: 1 2 3 4>}}  # fc
"""
# s = gamma / sqrt(var) = [2/1, 1/2] = [2, 0.5]; t = beta - mean * s = [1 - 0, 0 - 2 * 0.5] = [1, -1]


def test_fold_bnneck_into_the_dense():
    # dense(x * s + t) = dense(x, W * s[i], W @ t + b): W [1 2 | 3 4] -> [2 1 | 6 2]; b = [1 - 2, 3 - 4] + 0.5 = [-0.5, -0.5]
    assert_ir(run_pass(fold_bnneck, graph(NECK)), graph(f"""
        {X}
        %g: float32[Nx2] = global_avgpool(%x)
        %fc: float32[Nx2] = dense(%g) {{bias=<2 float32: -0.5 -0.5>, weight=<2x2 float32: 2 1 6 2>}}  # fc
    """), RTOL)


def test_fold_bnneck_keeps_the_affine_where_the_feature_is_read_twice():
    before = graph(NECK + "%r: float32[Nx2] = add(%fc, %bn)")
    assert_ir(run_pass(fold_bnneck, before), graph(f"""
        {X}
        %g: float32[Nx2] = global_avgpool(%x)
        %bn: float32[Nx2] = affine(%g) {{bias=<2 float32: 1 -1>, scale=<2 float32: 2 0.5>}}  # neck
        %fc: float32[Nx2] = dense(%bn) {{bias=<2 float32: 0.5 0.5>, weight=<2x2 float32: 1 2 3 4>}}  # fc
        %r: float32[Nx2] = add(%fc, %bn)
    """), RTOL)


def test_fold_bnneck_leaves_4d_bns_alone():
    unchanged(fold_bnneck, CONV_BN)


# --- remove_dead_nodes ----------------------------------------------------------------------
def test_remove_dead_nodes():
    before = graph(f"""
        {X}
        {M}
        %dead: float32[Nx2x4x4] = relu(%x)
        %s: float32[Nx2x4x4] = sign(%x)
    """)
    assert_ir(run_pass(remove_dead_nodes, before), graph(f"""
        {X}
        %s: float32[Nx2x4x4] = sign(%x)
    """), rtol=0)
    unchanged(remove_dead_nodes, CONV_BN)


# --- the whole pipeline on a binary block -----------------------------------------------------
BLOCK = graph(f"""
    {X}
    {M}
    %s1: float32[Nx2x4x4] = sign(%x)  # block.sign1
    %c1: float32[Nx2x4x4] = conv2d(%s1) {{padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 -0.5 1 1>}}  # block.conv1
    %bn1: float32[Nx2x4x4] = batch_norm @split(%c1, %modality) {{eps=1e-05, params={{visible: (<2 float32: 1 2>, <2 float32: 0.75 -1.5>, <2 float32: 0 0>, <2 float32: 1 1>), infrared: (<2 float32: 1 1>, <2 float32: 0.25 0.5>, <2 float32: 0 0>, <2 float32: 1 1>)}}}}  # block.bn1
    %s2: float32[Nx2x4x4] = sign(%bn1)  # block.sign2
    %c2: float32[Nx2x4x4] = conv2d(%s2) {{padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: -1 -1 0.25 -0.25>}}  # block.conv2
    %bn2: float32[Nx2x4x4] = batch_norm @split(%c2, %modality) {{eps=1e-05, params={{visible: (<2 float32: 2 4>, <2 float32: 1 0>, <2 float32: 0 1>, <2 float32: 1 1>), infrared: (<2 float32: 1 1>, <2 float32: 0 0.5>, <2 float32: 0 0>, <2 float32: 4 4>)}}}}  # block.bn2
    %r: float32[Nx2x4x4] = relu(%bn2)
""")
# conv1: alpha [0.5, 1], signs [1 -1 | 1 1]; bn1 visible s = [1, 2], t = [0.75, -1.5]; infrared s = [1, 1], t = [0.25, 0.5]
#   -> bconv1 a = alpha * s: visible [0.5, 2], infrared [0.5, 1]; b = t
#   -> sign2 on the accumulator: bit where dot < ceil(-b / a): visible ceil([-1.5, 0.75]) = [-1, 1],
#      infrared ceil([-0.5, -0.5]) = [0, 0]
# conv2: alpha [1, 0.25], signs [-1 -1 | 1 -1]; bn2 visible s = [2, 4], t = [1 - 0, 0 - 4] = [1, -4];
#   infrared s = [1/2, 1/2], t = [0, 0.5] -> bconv2 scale visible [2, 1], infrared [0.5, 0.125]; bias = t
# packed (bit c where channel c is -1): signs1 [1 -1] -> 2, [1 1] -> 0; signs2 [-1 -1] -> 3, [1 -1] -> 2
PACKED = "packed=<2x1x1x1 uint64: 2 0>, padding=(0, 0), scale=<2 float32: 1 1>, signs=<2x2x1x1 int8: 1 -1 1 1>"
PACKED2 = "packed=<2x1x1x1 uint64: 3 2>, padding=(0, 0)"
SIGNS2 = "signs=<2x2x1x1 int8: -1 -1 1 -1>, stride=(1, 1), word='uint64'"


def test_pipeline_visible_on_a_binary_block():
    out = run_pass(run_pipeline, BLOCK, codes=np.zeros(4, np.int32), mode="visible")
    assert_ir(out, graph(f"""
        {X}
        %p1: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, site='block.sign1', threshold=<2 float32: 0 0>}}  # block.sign1
        %c1: int32[Nx2x4x4] = bconv2d(%p1) {{accumulator=True, bias=<2 float32: 0 0>, {PACKED}, stride=(1, 1), word='uint64'}}  # block.conv1
        %p2: bits[Nx2x4x4] = bitpack(%c1) {{flip=<2 int8: 0 0>, site='block.sign2', threshold=<2 int32: -1 1>}}  # block.sign2
        %c2: float32[Nx2x4x4] = bconv2d(%p2) {{bias=<2 float32: 1 -4>, {PACKED2}, scale=<2 float32: 2 1>, {SIGNS2}}}  # block.conv2
        %r: float32[Nx2x4x4] = relu(%c2)
    """), RTOL)


def test_pipeline_mixed_on_a_binary_block():
    out = run_pass(run_pipeline, BLOCK, mode="mixed")
    assert "mixed_plan" not in out.meta   # both BNs went into binary scales: no conv -> split BN left
    assert_ir(out, graph(f"""
        {X}
        {M}
        %p1: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, site='block.sign1', threshold=<2 float32: 0 0>}}  # block.sign1
        %c1: int32[Nx2x4x4] = bconv2d(%p1) {{accumulator=True, bias=<2 float32: 0 0>, {PACKED}, stride=(1, 1), word='uint64'}}  # block.conv1
        %p2: bits[Nx2x4x4] = bitpack @split(%c1, %modality) {{flip=<2x2 int8: 0 0 0 0>, site='block.sign2', threshold=<2x2 int32: -1 1 0 0>}}  # block.sign2
        %c2: float32[Nx2x4x4] = bconv2d @split(%p2, %modality) {{bias=<2x2 float32: 1 -4 0 0.5>, {PACKED2}, scale=<2x2 float32: 2 1 0.5 0.125>, {SIGNS2}}}  # block.conv2
        %r: float32[Nx2x4x4] = relu(%c2)
    """), RTOL)


# --- fold_input_norm --------------------------------------------------------------------------
NORM_CONV = graph(f"""
    {X}
    %n: float32[Nx2x4x4] = affine(%x) {{bias=<2 float32: -1 0.5>, scale=<2 float32: 0.5 0.25>}}  # preprocess
    %c: float32[Nx2x6x6] = conv2d(%n) {{bias=<2 float32: 1 -1>, padding=(1, 1), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv1
""")


def test_fold_input_norm_pads_the_raw_image_with_the_value_normalised_to_zero():
    # s = [0.5, 0.25], t = [-1, 0.5]: W' = W * s[i] = [1*.5 2*.25 | 3*.5 4*.25] = [0.5 0.5 | 1.5 1]
    # b' = b + W @ t = [1 + (-1 + 1), -1 + (-3 + 2)] = [1, -2]; border value -t/s = [2, -2]
    assert_ir(run_pass(fold_input_norm, NORM_CONV), graph(f"""
        {X}
        %c: float32[Nx2x6x6] = conv2d(%x) {{bias=<2 float32: 1 -2>, pad_value=<2 float32: 2 -2>, padding=(1, 1), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 0.5 1.5 1>}}  # conv1
    """), RTOL)


def test_fold_input_norm_without_padding_needs_no_border_value():
    before = NORM_CONV.replace("padding=(1, 1)", "padding=(0, 0)").replace("Nx2x6x6", "Nx2x4x4")
    assert_ir(run_pass(fold_input_norm, before), graph(f"""
        {X}
        %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -2>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 0.5 1.5 1>}}  # conv1
    """), RTOL)


@pytest.mark.parametrize("change", [
    ("affine(%x)", "affine(%r)", "%r: float32[Nx2x4x4] = relu(%x)"),       # not the image itself
    ("scale=<2 float32: 0.5 0.25>", "scale=<2 float32: 0.5 0>", None),    # a zero scale has no inverse
])
def test_fold_input_norm_leaves_other_affines_alone(change):
    old, new, extra = change
    before = NORM_CONV.replace(old, new)
    if extra:
        before = before.replace(f"  {X}\n", f"  {X}\n  {extra}\n")
    unchanged(fold_input_norm, before)
