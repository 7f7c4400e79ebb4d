"""--precision bf16: the rounding, the pass (the IR it produces, its numbers against the fp32
graph, where it fires and where it does not), the AMX-BF16 kernel (tdpbf16ps in the assembly;
strided convs through their input's phases), the AVX512-BF16 kernel (vdpbf16ps) and its
Winograd F(2x2) (the pass, the reference that models its roundings, the kernel against it) and
compiled networks verified by feature cosine against PyTorch fp32. What needs AMX-BF16 or
AVX512-BF16 to run is checked in its assembly on other CPUs."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import reidc
from reidc.compiler.ir import Graph, Node, Op, const, verify
from reidc.compiler.ir.interp import run
from reidc.compiler.ir.opset.refmath import from_bf16_bits, to_bf16_bits
from reidc.compiler.passes.convert_bf16 import bf16_blocker, convert_bf16
from reidc.targets import get_target

STEM_WHY = ("3 input channels: bf16 convs take whole blocks of 64 input channels (AMX-BF16's tile rows; "
            "the same rule on every target, so a build's numbers do not depend on it)")

RNG = np.random.default_rng(11)
AMX = get_target("x86-amx")


def _amx_here() -> bool:
    from reidc.targets.amx import request_amx
    return not AMX.missing_on_host() and request_amx()


# --- the rounding ---------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_rounding_is_to_the_nearest_bf16_ties_to_even(v):
    x = np.float32(v)
    got = from_bf16_bits(to_bf16_bits(np.array([x])))[0]
    bits = int(np.array([x]).view(np.uint32)[0])
    lo = np.array([bits & 0xFFFF0000], np.uint32).view(np.float32)[0]           # truncated toward zero
    hi = np.array([(bits & 0xFFFF0000) + 0x10000], np.uint32).view(np.float32)[0]  # next bf16 away from zero
    if not np.isfinite(hi):
        return
    d_lo, d_hi = abs(float(x) - float(lo)), abs(float(hi) - float(x))
    want = lo if d_lo < d_hi else hi if d_hi < d_lo else (lo if not (bits >> 16) & 1 else hi)
    assert got == want


def test_bf16_keeps_eight_significant_bits():
    x = RNG.standard_normal(10000).astype(np.float32) * 100
    r = from_bf16_bits(to_bf16_bits(x))
    assert np.all(np.abs(r - x) <= np.abs(x) * 2.0 ** -8)   # half a unit in the last of 8 significant bits
    assert np.array_equal(to_bf16_bits(r), to_bf16_bits(x))  # rounding twice changes nothing


# --- the pass -------------------------------------------------------------------------------
def _net(o2=64, modal=False, stride=(1, 1), proportional=True):
    """x(3 ch) -> stem conv (64) -> relu -> conv a (64, split BN folded when modal) -> relu ->
    {conv b, conv c} (o2, stride) -> add."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 3, 8, 8), attrs={"name": "x"}))
    if modal:
        g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
    hw = 8 // stride[0]

    def conv(nid, src, o, i, lead=(), s=(1, 1)):
        w = RNG.standard_normal((o, i, 3, 3)).astype(np.float32) * 0.1
        if lead:
            factor = RNG.uniform(-1.5, 1.5, o).astype(np.float32)[:, None, None, None]
            w = np.stack([w, w * factor if proportional else RNG.standard_normal(w.shape).astype(np.float32) * 0.1])
        b = RNG.standard_normal(lead + (o,)).astype(np.float32) * 0.1
        size = (8, 8) if s == (1, 1) else (hw, hw)
        g.add(nid, Node(Op.CONV2D, (src,) + (("modality",) if lead else ()), ("N", o) + size,
                        attrs={"weight": const(w), "bias": const(b), "stride": s, "padding": (1, 1)},
                        source=nid, modality="split" if lead else "any"))
    conv("stem", "x", 64, 3)
    g.add("r0", Node(Op.RELU, ("stem",), ("N", 64, 8, 8)))
    conv("a", "r0", 64, 64, (2,) if modal else ())
    g.add("r1", Node(Op.RELU, ("a",), ("N", 64, 8, 8)))
    conv("b", "r1", o2, 64, s=stride)
    conv("c", "r1", o2, 64, s=stride)
    g.add("s", Node(Op.ADD, ("b", "c"), ("N", o2, hw, hw)))
    g.outputs = ["s"]
    return verify(g)


