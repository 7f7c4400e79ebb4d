"""Property tests (hypothesis) of the pure maths under the passes and kernels: the bit layout,
sign and integer thresholds, the zero-padding correction of a binary conv, BatchNorm folding
(shared and per-modality tables) and the mixed-batch plan."""
from __future__ import annotations

import numpy as np
from hypothesis import assume, example, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from reidc.compiler.ir import CODES, Graph, Modality, Node, Op, verify
from reidc.compiler.ir.bits import WORD_BITS, border_correction, expand_correction, pack_bits, pack_signs, words
from reidc.compiler.ir.interp import run as run_ir
from reidc.compiler.ir.opset.refmath import conv2d
from reidc.compiler.ir.shapes import infer
from reidc.compiler.passes import mixed_plan
from reidc.compiler.passes.binary_math import NEVER, binary_weight_scale, integer_threshold, sign_threshold
from reidc.compiler.passes.bn_math import bn_affine, bn_tables, fold_affine_into_conv, fold_affine_into_dense
from reidc.compiler.passes.fold_modality_bn import fold_modality_bn

SETTINGS = settings(max_examples=80, deadline=None)
finite32 = st.floats(-1e3, 1e3, allow_nan=False, width=32)


def unpack(packed: np.ndarray, channels: int) -> np.ndarray:
    bits = WORD_BITS[str(packed.dtype)]
    place = np.arange(channels)
    return (packed[..., place // bits] >> (place % bits).astype(packed.dtype)) & packed.dtype.type(1)


@SETTINGS
@given(neg=hnp.arrays(bool, hnp.array_shapes(min_dims=1, max_dims=3, max_side=70)),
       word=st.sampled_from(sorted(WORD_BITS)))
def test_pack_bits_round_trips_and_leaves_high_bits_zero(neg, word):
    packed = pack_bits(neg, word)
    c = neg.shape[-1]
    assert packed.shape == neg.shape[:-1] + (words(c, word),) and packed.dtype == np.dtype(word)
    np.testing.assert_array_equal(unpack(packed, c).astype(bool), neg)
    np.testing.assert_array_equal(unpack(packed, packed.shape[-1] * WORD_BITS[word])[..., c:], 0)


@SETTINGS
@given(x=hnp.arrays(np.float32, st.tuples(st.integers(1, 3), st.integers(1, 80)), elements=finite32))
def test_pack_signs_sets_a_bit_exactly_for_negatives(x):
    np.testing.assert_array_equal(unpack(pack_signs(x), x.shape[-1]).astype(bool), x < 0)


@SETTINGS
@given(s=hnp.arrays(np.float32, 6, elements=st.floats(-4, 4, width=32)),
       t=hnp.arrays(np.float32, 6, elements=st.floats(-4, 4, width=32)),
       x=hnp.arrays(np.float32, (5, 6), elements=finite32))
def test_sign_threshold_is_sign_of_the_affine(s, t, x):
    thr, flip = sign_threshold(s, t)
    y = x.astype(np.float64) * s + t
    bit = np.where(flip.astype(bool), x > thr, x < thr)
    clear = np.abs(y) > 1e-4 * (np.abs(x * s.astype(np.float64)) + np.abs(t) + 1e-30)  # not on the rounding edge
    clear &= ~((s == 0) & (t == 0))   # sign(0 * x + 0) = +1; the threshold form picks "never"
    np.testing.assert_array_equal(bit[clear], (y < 0)[clear])


def test_sign_threshold_stays_finite_for_tiny_scales():
    thr, flip = sign_threshold(np.float32([1e-40, 1e-30]), np.float32([1, -1e10]))
    assert np.isfinite(thr).all()
    np.testing.assert_array_equal(thr, [-NEVER, NEVER])   # x < -max: never a bit (t > 0); x < max: always


@SETTINGS
@given(a=hnp.arrays(np.float64, 5, elements=st.floats(-8, 8)), b=hnp.arrays(np.float64, 5, elements=st.floats(-500, 500)),
       dot=hnp.arrays(np.int64, (7, 5), elements=st.integers(-300, 300)))
def test_integer_threshold_is_exact_on_integer_dots(a, b, dot):
    thr, flip = integer_threshold(a, b)
    y = dot * a + b
    bit = np.where(flip.astype(bool), dot > thr, dot < thr)
    np.testing.assert_array_equal(bit, y < 0)


@SETTINGS
@given(alpha=hnp.arrays(np.float32, 4, elements=st.floats(0.125, 10, width=32)),
       signs=hnp.arrays(np.int8, (4, 3, 2, 2), elements=st.sampled_from([-1, 1])))
def test_binary_weight_scale_recovers_signs_and_scales(alpha, signs):
    got = binary_weight_scale(signs * alpha[:, None, None, None])
    assert got is not None
    np.testing.assert_array_equal(got[0], signs)
    np.testing.assert_allclose(got[1], alpha, rtol=1e-6)
    w = (signs * alpha[:, None, None, None]).astype(np.float32)
    w[0, 0, 0, 0] *= 1.5
    assert binary_weight_scale(w) is None


@SETTINGS
@given(o=st.integers(1, 4), c=st.integers(1, 5), k=st.integers(1, 4), h=st.integers(1, 7), w=st.integers(1, 7),
       stride=st.integers(1, 3), pad=st.integers(0, 2), seed=st.integers(0, 2 ** 16))
def test_border_correction_turns_plus_one_padding_into_zero_padding(o, c, k, h, w, stride, pad, seed):
    assume(h + 2 * pad >= k and w + 2 * pad >= k)
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((o, c, k, k)) < 0.5, -1, 1).astype(np.int64)
    x = np.where(rng.random((1, c, h, w)) < 0.5, -1, 1).astype(np.int64)
    zero_padded = conv2d(x, signs, (stride, stride), (pad, pad))[0]
    ones = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=1)   # padding bits are 0 = +1
    one_padded = conv2d(ones, signs, (stride, stride), (0, 0))[0]
    corr = expand_correction(*border_correction(signs, (h, w), (stride, stride), (pad, pad)))
    np.testing.assert_array_equal(one_padded - np.moveaxis(corr, 2, 0), zero_padded)


