"""Bit-packing fused into the binary conv that produces its input (compiler/lower/fuse_bitpack.py
and BConv2dNCHWc's packed-output schedule): the IR it makes, that it fires only after a binary
conv (and only on CPUs), and exact numbers through two binary layers. Also the word binary
convs count in (build.binary_word: uint32 views of the packed words on AVX-512 VPOPCNTDQ)."""
import re

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, tirx

from reidc.compiler.ir import Graph, Node, Op, RunMode
from reidc.compiler.ir.ops import BITS
from reidc.compiler.lower.build import binary_word, build, fused_module, legalize_passes, lowering_options
from reidc.compiler.lower.to_relax import to_relax
from reidc.compiler.passes.bitpack_weights import bitpack_weights
from reidc.kernels.bconv2d import BCONV_BLOCK
from reidc.kernels.bconv_schedule import BConv2dNCHWc
from reidc.targets import get_target
from reidc.targets.presets import host_features

C, HW = 128, 6


def _two_layers(C=C):
    """x -> bitpack (threshold t1) -> bconv -> bitpack (t2, of the conv's float output) -> bconv.
    Scale 1 and bias 0 keep the first conv's output integral and the thresholds are half-integers,
    so every bit is exact in any float order."""
    rng = np.random.default_rng(0)
    signs = [np.where(rng.standard_normal((C, C, 3, 3)) < 0, -1, 1).astype(np.int8) for _ in range(2)]
    t1 = rng.normal(0, 0.1, C).astype(np.float32)
    t2 = (rng.integers(-6, 6, C) + 0.5).astype(np.float32)
    g = Graph("two")
    g.add("x", Node(Op.INPUT, (), ("N", C, HW, HW), attrs={"name": "x"}))
    g.add("p1", Node(Op.BITPACK, ("x",), ("N", C, HW, HW), BITS, {"threshold": t1, "flip": np.zeros(C, np.int8)}))
    conv = {"scale": np.ones(C, np.float32), "bias": np.zeros(C, np.float32), "stride": (1, 1), "padding": (1, 1)}
    g.add("b1", Node(Op.BCONV2D, ("p1",), ("N", C, HW, HW), attrs={"signs": signs[0], **conv}))
    g.add("p2", Node(Op.BITPACK, ("b1",), ("N", C, HW, HW), BITS, {"threshold": t2, "flip": np.zeros(C, np.int8)}))
    g.add("b2", Node(Op.BCONV2D, ("p2",), ("N", C, HW, HW), attrs={"signs": signs[1], **conv}))
    g.outputs = ["b2"]
    return bitpack_weights(g), signs, t1, t2


def _reference(x, signs, t1, t2):
    def conv(bits_pm, w):
        return torch.nn.functional.conv2d(torch.from_numpy(bits_pm), torch.from_numpy(w.astype(np.float64)),
                                          padding=1).numpy()
    # bit 1 = -1 (x < threshold), as kernels/bitpack.py
    y1 = conv(np.where(x < t1[None, :, None, None], -1.0, 1.0), signs[0])
    return conv(np.where(y1 < t2[None, :, None, None], -1.0, 1.0), signs[1])


def _fused(preset, channels=C):
    g, *_ = _two_layers(channels)
    return fused_module(to_relax({RunMode.VISIBLE: g}, **lowering_options(preset)), preset)


def test_the_conv_group_takes_the_bitpack_of_its_output_only():
    mod = _fused(get_target("host"))
    names = sorted(gv.name_hint for gv in mod.functions if isinstance(mod[gv], tirx.PrimFunc))
    fused = [n for n in names if n.endswith("_bitpack")]
    assert len(fused) == 1 and fused[0].startswith("fused_bconv2d")
    script = mod[fused[0]].script()
    assert "reidc_bitpack" in script and BCONV_BLOCK in script
    # the input's bitpack has no binary conv before it: it stays a kernel of its own
    main = mod[RunMode.VISIBLE.value].script()
    assert len(re.findall(r"R\.call_tir\(bitpack\d*, ", main)) == 1
    assert len(re.findall(rf"R\.call_tir\({fused[0]}, ", main)) == 1
    # the fused call returns (output, bits): the second conv reads its bits
    bits = re.search(r"(\w+)(?:: [^\n]*?)? = \w+\[1\]\n", main)
    assert bits and re.search(rf"(R\.memory\.view\(|R\.call_tir\(fused_bconv2d\w*, \(){bits.group(1)}\b", main)


