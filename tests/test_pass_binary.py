"""The binary passes after detection, each three ways: the IR it produces, the numbers (the IR
interpreter before and after), and where it fires and where it must not:
fold_binary_scale (stage 2), fold_sign_threshold (stage 3), bitpack_weights (stage 4)."""
from collections import Counter

import numpy as np
import pytest

from reidc.compiler.ir import Graph, Node, Op, Placement, dump, verify
from reidc.compiler.ir.interp import run_all
from reidc.compiler.ir.shapes import infer
from reidc.compiler.ir.spec import spec_of
from reidc.compiler.passes.bitpack_weights import bitpack_weights
from reidc.compiler.passes.fold_binary_scale import fold_binary_scale
from reidc.compiler.passes.fold_sign_threshold import fold_sign_threshold

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 4, 6, 6)).astype(np.float32)
MIX = np.array([0, 1, 1, 0], np.int32)
SIGNS = RNG.choice(np.array([-1, 1], np.int8), (5, 4, 3, 3))
SPLIT = Placement.SPLIT


def _build(*nodes, channels=4) -> Graph:
    """Inputs `x` (N, channels, 6, 6) and `modality`, then nodes (id, op, inputs, attrs[, placement]),
    shapes and dtypes from the op specs; the last node is the output."""
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", channels, 6, 6), attrs={"name": "x"}))
    g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
    for k, (nid, op, ins, attrs, *place) in enumerate(nodes, start=1):
        shape = infer(op, [g[i].shape for i in ins], attrs)
        g.add(nid, Node(op, ins, shape, spec_of(op).out_dtype(attrs), attrs, modality=place[0] if place else "any"),
              order=k)
    g.outputs = [nodes[-1][0]]
    return verify(g)


def _values(g, x=X):
    return run_all(g, {"x": x, "modality": np.resize(MIX, len(x))})


def _pack(c=4, thr=None, flip=None):
    return {"threshold": np.zeros(c, np.float32) if thr is None else thr,
            "flip": np.zeros(c, np.int8) if flip is None else flip}


def _bconv(scale=None, bias=None, signs=SIGNS):
    o = signs.shape[0]
    return {"signs": signs, "stride": (1, 1), "padding": (1, 1),
            "scale": RNG.uniform(0.5, 2, o).astype(np.float32) if scale is None else scale,
            "bias": RNG.normal(size=o).astype(np.float32) if bias is None else bias}


def _bn(c, sets=("shared",)):
    def stats():
        return (RNG.uniform(-2, 2, c).astype(np.float32), RNG.normal(size=c).astype(np.float32),
                RNG.normal(size=c).astype(np.float32), RNG.uniform(0.5, 2, c).astype(np.float32))
    return {"eps": 1e-5, "params": {k: stats() for k in sets}}


def _ops(g):
    return [str(n.op) for _, n in g.items()]


# --- fold_binary_scale ----------------------------------------------------------------------
FOLLOWERS = {
    "shared BN": ("fold_bn_into_bconv", Op.BATCH_NORM, ("b",), _bn(5), Placement.SHARED),
    "split BN": ("fold_bn_into_bconv", Op.BATCH_NORM, ("b", "modality"), _bn(5, ("visible", "infrared")), SPLIT),
    "affine": ("fold_affine_into_bconv", Op.AFFINE, ("b",),
               {"scale": RNG.normal(size=5).astype(np.float32), "bias": RNG.normal(size=5).astype(np.float32)},
               Placement.ANY),
}


@pytest.mark.parametrize("follower", FOLLOWERS)
def test_fold_binary_scale_folds_into_scale_and_bias_only(follower):
    rule, op, ins, attrs, place = FOLLOWERS[follower]
    g = _build(("p", Op.BITPACK, ("x",), _pack()), ("b", Op.BCONV2D, ("p",), _bconv()), ("n", op, ins, attrs, place))
    st = Counter()
    out = verify(fold_binary_scale(g, st))
    assert st == Counter({rule: 1})
    assert _ops(out) == ["input", "input", "bitpack", "bconv2d"] and out.outputs == ["b"]
    b = out["b"]
    assert b.attrs["signs"] is g["b"].attrs["signs"]  # the +-1 weights are never touched
    split = place == SPLIT
    assert b.attrs["scale"].shape == b.attrs["bias"].shape == ((2, 5) if split else (5,))
    assert b.inputs == (("p", "modality") if split else ("p",)) and b.modality == (SPLIT if split else "any")
    np.testing.assert_allclose(_values(out)["b"], _values(g)["n"], rtol=1e-5, atol=1e-5)


