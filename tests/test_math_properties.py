"""Property tests (hypothesis) of the pure maths under the binary passes and kernels: the bit
layout, sign and integer thresholds, the zero-padding correction of a binary conv."""
from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from compiler.ir.bits import WORD_BITS, border_correction, expand_correction, pack_bits, pack_signs, words
from compiler.ir.opset.refmath import conv2d
from compiler.passes.binary_math import binary_weight_scale, integer_threshold, sign_threshold

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