def _cos(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_pass_converts_convs_shares_one_rounding_per_tensor_and_keeps_the_stem():
    g = _net()
    q, facts = convert_bf16(g)
    q = verify(q)
    assert q.count(Op.CONV2D_BF16) == 3 and q.count(Op.CONV2D) == 1 and q.count(Op.TO_BF16) == 2
    assert facts == {"fp32_convs": {"stem": STEM_WHY}}
    qb, qc = (q[n] for n, node in q.items() if node.source in ("b", "c"))
    assert qb.inputs == qc.inputs and q[qb.inputs[0]].op == Op.TO_BF16 and q[qb.inputs[0]].dtype == "bfloat16"
    assert qb.attrs["weight"].dtype == np.uint16
    assert np.array_equal(qb.attrs["weight"], to_bf16_bits(g[next(n for n, v in g.items() if v.source == "b")]
                                                           .attrs["weight"]))
    y = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    a, b = run(g, y), run(q, y)
    assert _cos(a, b).min() > 0.9999 and np.abs(a - b).max() <= 2 ** -7 * np.abs(a).max()


def test_pass_leaves_alone_what_the_kernel_cannot_take():
    g = _net(o2=48)                                    # 48 output channels: not a multiple of 64
    q, facts = convert_bf16(g)
    assert sorted(q[n].source for n, node in q.items() if node.op == Op.CONV2D_BF16) == ["a"]
    assert facts["fp32_convs"]["b"] == "48 output channels: the bf16 kernel writes blocks of 64"
    assert bf16_blocker(g, "a") is None and bf16_blocker(g, "s") is None   # an add is no conv
    m = _net(modal=True, proportional=False)           # two unrelated weight sets: no shared bf16 set
    q, facts = convert_bf16(m)
    assert facts["fp32_convs"]["a"] == "per-modality weights that are not one set times a per-channel factor"


def test_pass_in_a_mixed_graph_shares_folded_weights_with_a_per_modality_scale():
    g = _net(modal=True, stride=(2, 2))
    q = verify(convert_bf16(g).graph)
    qa = next(node for _, node in q.items() if node.source == "a")
    assert qa.op == Op.CONV2D_BF16 and qa.attrs["weight"].ndim == 4 and qa.attrs["out_scale"].shape == (2, 64)
    assert qa.inputs[-1] == "modality" and str(qa.modality) == "split"
    assert q.count(Op.CONV2D_BF16) == 3   # strided convs too (the kernel splits their input's phases)
    x = RNG.standard_normal((6, 3, 8, 8)).astype(np.float32)
    m = np.array([0, 1, 0, 1, 1, 0], np.int32)
    assert _cos(run(g, x, m), run(q, x, m)).min() > 0.9999


def test_a_residual_add_reads_the_bf16_copy_so_the_stream_is_stored_in_bf16():
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 64, 8, 8), attrs={"name": "x"}))
    w = lambda: const(RNG.standard_normal((64, 64, 3, 3)).astype(np.float32) * 0.05)
    g.add("a", Node(Op.CONV2D, ("x",), ("N", 64, 8, 8), attrs={"weight": w(), "stride": (1, 1), "padding": (1, 1)},
                    source="a"))
    g.add("r", Node(Op.RELU, ("a",), ("N", 64, 8, 8)))
    g.add("b", Node(Op.CONV2D, ("r",), ("N", 64, 8, 8), attrs={"weight": w(), "stride": (1, 1), "padding": (1, 1)},
                    source="b"))
    g.add("s", Node(Op.ADD, ("b", "r"), ("N", 64, 8, 8)))
    g.add("p", Node(Op.GLOBAL_AVGPOOL, ("r",), ("N", 64)))     # a float reader that is no add keeps float
    g.outputs = ["s", "p"]
    g = verify(g)
    q = verify(convert_bf16(g).graph)
    assert sorted(str(q[c].op) for c in q.consumers("r")) == ["global_avgpool", "to_bf16"]
    back = q["s"].inputs[1]
    assert q[back].op == Op.FROM_BF16 and q[q[back].inputs[0]].op == Op.TO_BF16 and q[back].dtype == "float32"
    assert q.count(Op.FROM_BF16) == 1 and q.count(Op.TO_BF16) == 2   # x's and r's copies
    assert convert_bf16(_net()).graph.count(Op.FROM_BF16) == 0       # no add reads a converted tensor there
    x = RNG.standard_normal((3, 64, 8, 8)).astype(np.float32)
    assert _cos(run(g, x), run(q, x)).min() > 0.9999
    assert q["p"].inputs == ("r",)   # the pool still reads the float tensor