def test_fold_binary_scale_does_not_fire_on_a_shared_bconv_output_or_a_float_conv():
    used_twice = _build(("p", Op.BITPACK, ("x",), _pack()), ("b", Op.BCONV2D, ("p",), _bconv()),
                        ("n", Op.BATCH_NORM, ("b",), _bn(5), Placement.SHARED), ("sum", Op.ADD, ("n", "b"), {}))
    after_conv = _build(("c", Op.CONV2D, ("x",), {"weight": SIGNS.astype(np.float32), "stride": (1, 1),
                                                   "padding": (1, 1)}),
                        ("n", Op.BATCH_NORM, ("c",), _bn(5), Placement.SHARED))
    st = Counter()
    for g in (used_twice, after_conv):
        assert dump(fold_binary_scale(g, st)) == dump(g)
    assert st == Counter({"fold_bn_into_bconv:skipped:producer has one use": 1,
                          f"fold_bn_into_bconv:skipped:producer is {Op.BCONV2D}": 1})


# --- fold_sign_threshold --------------------------------------------------------------------
# power-of-two scales: x * s + t and x < -t / s are both exact, so the bits must match exactly
S = np.array([2.0, -0.5, 1.0, 4.0], np.float32)
T = np.array([1.0, 0.25, -0.5, 2.0], np.float32)


@pytest.mark.parametrize("split", [False, True], ids=["shared", "per-modality"])
def test_sign_threshold_from_an_affine(split):
    scale, shift = (np.stack([S, -S]), np.stack([T, 2 * T])) if split else (S, T)
    a_ins = ("x", "modality") if split else ("x",)
    g = _build(("a", Op.AFFINE, a_ins, {"scale": scale, "bias": shift}), ("p", Op.BITPACK, ("a",), _pack()),
               ("b", Op.BCONV2D, ("p",), _bconv()))
    st = Counter()
    out = verify(fold_sign_threshold(g, st))
    assert st["fold_sign_threshold"] == 1 and "a" not in out
    p = out["p"]
    assert p.inputs == a_ins and p.modality == (SPLIT if split else "any")
    np.testing.assert_array_equal(p.attrs["threshold"], -shift / scale)
    np.testing.assert_array_equal(p.attrs["flip"], (scale < 0).astype(np.int8))
    before, after = _values(g), _values(out)
    np.testing.assert_array_equal(after["p"], before["p"])
    np.testing.assert_array_equal(after["b"], before["b"])


def test_sign_threshold_from_a_bn():
    bn = _bn(4)
    g = _build(("n", Op.BATCH_NORM, ("x",), bn, Placement.SHARED), ("p", Op.BITPACK, ("n",), _pack()),
               ("b", Op.BCONV2D, ("p",), _bconv()))
    out = verify(fold_sign_threshold(g, Counter()))
    assert _ops(out) == ["input", "input", "bitpack", "bconv2d"]
    thr = out["p"].attrs["threshold"].reshape(1, 4, 1, 1)
    x = thr + np.where(X < 0, X - 0.01, X + 0.01)  # no activation within rounding of its threshold
    np.testing.assert_array_equal(_values(out, x)["p"], _values(g, x)["p"])


