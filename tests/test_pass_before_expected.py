"""Every pass as the IR it starts from and the IR it must give (as TVM's transform tests and LCE's
CHECK lines): `Before` is parsed, the pass runs, the result must match `Expected` up to node ids
(compiler/ir/compare.py). Channel counts are tiny, so the folded constants are written by value
and each is worked out by hand in a comment. Each test also runs Before and the result through
the IR interpreter on the same inputs (a mixed modality vector), and each pass has a Before it
must leave alone (Expected == Before).

BN statistics use eps=1e-05 with var 1 or 4, so scale = gamma / sqrt(var + eps) ~ gamma / sqrt(var)
within 5e-6 relative; the comparisons use RTOL = 1e-5.
"""
from __future__ import annotations

import numpy as np
import pytest

from reidc.compiler.ir import Op, dump, verify
from reidc.compiler.ir.compare import assert_ir
from reidc.compiler.ir.parse import parse
from reidc.compiler.passes.bitpack_weights import bitpack_weights
from reidc.compiler.passes.dead_nodes import remove_dead_nodes
from reidc.compiler.passes.detect_binary_conv import detect_binary_conv
from reidc.compiler.passes.fold_binary_scale import fold_binary_scale
from reidc.compiler.passes.fold_bnneck import fold_bnneck
from reidc.compiler.passes.fold_input_norm import fold_input_norm
from reidc.compiler.passes.fold_modality_bn import fold_modality_bn
from reidc.compiler.passes.fold_shared_bn import fold_shared_bn
from reidc.compiler.passes.fold_sign_threshold import fold_sign_threshold
from reidc.compiler.passes.pipeline import run_pipeline
from reidc.compiler.passes.rewrite import Applied
from reidc.compiler.passes.specialise_modality import specialise_modality
from ir_interp import run_ir

RTOL = 1e-5
MIX = np.array([0, 1, 1, 0], np.int32)
X = "%x: float32[Nx2x4x4] = input() {name='x'}"
M = "%modality: int32[N] = input() {name='modality'}"


def graph(body: str) -> str:
    """An IR text: `graph t {`, the lines of body (the last names the output), `return`."""
    lines = [ln.strip() for ln in body.strip().splitlines()]
    out = lines[-1].split(":")[0]
    return "graph t {\n" + "\n".join("  " + ln for ln in lines) + f"\n  return {out}\n}}\n"


def run_pass(p, before: str, codes=MIX, **kw):
    """The pass's graph for the parsed `before` (verified), after checking that both graphs give
    the same numbers on one input (`codes`: the modality codes of the batch)."""
    g = verify(parse(before))
    out = p(g, **kw)
    out = verify(out.graph if isinstance(out, Applied) else out)
    x = np.random.default_rng(0).standard_normal((len(codes),) + g["x"].shape[1:]).astype(np.float32)
    np.testing.assert_allclose(run_ir(out, x, codes), run_ir(g, x, codes), rtol=1e-5, atol=1e-5)
    return out


def unchanged(p, before: str, **kw):
    assert_ir(run_pass(p, before, **kw), before, rtol=0)


# --- fold_shared_bn -------------------------------------------------------------------------
CONV_BN = graph(f"""
    {X}
    %c: float32[Nx2x4x4] = conv2d(%x) {{bias=<2 float32: 1 -1>, padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 1 2 3 4>}}  # conv
    %bn: float32[Nx2x4x4] = batch_norm @shared(%c) {{eps=1e-05, params={{shared: (<2 float32: 1 3>, <2 float32: 0 1>, <2 float32: 1 0>, <2 float32: 4 1>)}}}}  # bn
    %r: float32[Nx2x4x4] = relu(%bn)
""")


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


