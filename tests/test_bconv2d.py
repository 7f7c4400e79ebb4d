"""Binary kernels (groundwork for the binarized-network issue): bit-packing and XNOR/popcount
conv must equal PyTorch's float +-1 convolution exactly, borders, strides and odd channel
counts included."""
import numpy as np
import pytest
import torch
import tvm
from tvm import te

from reidc.compiler.ir.bits import border_correction, expand_correction, pack_signs, words
from reidc.compiler.passes.binary_math import sign_threshold
from reidc.kernels.bconv2d import bconv2d_nchwc, pack_binary_weight
from reidc.kernels.bitpack import bitpack_nchwc
from reidc.kernels.bconv_schedule import BConv2dNCHWc
from reidc.targets import get_target

TARGET = get_target("host").tvm_target()


def _build(f):
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=TARGET)


@pytest.mark.parametrize("word", ["uint32", "uint64"])
def test_pack_signs_bit_order(word):
    x = np.random.default_rng(0).standard_normal((2, 3, 70)).astype(np.float32)
    x[0, 0, :5] = 0.0  # sign(0) packs as +1 (bit 0)
    ref = pack_signs(x, word)
    assert ref.shape == (2, 3, words(70, word)) and ref.dtype == np.dtype(word)
    bits = np.unpackbits(ref.view(np.uint8), axis=-1, bitorder="little")[..., :70]
    np.testing.assert_array_equal(bits, (x < 0).astype(np.uint8))


