"""Every op of the IR is declared once (compiler/ir/opset) and lowered once (compiler/lower/ops):
this file enumerates them, checks each has every part, and runs each op's lowering through TVM
against its declared reference semantics (the IR interpreter) on a small graph."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

from reidc.compiler.ir import Graph, IRError, Node, Op, const, verify
from reidc.compiler.ir.bits import pack_bits
from reidc.compiler.ir.opset.refmath import to_bf16_bits
from reidc.compiler.ir.interp import run_all
from reidc.compiler.ir.shapes import infer
from reidc.compiler.ir.spec import SPECS, Attr, Cost, spec_of
from reidc.compiler.lower.build import bf16_conv, build, int8_flavour, lowering_options
from reidc.kernels.conv2d_bf16 import Bf16Conv
from reidc.kernels.conv2d_int8 import Int8Flavour
from reidc.compiler.lower.ops import lowering_of
from reidc.compiler.lower.registry import LOWERINGS, LoweringError
from reidc.compiler.lower.to_relax import to_relax
from reidc.targets import get_target

from asm_text import asm_of, functions_with

ATTR_KINDS = {"array", "pair", "float", "str", "bool", "params"}
RNG = np.random.default_rng(3)


def test_every_op_has_every_part():
    assert [str(op) for op in Op] == list(SPECS)
    for op in Op:
        spec = spec_of(op)
        assert spec.name == op and spec.doc and callable(spec.reference) and callable(spec.cost)
        assert all(isinstance(a, Attr) and a.kind in ATTR_KINDS and a.doc for a in spec.attrs.values()), op
        assert spec.shape is not None or op == Op.INPUT
        assert callable(lowering_of(op)), op
    assert set(LOWERINGS) == set(Op)


def test_unknown_op_and_unknown_attribute_are_named():
    with pytest.raises(ValueError, match="unknown op 'gelu'"):
        spec_of("gelu")
    g = Graph()
    g.add("x", Node(Op.INPUT, (), ("N", 3, 4, 4), attrs={"name": "x"}))
    g.add("r", Node(Op.RELU, ("x",), ("N", 3, 4, 4), attrs={"alpha": 0.1}, source="act"))
    g.outputs = ["r"]
    with pytest.raises(IRError, match=r"'r' \[relu\] \(act\): unknown attribute 'alpha'"):
        verify(g)


# --- one small graph per op: x (N, 16, 6, 6) -> ... -> the op -> output -------------------
C, HW = 16, (6, 6)


def _chain(*steps, modality=False):
    """A graph x -> steps..., each step (op, attrs[, extra input ids]); shapes inferred."""
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", C) + HW, attrs={"name": "x"}))
    if modality:
        g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
    prev = "x"
    for k, (op, attrs, *more) in enumerate(steps):
        inputs = (prev,) + tuple(more[0] if more else ())
        shape = infer(op, [g[i].shape for i in inputs], attrs)
        dtype = spec_of(op).out_dtype(attrs)
        prev = g.add(f"n{k}", Node(op, inputs, shape, dtype, attrs))
    g.outputs = [prev]
    return verify(g)


def _w(*shape):
    return const(RNG.standard_normal(shape).astype(np.float32) * 0.3)


def _vec(scale=1.0, shift=0.0, c=C):
    return const(RNG.standard_normal(c).astype(np.float32) * scale + shift)


def _signs(o, i, k):
    s = np.where(RNG.standard_normal((o, i, k, k)) >= 0, 1, -1).astype(np.int8)
    return s, pack_bits(np.transpose(s, (0, 2, 3, 1)) < 0, "uint64")


def _bconv(o, k, stride, pad, accumulator=False):
    s, packed = _signs(o, C, k)
    a = {"signs": s, "packed": packed, "word": "uint64", "stride": stride, "padding": pad}
    return {**a, "accumulator": True} if accumulator else {**a, "scale": _vec(0.1, 0.5, o), "bias": _vec(c=o)}


def QCONV(o, i, k, stride=(1, 1), padding=(0, 0), lead=()):
    """int8 conv attributes: random int8 weights, positive per-channel scales, a bias."""
    return {"weight": const(RNG.integers(-127, 128, lead + (o, i, k, k)).astype(np.int8)),
            "weight_scale": const(RNG.uniform(0.001, 0.01, lead + (o,)).astype(np.float32)),
            "input_scale": const([0.02]), "zero_point": 0, "bias": _w(*lead, o),
            "stride": stride, "padding": padding}


def BF16CONV(o, i, k, stride=(1, 1), padding=(0, 0), modal=False):
    """bf16 conv attributes: random weights rounded to bf16, a bias; per modality a signed
    out_scale and bias."""
    a = {"weight": const(to_bf16_bits(RNG.standard_normal((o, i, k, k)).astype(np.float32) * 0.3)),
         "bias": _w(2, o) if modal else _w(o), "stride": stride, "padding": padding}
    return {**a, "out_scale": const(RNG.uniform(0.5, 2.0, (2, o)).astype(np.float32) * [[1] * (o - 1) + [-1], [1] * o])} \
        if modal else a


def _gated():
    """x * sigmoid(dense(mean(x))) per channel: a squeeze-excitation gate."""
    g = _chain((Op.GLOBAL_AVGPOOL, {}), (Op.DENSE, {"weight": _w(C, C)}), (Op.SIGMOID, {}))
    gate = g.outputs[0]
    g.add("scaled", Node(Op.SCALE_CHANNELS, ("x", gate), ("N", C) + HW))
    g.outputs = ["scaled"]
    return verify(g)


def _joined():
    """[mean, max] of x's channels: two (N, C) features joined."""
    g = _chain((Op.GLOBAL_AVGPOOL, {}))
    g.add("mx", Node(Op.GLOBAL_MAXPOOL, ("x",), ("N", C)))
    g.add("cat", Node(Op.CONCAT, (g.outputs[0], "mx"), ("N", 2 * C)))
    g.outputs = ["cat"]
    return verify(g)