# --- the kernel -----------------------------------------------------------------------------
def _two_bf16_convs(kernel, stride, padding, cin=64, depth=5, hw=(10, 12)):
    """to_bf16 -> bf16 conv (128 outputs, `stride`) -> relu -> to_bf16 -> bf16 conv (64 outputs),
    the first `depth` of them."""
    from reidc.compiler.ir.shapes import infer
    from reidc.compiler.ir.spec import spec_of
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", cin) + hw, attrs={"name": "x"}))
    w = lambda o, i: const(to_bf16_bits(RNG.standard_normal((o, i, kernel, kernel)).astype(np.float32) * 0.1))
    steps = [(Op.TO_BF16, {}), (Op.CONV2D_BF16, {"weight": w(128, cin), "bias": const(RNG.standard_normal(128)),
                                                 "stride": (stride, stride), "padding": (padding, padding)}),
             (Op.RELU, {}), (Op.TO_BF16, {}),
             (Op.CONV2D_BF16, {"weight": w(64, 128), "stride": (1, 1), "padding": (padding, padding)})]
    prev = "x"
    for k, (op, attrs) in enumerate(steps[:depth]):
        attrs = {a: const(np.asarray(v, np.float32)) if a == "bias" else v for a, v in attrs.items()}
        prev = g.add(f"n{k}", Node(op, (prev,), infer(op, [g[prev].shape], attrs), spec_of(op).out_dtype(attrs), attrs))
    g.outputs = [prev]
    return verify(g)


