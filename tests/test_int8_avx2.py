"""int8 convs on AVX2 without VNNI (Haswell..., Zen 1-3): `vpmaddubsw` (u8 x s8 pairs summed into
int16, SATURATING) then `vpmaddwd` with int16 ones. One vpmaddubsw per vpmaddwd (8 output lanes
x 4 input channels) is exact only for 7-bit weights (2 * 255 * 63 = 32130 fits int16; 2 * 255 *
127 does not): the x86-avx2 flavour says weight_max 63 and the lowering refuses a weight beyond
it. With 6-bit weights (what the int8 pass gives by default there: paired_max 31) two
vpmaddubsw are added by one `vpaddw` before one vpmaddwd (8 lanes x 8 channels; two pair sums
2 * 2 * 255 * 31 = 31620 fit): the lowering annotates such a conv weight_max 31 and the schedule
pairs its groups. The builds are checked in their assembly everywhere; they run where this CPU
has AVX2."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax, te

import reidc
from reidc.compiler.ir import Graph, Node, Op, const, verify
from reidc.compiler.ir.interp import run_all
from reidc.compiler.ir.shapes import infer
from reidc.compiler.ir.spec import spec_of
from reidc.compiler.lower.build import build, int8_flavour
from reidc.compiler.lower.registry import LoweringError
from reidc.compiler.lower.to_relax import to_relax
from reidc.kernels.conv2d_int8 import Int8Flavour, conv2d_nchwc_int8, pack_weight_int8
from reidc.kernels.cpu_schedules import Conv2dNCHWcInt8
from reidc.targets import get_target

AVX2 = get_target("x86-avx2")
C, O, HW = 32, 32, (5, 6)
RNG = np.random.default_rng(5)


def _asm(ex) -> str:
    return "\n".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")


def _needs_avx2():
    if AVX2.missing_on_host():
        pytest.skip("this CPU lacks AVX2: checked in the assembly only")


def _edge_weights(peak: int) -> np.ndarray:
    """(O, C, 3, 3) int8: output channels 0-7 all +peak, 8-15 all -peak (every vpmaddubsw pair at
    +-2 * 255 * peak for a 255 input), the rest random in [-peak, peak]."""
    w = RNG.integers(-peak, peak + 1, (O, C, 3, 3)).astype(np.int8)
    w[:8], w[8:16] = peak, -peak
    return w


def _conv_graph(w: np.ndarray, zero_point: int = 0) -> Graph:
    """x -> relu -> quantize (scale 1: inputs >= 255 clip to 255) -> conv2d_int8 3x3, pad 1, unit
    scales, no bias: the output is the exact int32 sum as float32 (< 2^24 here)."""
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", C) + HW, attrs={"name": "x"}))
    conv = {"weight": const(w), "weight_scale": const(np.ones(O, np.float32)), "input_scale": const([1.0]),
            "zero_point": zero_point, "bias": const(np.zeros(O, np.float32)), "stride": (1, 1), "padding": (1, 1)}
    steps = [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([1.0]), "zero_point": zero_point}), (Op.CONV2D_INT8, conv)]
    prev = "x"
    for k, (op, attrs) in enumerate(steps):
        prev = g.add(f"n{k}", Node(op, (prev,), infer(op, [g[prev].shape], attrs), spec_of(op).out_dtype(attrs),
                                   attrs, source=f"layer1.{k}.conv"))
    g.outputs = [prev]
    return verify(g)


def _inputs() -> np.ndarray:
    """Sample 0: every input 255 (the quantize clips 300); sample 1: random in [0, 255]."""
    x = np.full((2, C) + HW, 300.0, np.float32)
    x[1] = RNG.uniform(0, 256, (C,) + HW)
    return x


def test_the_avx2_flavour_is_dot4_with_6_bit_weights_paired():
    assert int8_flavour(AVX2) == Int8Flavour(order="dot4", weight_max=63, paired_max=31)
    assert int8_flavour(get_target("x86-avx512-vnni")) == Int8Flavour(narrow_by_add=True)   # vpdpbusd: all of int8
    assert int8_flavour(get_target("x86-64")) == Int8Flavour(order="lanes")       # SSE: widening loops


@pytest.mark.parametrize("zero_point, peak", [(0, 31), (128, 31), (0, 63)])
def test_avx2_int8_conv_is_exact_at_the_saturation_edge(zero_point, peak):
    """Inputs 255 x weights +-31 (two pair sums +-31620, just inside int16: paired) or +-63 (one
    pair sum +-32130: one vpmaddubsw per vpmaddwd) through the real pipeline: the instructions
    in the assembly, and the result equals Op.CONV2D_INT8's reference exactly."""
    g = _conv_graph(_edge_weights(peak), zero_point)
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AVX2)), AVX2)
    asm = _asm(ex)
    assert "vpmaddubsw" in asm and "vpmaddwd" in asm and "vpdpbusd" not in asm
    per_widening = 2 if peak == 31 else 1
    assert asm.count("vpmaddubsw") == per_widening * asm.count("vpmaddwd")
    assert ("vpaddw" in asm) == (peak == 31)
    _needs_avx2()
    x = _inputs()
    want = run_all(g, {"x": x})[g.outputs[0]]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, want)