BITS = (Op.BITPACK, {"threshold": _vec(0.2), "flip": (RNG.random(C) < 0.3).astype(np.int8)})
CASES = {
    "conv2d": lambda: _chain((Op.CONV2D, {"weight": _w(24, C, 3, 3), "bias": _vec(c=24), "stride": (2, 1),
                                          "padding": (1, 1)})),
    "conv2d_per_modality": lambda: _chain((Op.CONV2D, {"weight": _w(2, 8, C, 1, 1), "bias": _w(2, 8),
                                                       "stride": (1, 1), "padding": (0, 0)}, ("modality",)),
                                          modality=True),
    "conv2d_winograd": lambda: _chain((Op.CONV2D, {"weight": _w(32, C, 3, 3), "bias": _vec(c=32), "stride": (1, 1),
                                                   "padding": (1, 1), "algorithm": "winograd_f2"}), (Op.RELU, {})),
    "conv2d_winograd_f4": lambda: _chain((Op.CONV2D, {"weight": _w(32, C, 3, 3), "bias": _vec(c=32), "stride": (1, 1),
                                                      "padding": (1, 1), "algorithm": "winograd_f4"}), (Op.RELU, {})),
    "conv2d_pad_value": lambda: _chain((Op.CONV2D, {"weight": _w(16, C, 3, 3), "stride": (1, 1), "padding": (2, 1),
                                                    "pad_value": _vec(0.5, 2.0)})),
    "depthwise_conv2d": lambda: _chain((Op.DEPTHWISE_CONV2D, {"weight": _w(C, 1, 3, 3), "bias": _vec(),
                                                               "stride": (1, 1), "padding": (1, 1)})),
    "depthwise_conv2d_strided": lambda: _chain((Op.DEPTHWISE_CONV2D, {"weight": _w(C, 1, 3, 3), "stride": (2, 2),
                                                                       "padding": (1, 1)})),
    "group_conv2d": lambda: _chain((Op.GROUP_CONV2D, {"weight": _w(24, C // 2, 3, 3), "bias": _vec(c=24), "groups": 2,
                                                       "stride": (1, 1), "padding": (1, 1)})),
    "group_conv2d_strided": lambda: _chain((Op.GROUP_CONV2D, {"weight": _w(C, C // 4, 3, 3), "bias": _vec(),
                                                               "groups": 4, "stride": (2, 2), "padding": (1, 1)})),
    "group_conv2d_1x1_small_groups": lambda: _chain((Op.GROUP_CONV2D, {"weight": _w(8, C // 8, 1, 1), "groups": 8,
                                                                        "stride": (2, 1), "padding": (0, 0)})),
    "dense": lambda: _chain((Op.GLOBAL_AVGPOOL, {}), (Op.DENSE, {"weight": _w(5, C), "bias": _vec(c=5)})),
    "affine": lambda: _chain((Op.AFFINE, {"scale": _vec(), "bias": _vec()})),
    "affine_per_modality": lambda: _chain((Op.AFFINE, {"scale": _w(2, C), "bias": _w(2, C)}, ("modality",)),
                                          modality=True),
    "relu": lambda: _chain((Op.RELU, {})),
    "prelu": lambda: _chain((Op.PRELU, {"slope": _vec(0.1, 0.2)})),
    "sign": lambda: _chain((Op.SIGN, {})),
    "add": lambda: _chain((Op.ADD, {}, ("x",))),
    "maxpool2d": lambda: _chain((Op.MAXPOOL2D, {"kernel": (3, 3), "stride": (2, 2), "padding": (1, 1)})),
    "avgpool2d": lambda: _chain((Op.AVGPOOL2D, {"kernel": (2, 2), "stride": (2, 2)})),
    "global_avgpool": lambda: _chain((Op.GLOBAL_AVGPOOL, {})),
    "gem_pool": lambda: _chain((Op.RELU, {}), (Op.GEM_POOL, {"p": 3.0, "eps": 1e-6})),
    "maxpool2d_ceil_mode": lambda: _chain((Op.MAXPOOL2D, {"kernel": (3, 3), "stride": (2, 2), "padding": (0, 0),
                                                          "ceil_mode": True})),
    "global_maxpool": lambda: _chain((Op.GLOBAL_MAXPOOL, {})),
    "instance_norm": lambda: _chain((Op.INSTANCE_NORM, {"scale": _vec(c=8), "bias": _vec(c=8), "eps": 1e-5})),
    "sigmoid": lambda: _chain((Op.SIGMOID, {})),
    "hard_sigmoid": lambda: _chain((Op.HARD_SIGMOID, {})),
    "multiply": lambda: _chain((Op.MULTIPLY, {}, ("x",))),
    "clamp": lambda: _chain((Op.CLAMP, {"min": 0.0, "max": 0.6})),
    "clamp_below_only": lambda: _chain((Op.CLAMP, {"min": -0.2})),
    "l2_normalize": lambda: _chain((Op.GLOBAL_AVGPOOL, {}), (Op.L2_NORMALIZE, {"eps": 1e-12})),
    "concat": lambda: _joined(),
    "scale_channels": lambda: _gated(),
    "pad": lambda: _chain((Op.PAD, {"padding": (1, 2), "value": _vec(50.0, 100.0)})),
    "bitpack_bconv2d": lambda: _chain(BITS, (Op.BCONV2D, _bconv(16, 3, (1, 1), (1, 1)))),
    "bconv2d_accumulator_bitpack": lambda: _chain(
        BITS, (Op.BCONV2D, _bconv(C, 3, (2, 2), (1, 1), accumulator=True)),
        (Op.BITPACK, {"threshold": np.arange(-8, 8, dtype=np.int32), "flip": np.zeros(C, np.int8)}),
        (Op.BCONV2D, _bconv(8, 1, (1, 1), (0, 0)))),
    "binary_dense": lambda: _chain((Op.GLOBAL_AVGPOOL, {}), BITS, (Op.BCONV2D, _bconv(8, 1, (1, 1), (0, 0)))),
    "quantize": lambda: _chain((Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 128})),
    "dequantize": lambda: _chain((Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 128}),
                                 (Op.DEQUANTIZE, {"scale": const([0.02]), "zero_point": 128})),
    "dequantize_per_modality": lambda: _chain(
        (Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.01, 0.03]), "zero_point": 0}, ("modality",)),
        (Op.DEQUANTIZE, {"scale": const([0.01, 0.03]), "zero_point": 0}, ("modality",)), modality=True),
    "quantize_per_modality": lambda: _chain((Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.01, 0.03]),
                                                                          "zero_point": 0}, ("modality",)),
                                            modality=True),
    "conv2d_int8": lambda: _chain((Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
                                  (Op.CONV2D_INT8, QCONV(32, C, 3, stride=(2, 1), padding=(1, 1)))),
    "conv2d_int8_per_modality": lambda: _chain(   # shared int8 weights, signed per-modality scales
        (Op.QUANTIZE, {"scale": const([0.02, 0.05]), "zero_point": 128}, ("modality",)),
        (Op.CONV2D_INT8, {**QCONV(16, C, 3, padding=(1, 1)), "input_scale": const([0.02, 0.05]),
                          "weight_scale": const(RNG.uniform(0.001, 0.01, (2, 16)) * [[1] * 15 + [-1], [1] * 16]),
                          "bias": _w(2, 16), "zero_point": 128}, ("modality",)), modality=True),
    "conv2d_int8_per_modality_weights": lambda: _chain(
        (Op.QUANTIZE, {"scale": const([0.02, 0.05]), "zero_point": 128}, ("modality",)),
        (Op.CONV2D_INT8, {**QCONV(16, C, 1, lead=(2,)), "input_scale": const([0.02, 0.05]),
                          "zero_point": 128}, ("modality",)), modality=True),
    "to_bf16": lambda: _chain((Op.TO_BF16, {})),
    "from_bf16": lambda: _chain((Op.TO_BF16, {}), (Op.FROM_BF16, {})),
    "conv2d_bf16": lambda: _chain((Op.TO_BF16, {}), (Op.CONV2D_BF16, BF16CONV(32, C, 3, stride=(2, 1), padding=(1, 1)))),
    "conv2d_bf16_per_modality": lambda: _chain((Op.TO_BF16, {}), (Op.CONV2D_BF16, BF16CONV(16, C, 1, modal=True),
                                                                  ("modality",)), modality=True),
}
LOWERED_BY_A_CASE = {Op(c.split("_per_")[0]) for c in CASES if c.split("_per_")[0] in SPECS} | {
    Op.INPUT, Op.GLOBAL_AVGPOOL, Op.BITPACK, Op.BCONV2D}


