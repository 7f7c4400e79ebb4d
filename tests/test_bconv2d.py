"""Binary kernels (groundwork for the binarized-network issue): bit-packing and XNOR/popcount
conv must equal PyTorch's float +-1 convolution exactly, borders, strides and odd channel
counts included."""
import numpy as np
import pytest
import torch
import tvm
from tvm import te
from tvm.s_tir import Schedule

from kernels.bconv2d import bconv2d_nhwc, border_correction, pack_binary_weight, schedule_bconv2d
from kernels.bitpack import bitpack_nhwc, pack_signs as pack_bits, words
from targets import get_target

TARGET = get_target("host").tvm_target()


def _build(sch_or_func):
    f = sch_or_func.mod["main"] if hasattr(sch_or_func, "mod") else sch_or_func
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=TARGET)


@pytest.mark.parametrize("word", ["uint32", "uint64"])
def test_pack_bits_numpy_matches_te_kernel(word):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 5, 70)).astype(np.float32)
    x[0, 0, 0, :5] = 0.0  # sign(0) packs as +1 (bit 0)
    ref = pack_bits(x, word)
    assert ref.shape == (2, 3, 5, words(70, word)) and ref.dtype == np.dtype(word)
    assert int(ref[0, 0, 0, 0]) & 0b11111 == 0
    bits = np.unpackbits(ref.view(np.uint8), axis=-1, bitorder="little")[..., :70]
    np.testing.assert_array_equal(bits, (x < 0).astype(np.uint8))
    X = te.placeholder(x.shape, "float32", name="X")
    lib = _build(te.create_prim_func([X, bitpack_nhwc(X, word)]))
    out = tvm.runtime.tensor(np.zeros(ref.shape, word))
    lib["main"](tvm.runtime.tensor(x), out)
    np.testing.assert_array_equal(out.numpy(), ref)


SHAPES = [  # N, C, H, W, O, k, stride, pad
    (2, 37, 9, 7, 16, 3, 1, 1),    # odd channels, borders
    (1, 100, 8, 8, 32, 3, 2, 1),   # stride 2 with padding
    (1, 64, 6, 6, 16, 1, 1, 0),    # 1x1, one word exactly
    (1, 130, 7, 5, 48, 1, 2, 0),   # 1x1 stride 2, three words, odd map
    (2, 3, 5, 5, 16, 3, 1, 1),     # fewer channels than one word
    (1, 256, 14, 14, 32, 3, 1, 1), # the ResNet-18 layer shape (fewer output channels)
]


@pytest.mark.parametrize("word", ["uint32", "uint64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bconv2d_is_integer_exact(shape, word):
    n, c, h, w, o, k, s, p = shape
    ob = 16
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    X = te.placeholder((n, h, w, words(c, word)), word, name="X")
    W = te.placeholder((o // ob, k, k, words(c, word), ob), word, name="W")
    corr = te.placeholder((oh, ow, o), "int32", name="corr")
    Y = bconv2d_nhwc(X, W, corr, c, (s, s), (p, p), word)
    lib = _build(schedule_bconv2d(Schedule(te.create_prim_func([X, W, corr, Y])), ob))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = np.sign(rng.standard_normal((o, c, k, k))).astype(np.float32) * 0.37  # +-alpha: only signs matter
    out = tvm.runtime.tensor(np.zeros((n, oh, ow, o), np.int32))
    lib["main"](tvm.runtime.tensor(pack_bits(x.transpose(0, 2, 3, 1), word)),
                tvm.runtime.tensor(pack_binary_weight(wt, ob, word)),
                tvm.runtime.tensor(border_correction(np.sign(wt).astype(np.int8), (h, w), (s, s), (p, p))), out)
    xs = torch.from_numpy(np.where(x < 0, -1.0, 1.0))
    ref = torch.nn.functional.conv2d(xs, torch.from_numpy(np.sign(wt)).double(), stride=s, padding=p)
    np.testing.assert_array_equal(out.numpy(), ref.numpy().transpose(0, 2, 3, 1).astype(np.int32))


def test_border_correction_is_zero_without_padding():
    w = np.sign(np.random.default_rng(2).standard_normal((8, 5, 3, 3)))
    assert not border_correction(w, (6, 6), (1, 1), (0, 0)).any()
    corr = border_correction(w.astype(np.int8), (6, 6), (1, 1), (1, 1))
    assert corr[2:-2, 2:-2].sum() == 0 and corr[0, 0].any()


@pytest.mark.parametrize("preset, instruction", [("x86-avx512", "vpopcntq"), ("x86-avx2", "vpshufb")])
def test_vector_popcount_in_generated_code(preset, instruction):
    """Compiles only (no need to run): AVX-512 VPOPCNTDQ targets get the native instruction,
    AVX2 gets LLVM's nibble-lookup sequence."""
    c, o, ob = 128, 32, 16
    X = te.placeholder((1, 8, 8, words(c)), "uint64", name="X")
    W = te.placeholder((o // ob, 3, 3, words(c), ob), "uint64", name="W")
    corr = te.placeholder((8, 8, o), "int32", name="corr")
    sch = schedule_bconv2d(Schedule(te.create_prim_func([X, W, corr, bconv2d_nhwc(X, W, corr, c, (1, 1), (1, 1))])), ob)
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}),
                      target=get_target(preset).tvm_target())
    assert instruction in lib.mod.inspect_source("asm")
