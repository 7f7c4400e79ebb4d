"""Bit-packing on x86 as vector compares (kernels/bitpack.py, bitpack_schedule.py `Bitpack`,
x86_intrin.py `bitpack_intrinsic`): bit-exact against Op.BITPACK's reference, values equal to
the thresholds, NaN and infinities included, both flip values, per-modality thresholds, int32
accumulators, partial words (the unrolled fallback); and the generated code compares vectors
into masks instead of one scalar compare and branch per bit."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax, te

from reidc.compiler.ir import Graph, Node, Op, const, verify
from reidc.compiler.ir.bits import pack_bits, words
from reidc.compiler.ir.interp import run_all
from reidc.compiler.ir.shapes import infer
from reidc.compiler.ir.spec import spec_of
from reidc.compiler.lower.build import build, int8_flavour
from reidc.compiler.lower.to_relax import to_relax
from reidc.kernels.bitpack import bitpack_signed_nchwc, signed_bounds, whole_words
from reidc.kernels.bitpack_schedule import Bitpack
from reidc.targets import get_target

RNG = np.random.default_rng(7)


def _avx2_here() -> bool:
    try:
        return " avx2 " in " " + open("/proc/cpuinfo").read().replace("\n", " ") + " "
    except OSError:
        return False


RUN_TARGETS = ["host"] + (["x86-avx2"] if _avx2_here() else [])


def _graph(c, h, w, steps, modal=False):
    g = Graph("bp")
    g.add("x", Node(Op.INPUT, (), ("N", c, h, w), attrs={"name": "x"}))
    if modal:
        g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
    prev = "x"
    for k, (op, attrs, *more) in enumerate(steps):
        inputs = (prev,) + tuple(more[0] if more else ())
        shape = infer(op, [g[i].shape for i in inputs], attrs)
        prev = g.add(f"n{k}", Node(op, inputs, shape, spec_of(op).out_dtype(attrs), attrs))
    g.outputs = [prev]
    return verify(g)


def _bconv(c, o, accumulator=False):
    s = np.where(RNG.standard_normal((o, c, 1, 1)) >= 0, 1, -1).astype(np.int8)
    a = {"signs": s, "packed": pack_bits(np.transpose(s, (0, 2, 3, 1)) < 0), "word": "uint64",
         "stride": (1, 1), "padding": (0, 0)}
    if accumulator:
        return {**a, "accumulator": True}
    return {**a, "scale": const(RNG.uniform(0.5, 1.5, o).astype(np.float32)),
            "bias": const(RNG.standard_normal(o).astype(np.float32))}


def _bits(thr_shape, flip_p=0.5):
    return {"threshold": const(RNG.standard_normal(thr_shape).astype(np.float32) * 0.5),
            "flip": (RNG.random(thr_shape) < flip_p).astype(np.int8)}


def _input(g, n, modality):
    """Random x with some values exactly at the first bitpack's thresholds, NaN and +-inf."""
    _, c, h, w = g["x"].shape
    x = RNG.standard_normal((n, c, h, w)).astype(np.float32)
    first = next(nd for _, nd in g.items() if nd.op == Op.BITPACK)
    if first.inputs[0] == "x":
        thr = np.asarray(first.attrs["threshold"])
        per = thr[modality] if thr.ndim == 2 else np.broadcast_to(thr, (n, c))
        hit = RNG.random((n, c, h, w)) < 0.3
        x = np.where(hit, per[:, :, None, None], x).astype(np.float32)
    x[0, 1, 0, 0], x[-1, 2, -1, -1], x[0, 3, 0, -1] = np.nan, np.inf, -np.inf
    return x


def _check(g, target, n=3):
    preset = get_target(target)
    modal = "modality" in g
    mode = "mixed" if modal else "visible"
    m = np.array([0, 1, 1, 0][:n], np.int32)
    x = _input(g, n, m)
    feeds = {"x": x, "modality": m} if modal else {"x": x}
    ref = run_all(g, feeds)
    vm = relax.VirtualMachine(build(to_relax({mode: g}, int8=int8_flavour(preset)), preset), tvm.cpu())
    got = vm[f"{mode}_bits"](*[tvm.runtime.tensor(a) for a in ([x, m] if modal else [x])])
    packs = [nid for nid, nd in g.items() if nd.op == Op.BITPACK]
    assert len(got) == len(packs) + 1
    for nid, out in zip(packs, list(got)[1:]):
        r = np.asarray(ref[nid])
        want = pack_bits(np.moveaxis(r, 1, -1) < 0)  # (N, H, W, words), or (N, words) for (N, C)
        np.testing.assert_array_equal(out.numpy().reshape(want.shape), want, err_msg=f"{nid} on {target}")