@pytest.mark.parametrize("modal", [False, True])
def test_bitpack_kernel_thresholds(modal):
    """Blocked float input -> packed NHWC words, with per-channel (or per-modality) thresholds."""
    rng = np.random.default_rng(1)
    n, c, h, w, cb = 3, 80, 4, 5, 16
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    scale = rng.standard_normal((2, c) if modal else (c,)).astype(np.float32)
    scale[..., 0] = 0.0  # a constant channel
    shift = rng.standard_normal(scale.shape).astype(np.float32)
    thr, flip = sign_threshold(scale, shift)
    mod = np.array([0, 1, 1], np.int32)
    X = te.placeholder((n, c // cb, h, w, cb), "float32", name="X")
    T = te.placeholder(thr.shape, "float32", name="T")
    F = te.placeholder(flip.shape, "int8", name="F")
    M = te.placeholder((n,), "int32", name="M") if modal else None
    Y = bitpack_nchwc(X, T, F, c, M)
    lib = _build(te.create_prim_func([X, T, F] + ([M] if modal else []) + [Y]))
    out = tvm.runtime.tensor(np.zeros((n, h, w, words(c)), np.uint64))
    xb = np.ascontiguousarray(x.reshape(n, c // cb, cb, h, w).transpose(0, 1, 3, 4, 2))
    args = [tvm.runtime.tensor(a) for a in (xb, thr, flip)] + ([tvm.runtime.tensor(mod)] if modal else [])
    lib["main"](*args, out)
    per = (scale[mod] if modal else scale[None])[:, :, None, None], (shift[mod] if modal else shift[None])[:, :, None, None]
    ref = pack_signs((x * per[0] + per[1]).transpose(0, 2, 3, 1))  # sign(x*s + t), the unfolded form
    np.testing.assert_array_equal(out.numpy(), ref)


SHAPES = [  # N, C, H, W, O, k, stride, pad
    (2, 37, 9, 7, 16, 3, 1, 1),    # odd channels, borders
    (1, 100, 8, 8, 32, 3, 2, 1),   # stride 2 with padding
    (1, 64, 6, 6, 16, 1, 1, 0),    # 1x1, one word exactly
    (1, 130, 7, 5, 48, 1, 2, 0),   # 1x1 stride 2, three words, odd map
    (2, 3, 5, 5, 16, 3, 1, 1),     # fewer channels than one word
    (1, 256, 14, 14, 32, 3, 1, 1), # the ResNet-18 layer shape (fewer output channels)
]


def _bconv_lib(n, c, h, w, o, k, s, p, ob, target=TARGET, rule=None, word="uint64"):
    X = te.placeholder((n, h, w, words(c, word)), word, name="X")
    W = te.placeholder((o // ob, k, k, words(c, word), ob), word, name="W")
    signs = np.where(np.random.default_rng(1).standard_normal((o, c, k, k)) < 0, -1, 1).astype(np.int8)
    table, ycls, xcls = border_correction(signs, (h, w), (s, s), (p, p))
    corr = te.placeholder(table.shape, "int32", name="corr")
    yc = te.placeholder(ycls.shape, "int32", name="yc")
    xc = te.placeholder(xcls.shape, "int32", name="xc")
    func = te.create_prim_func([X, W, corr, yc, xc, bconv2d_nchwc(X, W, corr, yc, xc, c, (s, s), (p, p))])
    sch = (rule or BConv2dNCHWc()).apply(func, target, False)
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target)
    lib.scheduled = sch.mod
    return lib, signs, (table, ycls, xcls)


SEALED = [  # reductions of 32 words or more: Harley-Seal adders on x86 without VPOPCNTQ
    (1, 300, 9, 7, 16, 3, 2, 1),    # 5 words x 9 taps = 45: five 8-word blocks and 5 words left, stride 2, odd map
    (2, 512, 5, 5, 16, 3, 1, 1),    # 72 words: nine blocks, borders
    (1, 2100, 3, 3, 16, 1, 1, 0),   # 1x1, 33 words: left plain (a 1-wide kernel's unit tap loops)
]


@pytest.mark.parametrize("shape, seal, word", [(s, False, "uint64") for s in SHAPES]
                         + [(s, True, "uint64") for s in SHAPES[-1:] + SEALED]
                         + [(s, False, "uint32") for s in SHAPES[:2] + SHAPES[-1:]],   # build.binary_word on AVX-512
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else (
                             v if isinstance(v, str) else ("sealed" if v else "plain")))
def test_bconv2d_is_integer_exact(shape, seal, word):
    n, c, h, w, o, k, s, p = shape
    ob = 16
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    lib, signs, corr = _bconv_lib(n, c, h, w, o, k, s, p, ob, rule=BConv2dNCHWc(harley_seal=seal), word=word)
    assert ("harley_seal" in lib.scheduled.script()) is (seal and k > 1 and k * k * words(c) >= 32)
    x = np.random.default_rng(2).standard_normal((n, c, h, w)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((n, o // ob, oh, ow, ob), np.int32))
    lib["main"](tvm.runtime.tensor(pack_signs(x.transpose(0, 2, 3, 1), word)),
                tvm.runtime.tensor(pack_binary_weight(pack_signs(signs.transpose(0, 2, 3, 1), word), ob)),
                *(tvm.runtime.tensor(a) for a in corr), out)
    xs = torch.from_numpy(np.where(x < 0, -1.0, 1.0))
    ref = torch.nn.functional.conv2d(xs, torch.from_numpy(signs.astype(np.float64)), stride=s, padding=p).numpy()
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(ref.shape)
    np.testing.assert_array_equal(got, ref.astype(np.int32))


def test_border_correction_classes():
    w = np.where(np.random.default_rng(2).standard_normal((8, 5, 3, 3)) < 0, -1, 1).astype(np.int8)
    table, ycls, xcls = border_correction(w, (6, 6), (1, 1), (0, 0))
    assert table.shape == (1, 1, 8) and not table.any()
    table, ycls, xcls = border_correction(w, (6, 6), (1, 1), (1, 1))
    assert table.shape == (3, 3, 8)  # top / interior / bottom x left / interior / right
    full = expand_correction(table, ycls, xcls)
    assert full[1:-1, 1:-1].sum() == 0 and full[0, 0].tolist() == (w[:, :, 0, :].sum((1, 2)) + w[:, :, 1:, 0].sum((1, 2))).tolist()


@pytest.mark.parametrize("preset, word, instruction", [("x86-avx512", "uint64", "vpopcntq"),
                                                       ("x86-avx512", "uint32", "vpopcntd"),
                                                       ("x86-avx2", "uint64", "vpshufb")])
def test_vector_popcount_in_generated_code(preset, word, instruction):
    """Compiles only (no need to run): AVX-512 VPOPCNTDQ targets get the native instruction (on
    the 32-bit words build.binary_word picks there, vpopcntd), AVX2 gets LLVM's nibble-lookup
    sequence."""
    lib = _bconv_lib(1, 128, 8, 8, 32, 3, 1, 1, 16, target=get_target(preset).tvm_target(), word=word)[0]
    assert instruction in lib.mod.inspect_source("asm")


def test_harley_seal_only_where_popcount_is_a_lookup():
    """The adders replace AVX2's vpshufb popcount; VPOPCNTQ (AVX-512) and NEON's cnt count a
    word in one instruction, so those builds keep the plain reduction."""
    from reidc.compiler.lower.build import harley_seal
    assert harley_seal(get_target("x86-avx2"))
    assert not harley_seal(get_target("x86-avx512")) and not harley_seal(get_target("rpi5"))
    assert not harley_seal(get_target("sm90"))
    # `reidc tune` may pick the adders' other pixel tiles, or the plain reduction, by measurement
    from reidc.compiler.tune.space import rule_variants
    seal_tiles = lambda p: sorted(r.seal_w for r in rule_variants(get_target(p)) if getattr(r, "harley_seal", False))
    assert seal_tiles("x86-avx2") == [1, 4] and seal_tiles("x86-avx512") == []