def test_cases_cover_every_op_but_batch_norm():
    assert LOWERED_BY_A_CASE == set(Op) - {Op.BATCH_NORM}


@pytest.fixture(scope="module")
def host():
    return get_target("x86-64")


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_lowering_matches_its_reference(case, host):
    g = CASES[case]()
    modal = "modality" in g
    mode = "mixed" if modal else "visible"
    x = RNG.standard_normal((3, C) + HW).astype(np.float32)
    m = np.array([0, 1, 1], np.int32)
    feeds = {"x": x, "modality": m} if modal else {"x": x}
    want = run_all(g, feeds)[g.outputs[0]]
    # a bf16 conv has three lowerings: the AMX-layout kernel (its loops here), CUDA's tensor-core
    # matmul (its bfloat16 TE, built here for the CPU) and, on targets without either such as
    # this one, the float32 conv of the decoded values; an int8 conv the target's dot-product
    # kernel and CUDA's tensor-core implicit GEMM (s8 x s8, its TE built here for the CPU): all checked
    options = [{**lowering_options(host), "bf16": kind}
               for kind in (tuple(Bf16Conv) if "conv2d_bf16" in case else (bf16_conv(host),))]
    if "conv2d_int8" in case:
        options.append({**options[0], "int8": Int8Flavour(signed=True, tensor_cores=True)})
    for opts in options:
        mod = to_relax({mode: g}, **opts)
        vm = relax.VirtualMachine(build(mod, host), tvm.cpu())
        args = [tvm.runtime.tensor(x)] + ([tvm.runtime.tensor(m)] if modal else [])
        got = vm[mode](*args).numpy()
        assert got.shape == want.shape and got.dtype == want.dtype
        tol = 1e-4 if case == "conv2d_winograd_f4" else 1e-5   # F(4x4)'s transforms: sixths, 4s and 8s
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_batch_norm_reaching_lowering_is_named():
    g = _chain((Op.RELU, {}))
    params = {"shared": (_vec(), _vec(), _vec(), _vec(0.1, 1.0) ** 2)}
    g.replace("n0", Node(Op.BATCH_NORM, ("x",), g["x"].shape, attrs={"eps": 1e-5, "params": params},
                         modality="shared", source="layer1.0.bn1"))
    with pytest.raises(LoweringError, match="batch_norm at layer1.0.bn1 reached lowering"):
        to_relax({"visible": verify(g)})