# --- detect_binary_conv ---------------------------------------------------------------------
SIGN_CONV = graph(f"""
    {X}
    %s: float32[Nx2x4x4] = sign(%x)  # act
    %c: float32[Nx2x4x4] = conv2d(%s) {{padding=(0, 0), stride=(1, 1), weight=<2x2x1x1 float32: 0.5 -0.5 -2 2>}}  # conv
    %r: float32[Nx2x4x4] = relu(%c)
""")


def test_detect_binary_conv():
    # weights are +-alpha per output channel: alpha = [0.5, 2], signs [1 -1 | -1 1]; sign(x) is a bitpack at 0
    assert_ir(run_pass(detect_binary_conv, SIGN_CONV), graph(f"""
        {X}
        %p: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, site='act', threshold=<2 float32: 0 0>}}  # act
        %c: float32[Nx2x4x4] = bconv2d(%p) {{bias=<2 float32: 0 0>, padding=(0, 0), scale=<2 float32: 0.5 2>, signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}}  # conv
        %r: float32[Nx2x4x4] = relu(%c)
    """), rtol=0)


def test_detect_binary_dense():
    before = graph("""
        %x: float32[Nx3] = input() {name='x'}
        %s: float32[Nx3] = sign(%x)  # act
        %d: float32[Nx2] = dense(%s) {bias=<2 float32: 1 0>, weight=<2x3 float32: 0.25 -0.25 0.25 -1 -1 1>}  # fc
    """)
    # a binary dense is a 1x1 bconv2d on (N, C), keeping its bias: alpha = [0.25, 1]
    assert_ir(run_pass(detect_binary_conv, before), graph("""
        %x: float32[Nx3] = input() {name='x'}
        %p: bits[Nx3] = bitpack(%x) {flip=<3 int8: 0 0 0>, site='act', threshold=<3 float32: 0 0 0>}  # act
        %d: float32[Nx2] = bconv2d(%p) {bias=<2 float32: 1 0>, padding=(0, 0), scale=<2 float32: 0.25 1>, signs=<2x3x1x1 int8: 1 -1 1 -1 -1 1>, stride=(1, 1)}  # fc
    """), rtol=0)


@pytest.mark.parametrize("before", [SIGN_CONV.replace("-2 2>", "-2 1>"),   # channel 1 is not +-alpha
                                    SIGN_CONV.replace("sign(%x)", "relu(%x)")],  # a relu, not a sign, before it
                         ids=["not +-alpha", "no sign"])
def test_detect_binary_conv_leaves_float_convs_alone(before):
    unchanged(detect_binary_conv, before)


# --- fold_binary_scale ----------------------------------------------------------------------
BCONV = f"""
    {X}
    {M}
    %p: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
    %b: float32[Nx2x4x4] = bconv2d(%p) {{bias=<2 float32: 0 1>, padding=(0, 0), scale=<2 float32: 0.5 2>, signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}}  # conv
"""
FOLLOWERS = {  # the node after the bconv, and the bconv it folds into: scale a * s, bias c * s + t
    # shared BN: s = [0.5, 3], t = [-0.5, 1] (CONV_BN) -> scale [0.25, 6], bias [0 - 0.5, 3 + 1] = [-0.5, 4]
    "shared BN": ("batch_norm @shared(%b) {eps=1e-05, params={shared: (<2 float32: 1 3>, <2 float32: 0 1>, "
                  "<2 float32: 1 0>, <2 float32: 4 1>)}}",
                  "bconv2d(%p) {bias=<2 float32: -0.5 4>, padding=(0, 0), scale=<2 float32: 0.25 6>, "
                  "signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}"),
    # split BN: visible as above; infrared s = [2, 0.5], t = [1, -1] -> scale [1, 1], bias [0 + 1, 0.5 - 1]
    "split BN": ("batch_norm @split(%b, %modality) {eps=1e-05, params={visible: (<2 float32: 1 3>, <2 float32: 0 1>, "
                 "<2 float32: 1 0>, <2 float32: 4 1>), infrared: (<2 float32: 2 1>, <2 float32: 1 0>, "
                 "<2 float32: 0 2>, <2 float32: 1 4>)}}",
                 "bconv2d @split(%p, %modality) {bias=<2x2 float32: -0.5 4 1 -0.5>, padding=(0, 0), "
                 "scale=<2x2 float32: 0.25 6 1 1>, signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}"),
    # affine s = [-1, 0.5], t = [2, 0] -> scale [-0.5, 1], bias [0 + 2, 0.5 + 0]
    "affine": ("affine(%b) {bias=<2 float32: 2 0>, scale=<2 float32: -1 0.5>}",
               "bconv2d(%p) {bias=<2 float32: 2 0.5>, padding=(0, 0), scale=<2 float32: -0.5 1>, "
               "signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}"),
}


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_fold_binary_scale(follower):
    node, folded = FOLLOWERS[follower]
    before = graph(BCONV + f"""
        %n: float32[Nx2x4x4] = {node}
        %r: float32[Nx2x4x4] = relu(%n)
    """)
    assert_ir(run_pass(fold_binary_scale, before), graph(f"""
        {X}
        {M}
        %p: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
        %b: float32[Nx2x4x4] = {folded}  # conv
        %r: float32[Nx2x4x4] = relu(%b)
    """), RTOL)