# --- BatchNorm folding (compiler/passes/bn_math.py) -------------------------------------------
def bn_stats(rng, c: int) -> tuple:
    """(gamma, beta, mean, var) float32 vectors of c, as a trained BN holds them."""
    return (rng.uniform(-3, 3, c).astype(np.float32), rng.normal(size=c).astype(np.float32),
            rng.normal(size=c).astype(np.float32), rng.uniform(0.05, 4, c).astype(np.float32))


def bn_reference(y: np.ndarray, stats, eps: float) -> np.ndarray:
    """BN of an (N, C, ...) float64 tensor, written as the definition: (y - mean) / sqrt(var + eps) * gamma + beta."""
    gamma, beta, mean, var = (np.asarray(a, np.float64).reshape((-1,) + (1,) * (y.ndim - 2)) for a in stats)
    return (y - mean) / np.sqrt(var + eps) * gamma + beta


def conv_case(o, i, k, with_bias, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(o, i, k, k)).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32) if with_bias else None
    x = rng.normal(size=(2, i, 5, 5))
    return rng, w, b, x


def conv(x, w, b, k):
    y = conv2d(x, np.asarray(w, np.float64), (1, 1), (k // 2, k // 2))
    return y if b is None else y + np.asarray(b, np.float64)[:, None, None]


def assert_close_to_terms(got, want, terms):
    """got == want up to float32 rounding of the folded constants: relative to the sum of the
    magnitudes of the terms (`terms`), not to the result, which may cancel to near zero."""
    assert (np.abs(got - want) <= 1e-5 * terms + 1e-9).all(), float(np.max(np.abs(got - want) / (terms + 1e-9)))


CONV_SHAPES = dict(o=st.integers(1, 4), i=st.integers(1, 3), k=st.sampled_from([1, 3]), with_bias=st.booleans(),
                   seed=st.integers(0, 2 ** 16), eps=st.sampled_from([1e-5, 1e-3, 0.1]))


@settings(max_examples=40, deadline=None)
@given(**CONV_SHAPES)
def test_bn_folded_into_conv_equals_conv_then_bn(o, i, k, with_bias, seed, eps):
    rng, w, b, x = conv_case(o, i, k, with_bias, seed)
    stats = bn_stats(rng, o)
    scale, shift = bn_tables({"shared": stats}, eps)
    np.testing.assert_array_equal(scale, bn_affine(*stats, eps)[0])
    fw, fb = fold_affine_into_conv(w, b, scale, shift)
    assert fw.dtype == fb.dtype == np.float32 and fw.shape == w.shape and fb.shape == (o,)
    want = bn_reference(conv(x, w, b, k), stats, eps)
    terms = conv(np.abs(x), np.abs(w) * np.abs(scale)[:, None, None, None], None, k) \
        + (np.abs(scale) * (0 if b is None else np.abs(b)) + np.abs(shift))[:, None, None]
    assert_close_to_terms(conv(x, fw, fb, k), want, terms)


@settings(max_examples=40, deadline=None)
@given(**CONV_SHAPES)
def test_per_modality_bn_tables_fold_row_by_modality_code(o, i, k, with_bias, seed, eps):
    rng, w, b, x = conv_case(o, i, k, with_bias, seed)
    params = {str(m): bn_stats(rng, o) for m in Modality}
    scale, shift = bn_tables(params, eps)
    assert scale.shape == shift.shape == (2, o)
    for m in Modality:   # row k of the tables is the modality whose code is k
        row = CODES[m]
        fw, fb = fold_affine_into_conv(w, b, scale[row], shift[row])
        want = bn_reference(conv(x, w, b, k), params[str(m)], eps)
        terms = conv(np.abs(x), np.abs(w) * np.abs(scale[row])[:, None, None, None], None, k) \
            + (np.abs(scale[row]) * (0 if b is None else np.abs(b)) + np.abs(shift[row]))[:, None, None]
        assert_close_to_terms(conv(x, fw, fb, k), want, terms)


@settings(max_examples=40, deadline=None)
@given(o=st.integers(1, 5), i=st.integers(1, 5), with_bias=st.booleans(), seed=st.integers(0, 2 ** 16),
       eps=st.sampled_from([1e-5, 1e-3]))
def test_bn_folded_into_a_following_dense_equals_bn_then_dense(o, i, with_bias, seed, eps):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(o, i)).astype(np.float32)
    b = rng.normal(size=o).astype(np.float32) if with_bias else None
    x = rng.normal(size=(3, i))
    stats = bn_stats(rng, i)
    scale, shift = bn_affine(*stats, eps)
    fw, fb = fold_affine_into_dense(w, b, scale, shift)
    want = bn_reference(x, stats, eps) @ w.astype(np.float64).T + (0 if b is None else b)
    terms = np.abs(x) @ (np.abs(w) * np.abs(scale)).T + np.abs(w) @ np.abs(shift) + (0 if b is None else np.abs(b))
    assert_close_to_terms(x @ fw.astype(np.float64).T + fb, want, terms)


# --- the mixed-batch plan (compiler/passes/mixed_plan.py) -------------------------------------
@settings(max_examples=200, deadline=None)
@given(o=st.integers(1, 1024), i=st.integers(1, 1024), k=st.sampled_from([1, 3, 5, 7]),
       hw=st.tuples(st.integers(1, 64), st.integers(1, 64)), forced=st.sampled_from([None, "affine", "weights"]))
@example(o=256, i=256, k=1, hw=(8, 8), forced=None)     # exactly the budget: weights
@example(o=256, i=257, k=1, hw=(8, 8), forced=None)     # 1 KiB over: affine
def test_mixed_plan_takes_weights_iff_the_second_copy_fits(o, i, k, hw, forced):
    c = mixed_plan.choose((o, i, k, k), ("N", o) + hw, forced)
    extra = o * i * k * k * 4
    assert c.extra_weight_bytes == extra
    assert c.conv_flops_per_sample == 2 * o * i * k * k * hw[0] * hw[1] and c.epilogue_flops_per_sample == o * hw[0] * hw[1]
    if forced:
        assert c.strategy == forced and "forced" in c.reason
    else:
        assert c.strategy == ("weights" if extra <= mixed_plan.WEIGHT_BUDGET_BYTES else "affine") and "budget" in c.reason


def conv_split_bn(o, i, k, with_bias, seed, eps) -> Graph:
    """x -> conv2d -> split BN, random constants."""
    rng, w, b, _ = conv_case(o, i, k, with_bias, seed)
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", i, 5, 5), attrs={"name": "x"}))
    g.add("modality", Node(Op.INPUT, (), ("N",), "int32", {"name": "modality"}))
    attrs = {"weight": w, "stride": (1, 1), "padding": (k // 2, k // 2)} | ({} if b is None else {"bias": b})
    g.add("c", Node(Op.CONV2D, ("x",), infer(Op.CONV2D, [g["x"].shape], attrs), attrs=attrs, source="conv"), order=1)
    bn = {"eps": eps, "params": {str(m): bn_stats(rng, o) for m in Modality}}
    g.add("bn", Node(Op.BATCH_NORM, ("c", "modality"), g["c"].shape, attrs=bn, modality="split"), order=2)
    g.outputs = ["bn"]
    return verify(g)


@settings(max_examples=25, deadline=None)
@given(codes=hnp.arrays(np.int32, st.integers(1, 5), elements=st.integers(0, 1)), **CONV_SHAPES)
def test_both_mixed_strategies_give_the_split_bns_numbers(codes, o, i, k, with_bias, seed, eps):
    g = conv_split_bn(o, i, k, with_bias, seed, eps)
    x = np.random.default_rng(seed + 1).normal(size=(len(codes), i, 5, 5)).astype(np.float32)
    want = run_ir(g, x, codes).astype(np.float64)
    # the size of the terms summed, as in assert_close_to_terms: |conv| of magnitudes, scaled per sample
    scale, shift = (t[codes][:, :, None, None] for t in bn_tables(g["bn"].attrs["params"], eps))
    w, b = g["c"].attrs["weight"], g["c"].attr("bias")
    terms = (conv(np.abs(x.astype(np.float64)), np.abs(w), None, k) + (0 if b is None else np.abs(b)[:, None, None])) \
        * np.abs(scale) + np.abs(shift) + np.abs(want)
    outs = {}
    for strategy in ("affine", "weights"):
        out, plan = fold_modality_bn(g, strategy=strategy)
        verify(out)
        assert plan == {"conv": {"strategy": strategy, "reason": f"forced by --mixed-strategy {strategy}"}}
        assert out.count(Op.BATCH_NORM) == 0
        outs[strategy] = run_ir(out, x, codes).astype(np.float64)
        assert_close_to_terms(outs[strategy], want, terms)
    assert_close_to_terms(outs["affine"], outs["weights"], terms)