def test_costs_come_from_the_specs():
    from reidc.compiler.costs import macs, weight_bytes
    g = CASES["bitpack_bconv2d"]()
    spatial = HW[0] * HW[1]
    assert macs(g) == {"binary_macs": 16 * C * 9 * spatial, "float_macs": 0, "int8_macs": 0,
                       "ops": 16 * C * 9 * spatial // 64,
                       "fp32_equivalent_ops": 16 * C * 9 * spatial}
    assert weight_bytes(g) == {"fp32_weight_bytes": 4 * 16 * C * 9, "stored_weight_bytes": 16 * 9 * 8}
    assert spec_of(Op.RELU).cost(g["n0"]) == Cost()


def test_a_bn_whose_variance_plus_eps_is_not_positive_is_refused():
    g = _chain((Op.RELU, {}))
    var = np.ones(C, np.float32)
    var[5] = -1
    g.replace("n0", Node(Op.BATCH_NORM, ("x",), g["x"].shape, attrs={
        "eps": 1e-5, "params": {"shared": (_vec(), _vec(), _vec(), const(var))}}, modality="shared", source="bn1"))
    with pytest.raises(IRError, match=r"\(bn1\): shared variance \+ eps must be > 0 \(channel 5\)"):
        verify(g)


@pytest.mark.parametrize("attrs, message", [
    ({"stride": 1}, r"attribute 'stride' must be two integers >= 1, is 1"),
    ({"stride": (0, 1)}, r"attribute 'stride' must be two integers >= 1, is \(0, 1\)"),
    ({"padding": (-1, 0)}, r"attribute 'padding' must be two integers >= 0"),
    ({"weight": [[1.0]]}, r"attribute 'weight' must be a numeric array, is tuple"),
])
def test_attribute_kinds_are_checked_before_the_shape_rule(attrs, message):
    g = _chain((Op.RELU, {}))
    good = {"weight": _w(4, C, 3, 3), "stride": (1, 1), "padding": (1, 1)}
    node = Node(Op.CONV2D, ("x",), ("N", 4) + HW, attrs={**good, **attrs}, source="conv9")
    g.replace("n0", node)
    with pytest.raises(IRError, match=r"\(conv9\): " + message):
        verify(g)


