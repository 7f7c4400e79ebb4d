"""quantize's float -> uint8 on AVX-512 (kernels/narrow_u8.py): clip, then one float add of
1.5 * 2^23 whose low byte is the rounded value, narrowed with vpmovdb. Checked three ways: its
numbers against numpy's clip(rint(x)) on any float32 (ties to even included), that the lowering
takes it on the presets that narrow so and not elsewhere, and the instructions an int8 conv's
requantising epilogue ends in."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp
from tvm import relax, te

from reidc.compiler.ir import Op, const
from reidc.compiler.ir.interp import run_all
from reidc.compiler.lower.build import build, int8_flavour
from reidc.compiler.lower.to_relax import to_relax
from reidc.kernels.narrow_u8 import narrow_u8
from reidc.targets import get_target

from test_amx_tiles import _chain, _qconv

N = 64


def _built(zero_point: int):
    x = te.placeholder((N,), "float32", name="x")
    y = narrow_u8(x, zero_point)
    f = tvm.compile(tvm.IRModule({"main": te.create_prim_func([x, y]).with_attr("global_symbol", "main")}),
                    target="llvm")

    def run(v: np.ndarray) -> np.ndarray:
        out = tvm.runtime.tensor(np.zeros(N, np.uint8))
        f(tvm.runtime.tensor(v.astype(np.float32)), out)
        return out.numpy()
    return run


@pytest.fixture(scope="module")
def narrow():
    return _built(0)


def _want(v: np.ndarray, zero_point: int = 0) -> np.ndarray:
    return np.clip(np.rint(v) + zero_point, 0, 255).astype(np.uint8)


def test_a_zero_point_rounds_once_even_just_past_a_tie():
    """With zero point 128, x + 128 in float32 first would round x = 0.5 + 2^-24 onto 128.5
    and then to even (128), where rint(x) + 128 is 129: the zero point is in the constant."""
    run = _built(128)
    ties = np.arange(-130.5, 130, 1.0, dtype=np.float32)
    v = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf)), np.nextafter(ties, np.float32(-np.inf)),
                        [-1e30, 1e30, 0.0, -0.0]]).astype(np.float32)
    for k in range(0, len(v), N):
        chunk = np.resize(v[k:k + N], N)
        np.testing.assert_array_equal(run(chunk), _want(chunk, 128), err_msg=str(chunk))
    with pytest.raises(ValueError, match="even zero point"):
        narrow_u8(te.placeholder((N,), "float32", name="x"), 3)


def test_ties_bounds_and_far_values(narrow):
    v = np.concatenate([np.arange(-2.5, 258, 0.5), [-1e30, 1e30, -0.0, 254.5, 255.5, 0.49999997, 2.5000002,
                                                    np.float32(np.finfo(np.float32).max)]]).astype(np.float32)
    for k in range(0, len(v), N):
        chunk = np.resize(v[k:k + N], N)
        np.testing.assert_array_equal(narrow(chunk), _want(chunk), err_msg=str(chunk))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, N, elements=st.floats(-1e6, 1e6, width=32) | st.floats(-3, 260, width=32)))
def test_any_finite_float(narrow, v):
    np.testing.assert_array_equal(narrow(v), _want(v))


def _graph():
    quant = (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 128})
    w = np.random.default_rng(1).integers(-31, 32, (16, 16, 1, 1)).astype(np.int8)   # AVX2's bound too
    g = _chain(16, (4, 4), [quant, (Op.CONV2D_INT8, _qconv(16, 16, 1, zero_point=128, weight=w)),
                            (Op.GLOBAL_AVGPOOL, {})])
    return g


def _quantize_funcs(preset_name: str) -> tuple[bool, bool]:
    mod = to_relax({"visible": _graph()}, int8=int8_flavour(get_target(preset_name)))
    names = [gv.name_hint for gv in mod.functions]
    return any(n.startswith("narrow_u8") for n in names), "round" in mod.script()


@pytest.mark.parametrize("preset,fires", [("x86-avx512-vnni", True), ("x86-amx", True), ("x86-avx2", False),
                                          ("rpi5", False)])
def test_the_lowering_narrows_by_add_on_avx512_vnni_only(preset, fires):
    narrows, rounds = _quantize_funcs(preset)
    assert (narrows, rounds) == (fires, not fires)


def test_numbers_through_the_vnni_lowering_with_zero_point_128():
    preset = get_target("x86-avx512-vnni")
    if preset.missing_on_host():
        pytest.skip("this CPU lacks AVX-512 VNNI")
    g = _graph()
    ex = build(to_relax({"visible": g}, int8=int8_flavour(preset)), preset)
    x = np.random.default_rng(3).uniform(-4, 4, (2, 16, 4, 4)).astype(np.float32)
    x[0, 0, 0, :2] = [0.01, -0.03]   # x / 0.02 = 0.5 and -1.5: ties, to even
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, run_all(g, {"x": x})[g.outputs[0]], rtol=1e-5, atol=1e-5)
