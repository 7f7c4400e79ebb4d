"""The fp32 conv's register tile (kernels/schedule_utils.py `register_tile`): several output
blocks per tile where the target has the registers (AVX-512), one where it has not (AVX2,
NEON) and for grouped convs. Checked three ways: the tile the rule picks, the loops it writes
(the tile's loops unrolled inside the reduction), and the numbers against PyTorch, with the
AVX-512 rule's parameters on whatever x86 runs the test (LLVM splits 16-lane vectors where
the CPU has fewer)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from tvm import te, topi

from reidc.kernels.conv2d import conv2d_nchwc, pack_weight
from reidc.kernels.cpu_schedules import Conv2dNCHWc
from reidc.kernels.schedule_utils import register_tile
from reidc.targets import get_target

AVX512_RULE = dict(vector_lanes=16, accumulators=24)   # what schedule_rules gives an AVX-512 preset


@pytest.mark.parametrize("ow, blocks, vecs, acc, want", [
    (8, 32, 1, 24, (4, 4)),     # ResNet-50's layer3/4 maps on AVX-512: 16 accumulators, 8 loads per 16 FMAs
    (32, 4, 1, 24, (4, 4)),
    (7, 32, 1, 24, (7, 2)),     # a 7-wide map: 4 pixels do not divide it
    (6, 3, 1, 24, (6, 3)),      # three blocks (48 channels)
    (8, 2, 1, 24, (8, 2)),
    (16, 8, 2, 12, (4, 1)),     # AVX2: two vectors per block, 12 accumulators -> one block, as before
    (8, 8, 4, 24, (4, 1)),      # NEON: four vectors per block
    (1, 32, 1, 24, (1, 4)),
])
def test_register_tile(ow, blocks, vecs, acc, want):
    assert register_tile(ow, blocks, vecs, acc, 4) == want


def test_one_block_when_the_tile_is_capped():
    assert register_tile(8, 32, 1, 24, 1) == (8, 1)


def _loops(sch, kind: str) -> list[int]:
    """Extents of the scheduled function's loops of `kind` (unroll, parallel), reduction inits left out."""
    found = re.findall(r"for (\w+) in T\.(\w+)\((\d+)\)", sch.mod["main"].script())
    return [int(e) for name, k, e in found if k == kind and not name.endswith("_init")]


def _conv_func(n, c, h, w, o, k, s, p, cb=16, ob=16, modal=False):
    """A conv + bias + residual + ReLU PrimFunc in the blocked layout, as TVM fuses it."""
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    X = te.placeholder((n, c // cb, h, w, cb), "float32", name="X")
    wshape = ((2,) if modal else ()) + (o // ob, c // cb, k, k, cb, ob)
    W = te.placeholder(wshape, "float32", name="W")
    M = te.placeholder((n,), "int32", name="M") if modal else None
    B = te.placeholder((1, o // ob, 1, 1, ob), "float32", name="B")
    R = te.placeholder((n, o // ob, oh, ow, ob), "float32", name="R")
    y = conv2d_nchwc(X, W, (s, s), (p, p), modality=M)
    out = topi.nn.relu(topi.add(topi.add(y, B), R))
    args = [X, W] + ([M] if modal else []) + [B, R, out]
    return te.create_prim_func(args)


CASES = [  # N, C, H, W, O, k, stride, pad, modal -> the tile
    ((1, 32, 8, 8, 64, 3, 1, 1, False), (4, 4)),
    ((2, 16, 7, 7, 32, 3, 1, 1, False), (7, 2)),
    ((1, 32, 11, 12, 48, 3, 2, 1, False), (6, 3)),
    ((1, 64, 8, 8, 128, 1, 1, 0, False), (4, 4)),
    ((2, 16, 8, 8, 64, 3, 1, 1, True), (4, 4)),   # a weight set per modality
]


@pytest.mark.parametrize("shape, tile", CASES, ids=lambda v: "x".join(map(str, v)) if len(v) > 2 else None)
def test_multi_block_tile_matches_pytorch(shape, tile):
    n, c, h, w, o, k, s, p, modal = shape
    sch = Conv2dNCHWc(**AVX512_RULE).apply(_conv_func(*shape[:-1], modal=modal), get_target("host").tvm_target(), False)
    reg_w, oct_ = tile
    # the tile's loops, blocks then pixels, unrolled (the lanes are vectorised inside them)
    assert _loops(sch, "unroll") == [oct_, reg_w] if reg_w > 1 else [oct_]
    assert _loops(sch, "parallel")[-1] >= 2 * 2   # the conv's tasks: two per core of the host preset at least
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}),
                      target=get_target("host").tvm_target())
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wts = rng.standard_normal(((2,) if modal else ()) + (o, c, k, k)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    res = rng.standard_normal((n, o, oh, ow)).astype(np.float32)
    m = np.arange(n, dtype=np.int32) % 2
    blocked = lambda a: np.ascontiguousarray(a.reshape(a.shape[0], -1, 16, *a.shape[2:]).transpose(0, 1, 3, 4, 2))
    out = tvm.runtime.tensor(np.zeros((n, o // 16, oh, ow, 16), np.float32))
    args = [blocked(x), pack_weight(wts, 16, 16)] + ([m] if modal else []) + [bias.reshape(1, -1, 1, 1, 16), blocked(res)]
    lib["main"](*(tvm.runtime.tensor(a) for a in args), out)
    xt = torch.from_numpy(x)
    per = [torch.nn.functional.conv2d(xt[i:i + 1], torch.from_numpy(wts[m[i]] if modal else wts), stride=s, padding=p)
           for i in range(n)]
    ref = torch.relu(torch.cat(per) + torch.from_numpy(bias).view(1, -1, 1, 1) + torch.from_numpy(res)).numpy()
    got = out.numpy().transpose(0, 1, 4, 2, 3).reshape(ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rule, reg_w", [(dict(vector_lanes=8, accumulators=12), 4),   # AVX2
                                         (dict(AVX512_RULE, max_oc_tile=1), 8)])       # capped
def test_one_block_per_tile_without_the_registers(rule, reg_w):
    sch = Conv2dNCHWc(**rule).apply(_conv_func(1, 32, 8, 8, 64, 3, 1, 1), get_target("host").tvm_target(), False)
    assert _loops(sch, "unroll") == [reg_w]


def test_a_grouped_conv_keeps_one_block_per_tile():
    """Its input block depends on the output block, which stays outside the reduction."""
    from reidc.kernels.conv2d import group_conv2d_nchwc
    X = te.placeholder((1, 4, 8, 8, 16), "float32", name="X")
    W = te.placeholder((4, 2, 3, 3, 16, 16), "float32", name="W")
    B = te.placeholder((1, 4, 1, 1, 16), "float32", name="B")
    out = topi.add(group_conv2d_nchwc(X, W, (1, 1), (1, 1), 2), B)
    sch = Conv2dNCHWc(**AVX512_RULE).apply(te.create_prim_func([X, W, B, out]), get_target("host").tvm_target(), False)
    assert _loops(sch, "unroll") == [8]
