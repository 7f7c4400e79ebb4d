"""The binary passes (detect_binary_conv, fold_binary_scale, fold_sign_threshold, bitpack_weights)
as the IR each starts from and the IR it must give (as TVM's transform tests and LCE's CHECK lines):
`Before` is parsed, the pass runs, the result must match `Expected` up to node ids
(compiler/ir/compare.py). Channel counts are tiny, so the folded constants are written by value and
each is worked out by hand in a comment. Each test also runs Before and the result through the IR
interpreter on the same inputs (a mixed modality vector), and each pass has a Before it must leave
alone (Expected == Before). The shared helpers are in pass_cases.py.

BN statistics use eps=1e-05 with var 1 or 4, so scale = gamma / sqrt(var + eps) ~ gamma / sqrt(var)
within 5e-6 relative; the comparisons use RTOL = 1e-5.
"""
from __future__ import annotations

import pytest

from reidc.compiler.ir.compare import assert_ir
from reidc.compiler.passes.bitpack_weights import bitpack_weights
from reidc.compiler.passes.detect_binary_conv import detect_binary_conv
from reidc.compiler.passes.fold_binary_scale import fold_binary_scale
from reidc.compiler.passes.fold_sign_threshold import fold_sign_threshold
from pass_cases import M, RTOL, X, graph, run_pass, unchanged


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