def test_fold_binary_scale_leaves_a_bconv_with_two_uses_alone():
    unchanged(fold_binary_scale, graph(BCONV + f"""
        %n: float32[Nx2x4x4] = {FOLLOWERS["affine"][0]}
        %r: float32[Nx2x4x4] = add(%n, %b)
    """))


# --- fold_sign_threshold --------------------------------------------------------------------
def _then_bconv(body: str) -> str:
    """body (ending in a bitpack %p), then a bconv2d reading %p."""
    return graph(body + """
        %o: float32[Nx2x4x4] = bconv2d(%p) {bias=<2 float32: 0 0>, padding=(0, 0), scale=<2 float32: 1 1>, signs=<2x2x1x1 int8: 1 1 -1 1>, stride=(1, 1)}
    """)


@pytest.mark.parametrize("place, scale, bias, threshold, flip", [
    # thr = -t / s = [-1 / 2, -1 / -1] = [-0.5, 1]; flip where s < 0: x * -1 + 1 < 0 <=> x > 1
    ("", "<2 float32: 2 -1>", "<2 float32: 1 1>", "<2 float32: -0.5 1>", "<2 int8: 0 1>"),
    # per modality: visible as above, infrared thr = [1 / 0.5, -2 / 4] = [2, -0.5]
    (" @split", "<2x2 float32: 2 -1 0.5 4>", "<2x2 float32: 1 1 -1 2>", "<2x2 float32: -0.5 1 2 -0.5>",
     "<2x2 int8: 0 1 0 0>")], ids=["shared", "split"])
def test_fold_sign_threshold(place, scale, bias, threshold, flip):
    ins = "%x, %modality" if place else "%x"
    before = _then_bconv(f"""
        {X}
        {M}
        %a: float32[Nx2x4x4] = affine{place}({ins}) {{bias={bias}, scale={scale}}}
        %p: bits[Nx2x4x4] = bitpack(%a) {{flip=<2 int8: 0 0>, site='act', threshold=<2 float32: 0 0>}}  # act
    """)
    assert_ir(run_pass(fold_sign_threshold, before), _then_bconv(f"""
        {X}
        {M}
        %p: bits[Nx2x4x4] = bitpack{place}({ins}) {{flip={flip}, site='act', threshold={threshold}}}  # act
    """), rtol=0)