def test_constants_are_read_only_all_the_way_down():
    n = Node(Op.BATCH_NORM, ("x",), ("N", 2), attrs={"eps": 1e-5, "params": {"shared": (np.ones(2), np.zeros(2))}})
    with pytest.raises(ValueError, match="read-only"):
        n.attrs["params"]["shared"][0][0] = 7


INT8_CASES = sorted(c for c in CASES if c.startswith("conv2d_int8"))


@pytest.mark.parametrize("preset_name, instruction", [("x86-avx512-vnni", "vpdpbusd"), ("x86-avx2", "vpmaddubsw")])
@pytest.mark.parametrize("case", INT8_CASES)
def test_int8_conv_uses_the_targets_dot_product(case, preset_name, instruction):
    """Built for AVX-512 VNNI, the int8 conv's inner product is one vpdpbusd per 16 x 4; for AVX2
    two vpmaddubsw + one vpmaddwd per 8 x 8, on 6-bit weights (what quantize_int8 gives that
    target) (checked in the assembly: no such machine needed).
    Where this machine has the ISA it also runs and matches the reference exactly."""
    preset = get_target(preset_name)
    g = CASES[case]()
    wmax = int8_flavour(preset).weight_max
    for nid, n in list(g.items()):   # AVX2's vpmaddubsw: 6-bit weights, as quantize_int8 gives them
        if n.op == Op.CONV2D_INT8 and wmax < 127:
            g.replace(nid, n.with_(attrs={**n.attrs, "weight": const(np.clip(n.attrs["weight"], -wmax, wmax))}))
    modal = "modality" in g
    mode = "mixed" if modal else "visible"
    ex = build(to_relax({mode: g}, int8=int8_flavour(preset)), preset)
    # weights picked per sample (a (2, O, I, kh, kw) int8 weight) are no affine tile: LLVM's loops
    # (which LLVM itself may turn into vpmaddwd, never into vpdpbusd)
    if case.endswith("_weights"):
        assert "vpdpbusd" not in asm_of(ex) and "vpmaddubsw" not in asm_of(ex)
    else:
        assert instruction in asm_of(ex)
    if preset.missing_on_host():
        pytest.skip(f"this CPU lacks {preset_name}: checked in its assembly only")
    x = RNG.standard_normal((3, C) + HW).astype(np.float32)
    m = np.array([0, 1, 1], np.int32)
    feeds = {"x": x, "modality": m} if modal else {"x": x}
    want = run_all(g, feeds)[g.outputs[0]]
    vm = relax.VirtualMachine(ex, tvm.cpu())
    got = vm[mode](*[tvm.runtime.tensor(v) for v in feeds.values()]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_conv_on_amx_tiles():
    """int8 convs are AMX's: tile loads and tdpbusd (x86-amx, checked in the assembly), the first
    one too (its uint8 input, quantized in 16-channel blocks, is re-blocked to 64): no vpdpbusd
    is left. Where this machine has AMX-INT8 it runs (after asking Linux for the tile state) and
    matches exactly."""
    from reidc.targets.amx import request_amx
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", 64) + HW, attrs={"name": "x"}))
    steps = [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
             (Op.CONV2D_INT8, QCONV(64, 64, 3, padding=(1, 1))), (Op.RELU, {}),
             (Op.QUANTIZE, {"scale": const([0.05]), "zero_point": 0}), (Op.CONV2D_INT8, QCONV(128, 64, 3, padding=(1, 1))),
             (Op.QUANTIZE, {"scale": const([0.05]), "zero_point": 128}), (Op.CONV2D_INT8, {**QCONV(64, 128, 1),
                                                                                     "zero_point": 128})]
    prev = "x"
    for k, (op, attrs) in enumerate(steps):
        prev = g.add(f"n{k}", Node(op, (prev,), infer(op, [g[prev].shape], attrs), spec_of(op).out_dtype(attrs), attrs))
    g.outputs = [prev]
    g = verify(g)
    preset = get_target("x86-amx")
    ex = build(to_relax({"visible": g}, int8=int8_flavour(preset)), preset)
    asm = asm_of(ex)
    assert "tdpbusd" in asm and "tileloadd" in asm and "vpdpbusd" not in asm
    assert len({f for f in functions_with(asm, "tdpbusd") if "conv2d_int8" in f}) == 3
    if preset.missing_on_host() or not request_amx():
        pytest.skip("this CPU (or kernel) has no AMX-INT8: the AMX build is checked in its assembly only")
    x = RNG.standard_normal((2, 64) + HW).astype(np.float32)
    want = run_all(g, {"x": x})[g.outputs[0]]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_int8_conv_on_the_image_pads_its_channels_to_a_group(host):
    """The stem reads 3 image channels: its int8 weights carry a zero 4th channel and the kernel
    reads the uint8 image padded to 4 (exact against the reference)."""
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", 3) + HW, attrs={"name": "x"}))
    w = RNG.integers(-127, 128, (16, 4, 3, 3)).astype(np.int8)
    w[:, 3] = 0
    steps = [(Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 128}),
             (Op.CONV2D_INT8, {**QCONV(16, 4, 3, stride=(2, 2), padding=(1, 1)), "weight": const(w), "zero_point": 128})]
    prev = "x"
    for k, (op, attrs) in enumerate(steps):
        prev = g.add(f"n{k}", Node(op, (prev,), infer(op, [g[prev].shape], attrs), spec_of(op).out_dtype(attrs), attrs))
    g.outputs = [prev]
    g = verify(g)
    x = RNG.standard_normal((2, 3) + HW).astype(np.float32)
    want = run_all(g, {"x": x})[g.outputs[0]]
    got = relax.VirtualMachine(build(to_relax({"visible": g}, int8=int8_flavour(host)), host),
                               tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