def test_a_weight_beyond_63_is_refused_by_name():
    w = _edge_weights(63)
    w[3, 5, 1, 1] = -64
    with pytest.raises(LoweringError, match=r"conv2d_int8 at layer1\.2\.conv: an int8 weight of magnitude 64, "
                                            r"beyond the target's 63"):
        to_relax({"visible": _conv_graph(w)}, int8=int8_flavour(AVX2))


def test_full_range_weights_on_avx2_take_the_exact_loops():
    """A kernel whose flavour allows all of int8 (weight_max 127) gets no vpmaddubsw on an AVX2
    target, even though its layout is dot4: LLVM's widening loops, exact for 255 x 127."""
    g = _conv_graph(_edge_weights(127))
    ex = build(to_relax({"visible": g}, int8=Int8Flavour()), AVX2)
    assert "vpmaddubsw" not in _asm(ex)
    _needs_avx2()
    x = _inputs()
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, run_all(g, {"x": x})[g.outputs[0]])


def _kernel_alone(w: np.ndarray, x: np.ndarray, weight_max: int) -> tuple[np.ndarray, str]:
    """The TE kernel scheduled by the AVX2 rule for `weight_max` (no lowering, so no guard) and
    run: int32 sums, and the assembly."""
    cb, ob = C, 16
    data = te.placeholder((1, 1) + HW + (cb,), "uint8", "data")
    weight = te.placeholder(pack_weight_int8(w, cb, ob).shape, "int8", "weight")
    acc = conv2d_nchwc_int8(data, weight, (1, 1), (0, 0), 0, flavour=Int8Flavour(weight_max=weight_max))
    out = te.compute(acc.shape, lambda *i: acc(*i) + 0, name="epilogue")
    target = AVX2.tvm_target()
    sch = Conv2dNCHWcInt8(avx2=True, accumulators=12, vector_bits=256).apply(
        te.create_prim_func([data, weight, out]), target, False)
    lib = tvm.compile(sch.mod, target=target)
    xs = np.ascontiguousarray(x.transpose(1, 2, 0)[None, None])   # (1, 1, H, W, C)
    res = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], "int32"))
    lib(tvm.runtime.tensor(xs), tvm.runtime.tensor(pack_weight_int8(w, cb, ob)), res)
    return res.numpy()[0].transpose(0, 3, 1, 2).reshape(O, *HW), _asm(lib)


@pytest.mark.parametrize("weight_max, peak, exact", [(63, 63, True), (63, 127, False), (31, 31, True), (31, 63, False)])
def test_the_bound_is_what_vpmaddubsw_needs(weight_max, peak, exact):
    """The kernel alone (1x1) on inputs 255, scheduled for `weight_max` 63 (one vpmaddubsw per
    vpmaddwd) or 31 (two, added by vpaddw): exact with weights up to the bound; beyond it the
    int16 sums overflow and the numbers are wrong, which is what the lowering's guard and the
    pass's 6-bit weights prevent: with 63, vpmaddubsw saturates each pair sum (2 * 255 * 127 =
    64770 -> 32767); with 31, vpaddw wraps the two pair sums (2 * 2 * 255 * 63 = 64260)."""
    _needs_avx2()
    w = np.ascontiguousarray(_edge_weights(peak)[..., :1, :1])
    x = np.full((C,) + HW, 255, np.uint8)
    want = np.einsum("oc,chw->ohw", w[:, :, 0, 0].astype(np.int64), x.astype(np.int64))
    got, asm = _kernel_alone(w, x, weight_max)
    assert "vpmaddubsw" in asm and ("vpaddw" in asm) == (weight_max == 31)
    assert np.array_equal(got, want) == exact
    if weight_max == 63 and not exact:   # output channel 0 (all +127): C / 2 pairs, each clipped to 32767
        assert got[0, 0, 0] == C // 2 * 32767 and want[0, 0, 0] == C * 255 * 127
    if weight_max == 31 and not exact:   # channel 0 (all +63): per 8 channels, 2 int16 lanes each of 2
        # pair sums (2 * 2 * 255 * 63 = 64260) wrapped by vpaddw to 64260 - 65536
        assert got[0, 0, 0] == C // 8 * 2 * (2 * 2 * 255 * 63 - 65536) and want[0, 0, 0] == C * 255 * 63