def test_fold_sign_threshold_on_the_integer_accumulator():
    before = _then_bconv(f"""
        {X}
        %p0: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
        %b: float32[Nx2x4x4] = bconv2d(%p0) {{bias=<2 float32: -1.25 3>, padding=(0, 0), scale=<2 float32: 0.5 -2>, signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}}
        %p: bits[Nx2x4x4] = bitpack(%b) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
    """)
    # sign(dot * a + b), a = [0.5, -2], b = [-1.25, 3]: -b / a = [2.5, 1.5];
    # a > 0: bit where dot < ceil(2.5) = 3; a < 0: bit where dot > floor(1.5) = 1 (flip). The bconv emits dot.
    assert_ir(run_pass(fold_sign_threshold, before), _then_bconv(f"""
        {X}
        %p0: bits[Nx2x4x4] = bitpack(%x) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
        %b: int32[Nx2x4x4] = bconv2d(%p0) {{accumulator=True, bias=<2 float32: 0 0>, padding=(0, 0), scale=<2 float32: 1 1>, signs=<2x2x1x1 int8: 1 -1 -1 1>, stride=(1, 1)}}
        %p: bits[Nx2x4x4] = bitpack(%b) {{flip=<2 int8: 0 1>, threshold=<2 int32: 3 1>}}
    """), rtol=0)


def test_fold_sign_threshold_leaves_an_affine_with_two_uses_alone():
    unchanged(fold_sign_threshold, graph(f"""
        {X}
        %a: float32[Nx2x4x4] = affine(%x) {{bias=<2 float32: 1 1>, scale=<2 float32: 2 -1>}}
        %p: bits[Nx2x4x4] = bitpack(%a) {{flip=<2 int8: 0 0>, threshold=<2 float32: 0 0>}}
        %o: float32[Nx2x4x4] = bconv2d(%p) {{bias=<2 float32: 0 0>, padding=(0, 0), scale=<2 float32: 1 1>, signs=<2x2x1x1 int8: 1 1 -1 1>, stride=(1, 1)}}
        %r: float32[Nx2x4x4] = add(%o, %a)
    """))


# --- bitpack_weights ------------------------------------------------------------------------
def _bconv_of(c: int, o: int, k: tuple, signs: str, extra: str = "") -> str:
    return graph(f"""
        %x: float32[Nx{c}x4x4] = input() {{name='x'}}
        %p: bits[Nx{c}x4x4] = bitpack(%x) {{flip=<{c} int8: {' '.join(['0'] * c)}>, threshold=<{c} float32: {' '.join(['0'] * c)}>}}
        %b: float32[Nx{o}x{5 - k[0]}x{5 - k[1]}] = bconv2d(%p) {{bias=<{o} float32: {' '.join(['0'] * o)}>, {extra}padding=(0, 0), scale=<{o} float32: {' '.join(['1'] * o)}>, signs=<{o}x{c}x{k[0]}x{k[1]} int8: {signs}>, stride=(1, 1){", word='uint64'" if extra else ''}}}
    """)


@pytest.mark.parametrize("c, o, k, signs, packed", [
    # (O, C, kh, kw) -> (O, kh, kw, words): 3 channels fill one uint64; channel c is bit c, set where -1:
    # out 0 [1 -1 -1] -> 0b110 = 6, out 1 [-1 1 1] -> 0b001 = 1
    (3, 2, (1, 1), "1 -1 -1 -1 1 1", "<2x1x1x1 uint64: 6 1>"),
    # one output, 2 channels, a 1x2 kernel: signs[0, c, 0, j] = c0 [1 -1], c1 [-1 -1];
    # tap j=0: channels [1 -1] -> 0b10 = 2, tap j=1: [-1 -1] -> 0b11 = 3
    (2, 1, (1, 2), "1 -1 -1 -1", "<1x1x2x1 uint64: 2 3>")], ids=["3 channels", "1x2 kernel"])
def test_bitpack_weights(c, o, k, signs, packed):
    before = _bconv_of(c, o, k, signs)
    expected = _bconv_of(c, o, k, signs, extra=f"packed={packed}, ")
    assert_ir(run_pass(bitpack_weights, before), expected, rtol=0)
    unchanged(bitpack_weights, expected)   # packed already: left alone


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