def test_not_where_a_word_would_hold_part_of_a_channel_block():
    """96 channels: the second 64-bit word holds 32 channels, half of its last word: no fused
    schedule packs that, so the bitpack stays a kernel of its own, and the numbers stay exact."""
    preset = get_target("x86-avx2")
    mod = _fused(preset, 96)
    assert not [gv for gv in mod.functions if gv.name_hint.endswith("_bitpack")]
    g, signs, t1, t2 = _two_layers(96)
    ex = build(to_relax({RunMode.VISIBLE: g}, **lowering_options(preset)), preset)
    x = np.random.default_rng(1).standard_normal((1, 96, HW, HW)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())[RunMode.VISIBLE.value](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _reference(x, signs, t1, t2).astype(np.float32))


def test_not_on_cuda_where_no_schedule_packs_a_conv_output():
    names = [p.info.name for p in legalize_passes(get_target("sm86"))]
    assert "reidc_fuse_bitpack" not in names
    assert "reidc_fuse_bitpack" in [p.info.name for p in legalize_passes(get_target("host"))]


def test_the_words_are_packed_in_the_conv_rows_task():
    preset = get_target("host")
    mod = _fused(preset)
    gv = next(gv for gv in mod.functions if gv.name_hint.endswith("_bitpack"))
    sch = BConv2dNCHWc().apply(mod[gv], preset.tvm_target(), False)
    assert sch is not None
    script = sch.mod["main"].script()
    pack_blocks = re.findall(r'T\.sblock\("([^"]*bitpack[^"]*)"\)', script)
    assert pack_blocks
    conv = re.findall(rf'T\.sblock\("({BCONV_BLOCK}[^"]*)"\)', script)
    assert conv
    conv_task = sch.get_loops(sch.get_sblock(conv[-1]))[0]
    for name in pack_blocks:
        loops = sch.get_loops(sch.get_sblock(name))
        assert sch.get(loops[0]).same_as(sch.get(conv_task)) and sch.get(loops[0]).kind == tirx.ForKind.PARALLEL


@pytest.mark.parametrize("preset", ["x86-avx2", "x86-avx512"])
def test_two_binary_layers_are_exact(preset):
    if preset == "x86-avx512" and not {"avx512f", "avx512_vpopcntdq"} <= host_features():
        pytest.skip("the host has no AVX-512 VPOPCNTDQ")
    g, signs, t1, t2 = _two_layers()
    ex = build(to_relax({RunMode.VISIBLE: g}, **lowering_options(get_target(preset))), get_target(preset))
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(1).standard_normal((2, C, HW, HW)).astype(np.float32)
    got = vm[RunMode.VISIBLE.value](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _reference(x, signs, t1, t2).astype(np.float32))


def test_a_tuning_record_naming_a_packing_word_can_be_read():
    """A fused conv's trace tensorizes its packing with a word intrinsic registered on first
    use: a process reading such a record (the database check, compile --tuning-db) registers
    it from the name."""
    from tvm.s_tir import TensorIntrin
    from reidc.kernels.x86_intrin import register_bitpack_named_in
    name = "reidc_bitpack_int32_uint32_8"
    with pytest.raises(Exception):
        TensorIntrin.get(name)
    register_bitpack_named_in(f'[0,[[[["Tensorize",["b1"],["{name}",1],[]]]]]]')
    assert TensorIntrin.get(name) is not None


@pytest.mark.parametrize("preset, word", [("x86-avx512", "uint32"), ("x86-amx", "uint32"), ("x86-avx2", "uint64"),
                                          ("rpi5", "uint64"), ("sm86", "uint64")])
def test_binary_convs_count_uint32_words_only_with_avx512_popcount(preset, word):
    """vpopcntd counts as many bits a vector as vpopcntq; AVX2's Harley-Seal adders, NEON's cnt
    and CUDA's popc keep 64-bit words. The packed bits stay uint64 between kernels: the conv views
    them."""
    assert binary_word(get_target(preset)) == word
    g, *_ = _two_layers()
    main = to_relax({RunMode.VISIBLE: g}, binary_word=word)[RunMode.VISIBLE.value].script()
    views = re.findall(r'R\.memory\.view\(\w+, R\.shape\(\[n, 6, 6, 4\]\), R\.dtype\("uint32"\)', main)
    assert len(views) == (2 if word == "uint32" else 0)   # each binary conv's input