def test_int8_cmnas_resnet18_compiles_and_verifies_on_avx2(tmp_path):
    """End to end on x86-avx2: the pass quantizes weights to 6 bits by default, every int8 conv
    takes vpmaddubsw, and the build verifies against PyTorch fp32 by feature cosine."""
    _needs_avx2()
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="int8", target="x86-avx2", modes="visible",
                        calibration_images=4)
    assert art.manifest["verification"]["status"] == "passed"
    assert art.manifest["verification"]["min_cosine"]["visible"] >= 0.99
    assert "max |w| -> 31; 6-bit weights" in art.manifest["precision"]["int8"]["weights"]
    assert art.manifest["precision"]["int8"]["weight_max"] == 31   # what `reidc profile` takes its int8 peak from


def test_int8_weight_bits_beyond_what_the_target_takes_are_refused(tmp_path):
    """8-bit weights on AVX2 (whose vpmaddubsw takes 7): refused by name, nothing written; and
    out-of-range bits or bits without int8 before anything runs."""
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    with pytest.raises(reidc.InputError, match=r"--int8-weight-bits 8: target x86-avx2's int8 dot product is "
                                               r"exact for weights of at most 7 bits"):
        reidc.compile(model, output=tmp_path / "a", precision="int8", target="x86-avx2", modes="visible",
                      calibration_images=1, int8_weight_bits=8, verify=False)
    assert not (tmp_path / "a").exists()
    for bits, precision in [(9, "int8"), (1, "int8"), (7, "fp32")]:
        with pytest.raises(reidc.InputError, match=rf"int8_weight_bits={bits}: int8 weights take 2 to 8 bits"):
            reidc.compile(model, output=tmp_path / "b", precision=precision, int8_weight_bits=bits)


def test_int8_takes_7_bit_weights_where_6_miss_the_budget(tmp_path, monkeypatch):
    """Where the default 6-bit build misses a verification budget, compile builds again with
    7-bit weights and the manifest says why. The first build's miss is forced (a wrapper raises
    the VerificationError verification would); the second build is real."""
    _needs_avx2()
    import reidc.compiler.compile as comp
    real, seen = comp._compile_one, []

    def first_misses(ckpt, source, out, opts, inputs, bits_why=None):
        seen.append(opts.int8_weight_bits)
        if opts.int8_weight_bits is None:
            raise reidc.VerificationError("visible: min feature cosine 0.98 < 0.99")
        return real(ckpt, source, out, opts, inputs, bits_why)
    monkeypatch.setattr(comp, "_compile_one", first_misses)
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="int8", target="x86-avx2", modes="visible",
                        calibration_images=2)
    assert seen == [None, 7]
    w = art.manifest["precision"]["int8"]
    assert w["weight_max"] == 63 and "7-bit weights" in w["weights"]
    assert w["weight_bits_why"] == ("6-bit weights missed verification (visible: min feature cosine 0.98 < 0.99); "
                                    "built with 7-bit weights")


def test_a_conv_requantizes_with_saturating_packs():
    """An int8 conv whose output is requantized to uint8 (the next layer's input): the clip is in
    int32 after the convert, so the epilogue narrows with packs (vpackuswb; no vpshufb chain)
    and clamps at 0 once, in int32; exact against the reference."""
    g = _conv_graph(_edge_weights(31))
    q = {"scale": const([40.0]), "zero_point": 0}
    g.add("q", Node(Op.QUANTIZE, (g.outputs[0],), g[g.outputs[0]].shape, spec_of(Op.QUANTIZE).out_dtype(q), q))
    g.outputs = ["q"]
    verify(g)
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AVX2)), AVX2)
    asm = _asm(ex)
    assert "vpackuswb" in asm and "vpshufb" not in asm
    _needs_avx2()
    x = _inputs()
    want = run_all(g, {"x": x})["q"]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, want)
    assert want.min() == 0 and want.max() == 255


@pytest.mark.parametrize("zero_point", [0, 128])
def test_requantize_rounds_and_clips_like_the_reference(zero_point):
    """quantize (float -> uint8) then dequantize on AVX2, exact against the ops' references on
    ties (x.5 rounds to even), both bounds, far beyond them (+-1e12: outside int32) and every
    quarter in between."""
    shape = (2, 16, 10, 8)   # 2560 values: all of x below
    g = Graph("q")
    g.add("x", Node(Op.INPUT, (), ("N",) + shape[1:], attrs={"name": "x"}))
    q = {"scale": const([0.5]), "zero_point": zero_point}
    g.add("q", Node(Op.QUANTIZE, ("x",), infer(Op.QUANTIZE, [g["x"].shape], q), spec_of(Op.QUANTIZE).out_dtype(q), q))
    d = {"scale": const([1.0]), "zero_point": zero_point}
    g.add("d", Node(Op.DEQUANTIZE, ("q",), g["q"].shape, attrs=d))
    g.outputs = ["d"]
    verify(g)
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AVX2)), AVX2)
    _needs_avx2()
    x = np.concatenate([[1e12, -1e12, 63.75, 64.25, 127.75, 128.25], np.arange(-300, 300, 0.25)]).astype(np.float32)
    x = np.resize(x, shape)
    want = run_all(g, {"x": x})["d"]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, want)
    assert want.min() == -zero_point and want.max() == 255 - zero_point