@pytest.mark.parametrize("split", [False, True], ids=["shared", "per-modality"])
def test_threshold_on_the_integer_accumulator(split):
    signs2 = RNG.choice(np.array([-1, 1], np.int8), (3, 5, 3, 3))
    a = np.array([0.5, -0.25, 1.0, 2.0, -1.0], np.float32)
    c = np.array([0.3, 0.1, -0.7, 1.1, 0.45], np.float32)  # -c/a never an integer: no ties
    scale, bias = (np.stack([a, -a]), np.stack([c, c + 1])) if split else (a, c)
    b1 = ("b1", Op.BCONV2D, ("p1", "modality") if split else ("p1",), _bconv(scale, bias), SPLIT if split else "any")
    g = _build(("p1", Op.BITPACK, ("x",), _pack()), b1, ("p2", Op.BITPACK, ("b1",), _pack(5)),
               ("b2", Op.BCONV2D, ("p2",), _bconv(signs=signs2)))
    st = Counter()
    out = verify(fold_sign_threshold(g, st))
    assert st["threshold_on_accumulator"] == 1 and st["fold_sign_threshold"] == 0
    assert st["threshold_on_accumulator:skipped:producer is a float-output bconv2d"] == 1  # p1 reads x
    acc, p2 = out["b1"], out["p2"]
    assert acc.dtype == "int32" and acc.attrs["accumulator"] and acc.inputs == ("p1",) and acc.modality == "any"
    assert p2.attrs["threshold"].dtype == np.int32 and p2.attrs["threshold"].shape == scale.shape
    assert p2.inputs == (("b1", "modality") if split else ("b1",))
    np.testing.assert_array_equal(p2.attrs["flip"], (scale < 0).astype(np.int8))
    before, after = _values(g), _values(out)
    np.testing.assert_array_equal(after["p2"], before["p2"])
    np.testing.assert_array_equal(after["b2"], before["b2"])


def test_sign_threshold_does_not_fire():
    done = _build(("a", Op.AFFINE, ("x",), {"scale": S, "bias": T}),
                  ("p", Op.BITPACK, ("a",), _pack(thr=np.ones(4, np.float32))), ("b", Op.BCONV2D, ("p",), _bconv()))
    used_twice = _build(("a", Op.AFFINE, ("x",), {"scale": S, "bias": T}), ("p", Op.BITPACK, ("a",), _pack()),
                        ("b", Op.BCONV2D, ("p",), _bconv(signs=SIGNS[:4])), ("sum", Op.ADD, ("b", "a"), {}))
    after_relu = _build(("r", Op.RELU, ("x",), {}), ("p", Op.BITPACK, ("r",), _pack()),
                        ("b", Op.BCONV2D, ("p",), _bconv()))
    st = Counter()
    for g in (done, used_twice, after_relu):
        assert dump(fold_sign_threshold(g, st)) == dump(g)
    assert st == Counter({
        "fold_sign_threshold:skipped:not thresholded yet": 1, "threshold_on_accumulator:skipped:not thresholded yet": 1,
        "fold_sign_threshold:skipped:producer has one use": 1,
        "fold_sign_threshold:skipped:producer is a per-channel affine or BN": 1,
        "threshold_on_accumulator:skipped:producer is a float-output bconv2d": 2})


# --- bitpack_weights ------------------------------------------------------------------------
def test_bitpack_weights_packs_input_channels_into_words():
    signs = RNG.choice(np.array([-1, 1], np.int8), (3, 70, 3, 3))  # 70 channels: 2 uint64 words
    g = _build(("p", Op.BITPACK, ("x",), _pack(70)), ("b", Op.BCONV2D, ("p",), _bconv(signs=signs)), channels=70)
    st = Counter()
    out = verify(bitpack_weights(g, st))
    assert st == Counter({"bitpack_weights": 1})
    b = out["b"]
    packed = b.attrs["packed"]
    assert b.attrs["word"] == "uint64" and packed.dtype == np.uint64 and packed.shape == (3, 3, 3, 2)
    for ch in range(70):  # channel c is bit c % 64 of word c // 64, bit 1 meaning -1
        word, bit = divmod(ch, 64)
        np.testing.assert_array_equal((packed[..., word] >> np.uint64(bit)) & np.uint64(1), signs[:, ch] < 0)
    assert not (packed[..., 1] >> np.uint64(6)).any()  # unused high bits stay 0
    x = RNG.standard_normal((2, 70, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(_values(out, x)["b"], _values(g, x)["b"])
    again = Counter()
    assert dump(bitpack_weights(out, again)) == dump(out)  # packs once
    assert again == Counter({"bitpack_weights:skipped:not packed yet": 1})