CASES = {
    # whole words: the vectorised path
    "c64_cb16": lambda: _graph(64, 5, 7, [(Op.BITPACK, _bits(64)), (Op.BCONV2D, _bconv(64, 16))]),
    "c192_cb16": lambda: _graph(192, 3, 4, [(Op.BITPACK, _bits(192)), (Op.BCONV2D, _bconv(192, 16))]),
    "per_modality": lambda: _graph(128, 4, 3, [(Op.BITPACK, _bits((2, 128)), ("modality",)),
                                               (Op.BCONV2D, _bconv(128, 16))], modal=True),
    "no_flip": lambda: _graph(64, 4, 4, [(Op.BITPACK, _bits(64, 0.0)), (Op.BCONV2D, _bconv(64, 16))]),
    "all_flip": lambda: _graph(64, 4, 4, [(Op.BITPACK, _bits(64, 1.0)), (Op.BCONV2D, _bconv(64, 16))]),
    "dense_slice_cb128": lambda: _graph(128, 3, 3, [(Op.GLOBAL_AVGPOOL, {}), (Op.BITPACK, _bits(128)),
                                                     (Op.BCONV2D, _bconv(128, 8))]),
    "int32_accumulator": lambda: _graph(64, 4, 5, [
        (Op.BITPACK, _bits(64)), (Op.BCONV2D, _bconv(64, 64, accumulator=True)),
        (Op.BITPACK, {"threshold": (RNG.integers(-4, 5, 64) * 2).astype(np.int32),  # even: the dot's parity
                      "flip": (RNG.random(64) < 0.5).astype(np.int8)}),
        (Op.BCONV2D, _bconv(64, 16))]),
    # partial last words: the unrolled fallback
    "c40_cb8": lambda: _graph(40, 3, 5, [(Op.BITPACK, _bits(40)), (Op.BCONV2D, _bconv(40, 16))]),
    "c100_cb100": lambda: _graph(100, 3, 3, [(Op.BITPACK, _bits(100)), (Op.BCONV2D, _bconv(100, 16))]),
    "c100_per_modality": lambda: _graph(100, 2, 3, [(Op.BITPACK, _bits((2, 100)), ("modality",)),
                                                     (Op.BCONV2D, _bconv(100, 16))], modal=True),
}


@pytest.mark.parametrize("target", RUN_TARGETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_bitpack_bits_match_the_reference(case, target):
    _check(CASES[case](), target)


def _kernel(cb, c, dtype="float32", n=2, h=3, w=5, per_sample=False):
    X = te.placeholder((n, c // cb if c % cb == 0 else 1, h, w, cb), dtype, name="X")
    shape = (n, c) if per_sample else (c,)
    S, B = te.placeholder(shape, dtype, name="S"), te.placeholder(shape, dtype, name="B")
    return te.create_prim_func([X, S, B, bitpack_signed_nchwc(X, S, B, c)])


def _lib(func, target):
    tgt = get_target(target).tvm_target()
    sch = Bitpack().apply(func, tgt, False)
    return tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=tgt)


@pytest.mark.parametrize("target", RUN_TARGETS)
@pytest.mark.parametrize("cb, c, dtype, per_sample", [
    (8, 64, "float32", False), (32, 128, "float32", True), (64, 128, "float32", False),
    (16, 64, "int32", False), (8, 40, "float32", False)])
def test_bitpack_kernel_blocks(cb, c, dtype, per_sample, target):
    """Channel blocks narrower than 16 lanes (joined), 32 and 64 lanes, int32 data, per-sample
    tables; a partial word (40 channels) through the fallback."""
    n, h, w = 2, 3, 5
    lib = _lib(_kernel(cb, c, dtype, n, h, w, per_sample), target)
    if dtype == "int32":
        x = RNG.integers(-5, 6, (n, c, h, w)).astype(np.int32)
        thr = RNG.integers(-5, 6, (n, c) if per_sample else c).astype(np.int32)
    else:
        x = RNG.standard_normal((n, c, h, w)).astype(np.float32)
        thr = RNG.standard_normal((n, c) if per_sample else c).astype(np.float32)
        x[:, :, 0, :] = (thr if per_sample else np.broadcast_to(thr, (n, c)))[:, :, None]
        x[0, 0, 1, 1] = np.nan
    flip = (RNG.random(thr.shape) < 0.5).astype(np.int8)
    sign, bound = signed_bounds(thr, flip)
    xb = np.ascontiguousarray(x.reshape(n, c // cb, cb, h, w).transpose(0, 1, 3, 4, 2))
    out = tvm.runtime.tensor(np.zeros((n, h, w, words(c)), np.uint64))
    lib["main"](*[tvm.runtime.tensor(a) for a in (xb, sign, bound)], out)
    t = (thr if per_sample else np.broadcast_to(thr, (n, c)))[:, :, None, None]
    f = (flip if per_sample else np.broadcast_to(flip, (n, c)))[:, :, None, None].astype(bool)
    want = pack_bits(np.moveaxis(np.where(f, x > t, x < t), 1, -1))
    np.testing.assert_array_equal(out.numpy(), want)


def _compute_asm(target, cb=16, c=128, dtype="float32"):
    """The assembly of the kernel's parallel body (no entry-point argument checks)."""
    asm = _lib(_kernel(cb, c, dtype), target).mod.inspect_source("asm")
    body = re.search(r"\n\.L__tvm_parallel_lambda:\n(.*?)\.Lfunc_end", asm, re.S)
    assert body, "no parallel body found"
    return body.group(1)


@pytest.mark.parametrize("target, needs", [
    ("x86-avx512", ("vcmpltps", "kmov")), ("x86-avx2", ("vcmpltps", "vpmovmskb")),
    ("x86-64", ("cmpltps", "pmovmskb")), ("host", ("vcmpltps",))])
def test_bitpack_compares_vectors_without_branches(target, needs):
    body = _compute_asm(target)
    assert "ucomiss" not in body and "comiss" not in body, "a scalar compare per bit"
    assert not re.search(r"\bset[a-z]+\b", body), "a scalar flag per bit"
    for insn in needs:
        assert insn in body, insn
    # the only conditional jumps are the loops' (a few), not one per bit (128 here)
    assert len(re.findall(r"\n\s*j(?!mp)[a-z]+\s", body)) <= 6
    assert whole_words(16, 128) and not whole_words(8, 40) and not whole_words(100, 100)


def test_bitpack_int32_compares_vectors():
    body = _compute_asm("x86-avx512", cb=16, c=64, dtype="int32")
    assert "vpcmpgtd" in body or "vpcmpd" in body or "vpcmpltd" in body
    assert not re.search(r"\bset[a-z]+\b", body)