def _build_and_check(g, preset, cin, runs_here, tol):
    """Build `g` for `preset` and return its assembly; where `runs_here`, run it on a batch of 2
    against the op's reference, to `tol`."""
    import tvm
    from tvm import relax
    from reidc.compiler.ir.interp import run_all
    from reidc.compiler.lower.build import build, lowering_options
    from reidc.compiler.lower.to_relax import to_relax
    ex = build(to_relax({"visible": g}, **lowering_options(preset)), preset)
    asm = "\n".join(m.inspect_source("asm") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    if runs_here:
        x = RNG.standard_normal((2, cin) + tuple(g["x"].shape[2:])).astype(np.float32)
        want = run_all(g, {"x": x})[g.outputs[0]]
        got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    return asm


# One conv's float32 sums in another order: to 1e-5. Through a second conv, its input rounded to
# bf16 again: an element that lies at a rounding boundary can round the other way (one bf16 step,
# 2**-8 relative), which moves the next conv's outputs by up to ~1e-3 here; a wrong layout or
# tap moves them by O(1).
ONE_CONV, TWO_CONVS = 1e-5, 5e-3


@pytest.mark.parametrize("kernel, stride, padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0)])
def test_bf16_conv_on_amx_tiles(kernel, stride, padding):
    """A 64-channel bf16 input is AMX's, strided or not: tile loads and tdpbf16ps (x86-amx,
    checked in the assembly). Where this machine has AMX-BF16 it runs and matches the op's
    reference (float32 sums: to 1e-5)."""
    asm = _build_and_check(_two_bf16_convs(kernel, stride, padding), AMX, 64, _amx_here(), TWO_CONVS)
    assert asm.count("tdpbf16ps") >= 8 and "tileloadd" in asm
    _build_and_check(_two_bf16_convs(kernel, stride, padding, depth=2), AMX, 64, _amx_here(), ONE_CONV)
    if not _amx_here():
        pytest.skip("this CPU (or kernel) has no AMX-BF16: the build is checked in its assembly only")


@pytest.mark.parametrize("kernel, stride, padding, cin", [(3, 1, 1, 64), (3, 2, 1, 32), (1, 2, 0, 64), (1, 1, 0, 48)])
def test_bf16_conv_on_avx512_bf16(kernel, stride, padding, cin):
    """Without AMX, AVX512-BF16 (x86-avx512-bf16: Zen 4) runs each bf16 conv as vdpbf16ps on
    zmm registers, any even input channel block, strided or not. Where this machine has AVX512-BF16 it runs and matches the op's reference: float32
    sums in another order, and denormals flushed: to 1e-5 (ONE_CONV)."""
    preset = get_target("x86-avx512-bf16")
    here = not preset.missing_on_host()
    asm = _build_and_check(_two_bf16_convs(kernel, stride, padding, cin), preset, cin, here, TWO_CONVS)
    _build_and_check(_two_bf16_convs(kernel, stride, padding, cin, depth=2), preset, cin, here, ONE_CONV)
    dots = [ln for ln in asm.splitlines() if "vdpbf16ps" in ln]
    assert len(dots) >= 16 and all("zmm" in ln for ln in dots)
    assert "reidc_dpbf16ps_512" not in asm   # the wrapper is inlined, not called
    if not here:
        pytest.skip("this CPU has no AVX512-BF16: the build is checked in its assembly only")


@pytest.mark.parametrize("preset, kernel", [("x86-amx", "tiles"), ("x86-avx512-bf16", "tiles"),
                                            ("x86-avx512-vnni", "decoded"), ("x86-avx2", "decoded"), ("rpi5", "decoded"),
                                            ("sm75", "decoded"), ("sm86", "wmma"), ("sm90", "wmma")])
def test_each_target_lowers_bf16_convs_to_its_kernel(preset, kernel):
    """What a target's bf16 convs are lowered to (not what the manifest says): the AMX-layout
    kernel on AMX-BF16 targets, the bf16 tensor-core matmul on CUDA sm_80+, reidc's float32 conv
    of the decoded values everywhere else (Turing's tensor cores have no bf16)."""
    from reidc.compiler.lower.build import lowering_options
    from reidc.compiler.lower.to_relax import to_relax
    from reidc.kernels.conv2d import CONV_BLOCK
    from reidc.kernels.conv2d_bf16 import BCONV16_BLOCK, WMMA_BLOCK
    blocks = {"tiles": BCONV16_BLOCK, "wmma": WMMA_BLOCK, "decoded": CONV_BLOCK}
    mod = to_relax({"visible": convert_bf16(_net()).graph}, **lowering_options(get_target(preset)))
    convs = [f.script() for gv, f in mod.functions.items() if "conv2d_bf16" in gv.name_hint]
    assert convs and all({k for k, b in blocks.items() if f'"{b}"' in c} == {kernel} for c in convs)
    # AMX reads 64-channel rows (the rounding re-blocks to them); vdpbf16ps keeps fp32's blocks
    rounds = [f.script() for gv, f in mod.functions.items() if gv.name_hint.startswith("to_bf16")]
    reblocks = [r for r in rounds if 'T.int64(16)), "float32"' in r and 'T.int64(64)), "uint16"' in r]
    assert bool(reblocks) == (preset == "x86-amx")


# --- bf16 Winograd F(2x2, 3x3) (AVX512-BF16) ---------------------------------------------------
@pytest.mark.parametrize("preset, wino", [("x86-avx512-bf16", 2), ("x86-amx", 0), ("x86-avx512-vnni", 0),
                                          ("x86-avx2", 0), ("rpi5", 0), ("sm86", 0)])
def test_only_vdpbf16ps_targets_get_bf16_winograd_and_each_target_lowers_its_graph(preset, wino):
    """compile's last step (prepare._winograd) gives bf16 convs Winograd only where the target's
    bf16 convs run on vdpbf16ps (not AMX's tiles, not the decoded float32 convs, not CUDA), and
    each target's lowering takes the graph it gets; --no-winograd keeps them direct. No build:
    CPU only."""
    from reidc.compiler.lower.build import lowering_options
    from reidc.compiler.lower.to_relax import to_relax
    from reidc.compiler.prepare import CompileOptions, _winograd
    from reidc.compiler.ir import RunMode
    g = _two_bf16_convs(3, 1, 1)
    got = _winograd(g, RunMode.VISIBLE, CompileOptions(target=preset, precision="bf16"), Counter())
    assert sum(n.attr("algorithm") == "winograd_f2" for _, n in got.items()) == wino
    to_relax({"visible": got}, **lowering_options(get_target(preset)))
    off = _winograd(g, RunMode.VISIBLE, CompileOptions(target=preset, precision="bf16", winograd=False), Counter())
    assert all(n.attr("algorithm") is None for _, n in off.items())


def test_bf16_winograd_pass_fires_only_where_vdpbf16ps_runs_it():
    """choose_winograd with bf16=True (the target's bf16 convs run on vdpbf16ps) sets the bf16
    3x3 stride-1 convs to F(2x2) (never F(4x4), whatever the tiles policy) and nothing else;
    without it they stay direct. The verifier refuses what the kernel cannot take."""
    from reidc.compiler.passes.choose_winograd import choose_winograd
    from reidc.compiler.ir import IRError
    g = _two_bf16_convs(3, 2, 1)
    stats = Counter()
    out = choose_winograd(g, stats, tiles="4", bf16=True)
    algos = {nid: n.attr("algorithm") for nid, n in out.items() if n.op == Op.CONV2D_BF16}
    assert algos == {"n1": None, "n4": "winograd_f2"}     # the strided conv stays direct
    assert stats["winograd_bf16"] == 1 and stats["winograd_bf16:skipped:3x3_stride1_pad1"] == 1
    assert all(choose_winograd(g)[nid].attr("algorithm") is None for nid in algos)   # no vdpbf16ps: none
    bad = out["n1"].with_(attrs={**out["n1"].attrs, "algorithm": "winograd_f2"})     # stride 2
    out.replace("n1", bad)
    with pytest.raises(IRError, match="winograd_f2 needs a 3x3 weight with an even input channel count, stride 1"):
        verify(out)
    out.replace("n1", bad.with_(attrs={**bad.attrs, "algorithm": "winograd_f4"}))
    with pytest.raises(IRError, match="algorithm 'winograd_f4': expected direct or winograd_f2"):
        verify(out)


def test_bf16_winograd_reference_is_the_direct_conv_where_nothing_rounds():
    """The IR's reference (refmath.winograd_bf16) rounds V and U to bf16 as the kernel does: on
    small integers (x in [-4, 4], w multiples of 4: V and U exact in bf16) it equals the direct
    conv exactly; on random values it stays within 1% (relative L2) of the direct bf16 conv,
    the error the rounding of V and U adds (the verification's cosine budget judges it)."""
    from reidc.compiler.ir.opset.refmath import conv2d, winograd_bf16
    x = RNG.integers(-4, 5, (2, 6, 7, 9)).astype(np.float32)
    w = 4 * RNG.integers(-2, 3, (8, 6, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(winograd_bf16(to_bf16_bits(x), to_bf16_bits(w)), conv2d(x, w, (1, 1), (1, 1)))
    xb, wb = to_bf16_bits(RNG.standard_normal((2, 64, 7, 9)).astype(np.float32)), \
        to_bf16_bits(RNG.standard_normal((8, 64, 3, 3)).astype(np.float32))
    direct = conv2d(from_bf16_bits(xb).astype(np.float64), from_bf16_bits(wb).astype(np.float64), (1, 1), (1, 1))
    err = np.linalg.norm(winograd_bf16(xb, wb) - direct) / np.linalg.norm(direct)
    assert 1e-4 < err < 1e-2


def test_bf16_winograd_kernel_matches_its_reference():
    """The bf16 Winograd kernel (x86-avx512-bf16) on an odd map (overhanging tiles) after a
    direct bf16 conv: vdpbf16ps in its GEMM; where this machine has AVX512-BF16 it matches the
    IR reference, which models its roundings, to 1e-5 (one conv) / TWO_CONVS (two)."""
    from reidc.compiler.passes.choose_winograd import choose_winograd
    preset = get_target("x86-avx512-bf16")
    here = not preset.missing_on_host()
    for depth, tol in ((5, TWO_CONVS), (2, ONE_CONV)):
        g = _two_bf16_convs(3, 1, 1, depth=depth, hw=(9, 11))
        g = verify(choose_winograd(g, bf16=True))
        assert sum(n.attr("algorithm") == "winograd_f2" for _, n in g.items()) == depth // 2
        asm = _build_and_check(g, preset, 64, here, tol)
        assert asm.count("vdpbf16ps") >= 8
    if not here:
        pytest.skip("this CPU has no AVX512-BF16: the build is checked in its assembly only")


# --- compiled networks ------------------------------------------------------------------------
def _bf16_unit_here() -> str | None:
    """The preset whose bf16 unit this machine has (AMX-BF16 tiles, or AVX512-BF16), if any."""
    if _amx_here():
        return "x86-amx"
    return None if get_target("x86-avx512-bf16").missing_on_host() else "x86-avx512-bf16"


@pytest.mark.skipif(_bf16_unit_here() is None,
                    reason="needs AMX-BF16 or AVX512-BF16 to run the build (the kernels' assembly is checked above)")
def test_bf16_cmnas_compiles_verifies_by_cosine_and_states_each_layer(tmp_path):
    target = _bf16_unit_here()
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="bf16", modes="visible,mixed", target=target)
    v = art.manifest["verification"]
    assert v["status"] == "passed" and v["precision"] == "bf16" and min(v["min_cosine"].values()) >= 0.999
    p = art.manifest["precision"]
    assert p["real_valued"] == "bf16" and "nearest even" in p["bf16"]["weights"]
    assert p["bf16"]["kernel"].startswith({"x86-amx": "AMX-BF16 tiles", "x86-avx512-bf16": "AVX512-BF16"}[target])
    rows = {r["layer"]: r for r in p["layers"]}
    assert Counter(r["precision"] for r in rows.values()) == {"bf16": 19, "fp32": 1}   # all but the stem
    assert rows["conv1"]["why"] == STEM_WHY
    assert rows["layer2.0.conv1"]["precision"] == "bf16"                              # stride 2
    wino = {r["layer"] for r in rows.values() if r.get("algorithm") == "winograd F(2x2, 3x3)"}
    # vdpbf16ps: all 14 stride-1 3x3 convs are F(2x2) (layer2/3's strided ones and the 1x1s stay direct); AMX: none
    assert len(wino) == (14 if target == "x86-avx512-bf16" else 0) and "layer2.0.conv1" not in wino
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 32), dtype=np.float32)
    m = np.array([0, 1], np.int32)
    assert art.run(x, m).shape == (2, 512)


def test_bf16_without_bf16_units_builds_the_same_numbers_and_says_so(tmp_path):
    """A target with no bf16 dot product (x86-avx2: every x86-64-v3 CPU, so this runs here)
    builds bf16 too: the same graph (every conv AMX would take), as float32 convs of the decoded
    values (products exact, float32 sums: the tiles' numbers), verified by feature cosine against
    PyTorch fp32 like the AMX build; the manifest and the progress say so."""
    said = []
    model = reidc.zoo_model("cmnas-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "a", precision="bf16", modes="visible,mixed", target="x86-avx2",
                        progress=said.append)
    v = art.manifest["verification"]
    assert v["status"] == "passed" and v["precision"] == "bf16" and min(v["min_cosine"].values()) >= 0.999
    p = art.manifest["precision"]
    assert p["real_valued"] == "bf16" and p["bf16"]["kernel"].startswith("float32 convs (SIMD FMAs) of the decoded")
    assert "x86-avx2 has no bf16 dot product" in p["bf16"]["kernel"] and "fp32's speed" in p["bf16"]["kernel"]
    assert any(m.startswith("bf16 convs on x86-avx2: float32 convs (SIMD FMAs)") for m in said), said
    rows = {r["layer"]: r for r in p["layers"]}
    assert Counter(r["precision"] for r in rows.values()) == {"bf16": 19, "fp32": 1}   # as on AMX
    assert rows["conv1"]["why"] == STEM_WHY
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 32), dtype=np.float32)
    assert art.run(x, np.array([0, 1], np.int32)).shape == (2, 512)


def test_bf16_binarized_network_keeps_its_binary_convs(tmp_path):
    """bire-resnet18 at bf16 (x86-avx2): the 16 binary convs stay 1-bit, the 3 shortcut convs
    go bf16 and the stem (3 image channels) stays fp32. A random-weight BNN at 64x32 is chaotic
    (a bf16 rounding flips signs downstream: cosine 0.96 at 64x32, as for int8 in test_int8), so
    this builds unverified and holds the features to test_int8's looser bound."""
    from reidc.compiler.calibration import synthetic_images
    from reidc.compiler.reference import torch_forward
    model = reidc.zoo_model("bire-resnet18", input_size=(64, 32))
    art = reidc.compile(model, output=tmp_path / "b", precision="bf16", modes="visible", target="x86-avx2",
                        verify=False)
    rows = art.manifest["precision"]["layers"]
    assert Counter(r["precision"] for r in rows) == {"1-bit": 16, "bf16": 3, "fp32": 1}
    assert all(r["layer"].endswith("shortcut.conv") for r in rows if r["precision"] == "bf16")
    x = synthetic_images((64, 32), 4, False, seed=5)
    got, ref = art.run(x, "visible"), torch_forward(model.eval(), x, "visible")
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9
