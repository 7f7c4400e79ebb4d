"""The binary conv's CPU schedule (kernels/bconv2d.py) as a dlight rule, as cpu_schedules.py's:
vector popcount accumulators in registers, or Harley-Seal adder chains on x86 without VPOPCNTQ;
a conv that also bit-packs its output packs each task's row of words (bitpack_schedule.py)."""
from __future__ import annotations

from tvm import tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .bconv2d import BCONV_BLOCK, BPAD_BLOCK
from .bitpack_schedule import pack_under, with_packed_output
from .harley_seal import MIN_WORDS, harley_seal_intrinsic
from .schedule_utils import anchored_nchwc, extent, largest_divisor_at_most, parallel_rows


class BConv2dNCHWc(CPUScheduleRule):
    """Binary conv: parallel over (n, oc-block, row), `reg_w` pixels x `ob` output channels of
    popcount accumulators in vector registers (vector popcount: VPOPCNTQ with AVX-512
    VPOPCNTDQ, a pshufb sequence on AVX2, `cnt` on NEON), reduction over (ky, kx, words) outside.
    With `harley_seal` (x86 without VPOPCNTQ) a reduction of MIN_WORDS words
    or more over a kernel at least 2 wide and high is instead one Harley-Seal intrinsic per pixel
    and `lanes` channels (harley_seal.py), `seal_w` pixels unrolled."""

    def __init__(self, reg_w: int = 12, lanes: int = 4, harley_seal: bool = False, seal_w: int = 2):
        self.reg_w = reg_w
        self.lanes = lanes  # output channels (64-bit words) per register tile: one or two vector registers
        self.harley_seal = harley_seal
        self.seal_w = seal_w  # pixels whose adder chains interleave (each holds ~6 vector registers)

    def apply(self, func, target, tunable):
        found, pack = anchored_nchwc(func, BCONV_BLOCK, BPAD_BLOCK), None
        if found is None:   # a conv that also bit-packs its output: the words of a task's row there
            packed = with_packed_output(func, BCONV_BLOCK, (BCONV_BLOCK, BPAD_BLOCK))
            if packed is None:
                return None
            sch, out, loops, pack, per_word = packed
            found = sch, sch.get_sblock(BCONV_BLOCK), out, loops
        sch, pop, out, (n, o, h, w, v) = found
        ow = extent(sch, w)
        if ow is None:
            return None
        taps = [int(iv.dom.extent) for iv in sch.get(pop).iter_vars if iv.iter_type == tirx.IterVar.CommReduce]
        # 1-wide kernels' unit tap loops are dropped from the nest the intrinsic is matched against
        seal = self.harley_seal and len(taps) == 3 and min(taps[:2]) > 1 and taps[0] * taps[1] * taps[2] >= MIN_WORDS
        reg_w = largest_divisor_at_most(ow, self.seal_w if seal else self.reg_w)
        wo, wi = sch.split(w, [None, reg_w])
        ob = extent(sch, v)
        lanes = largest_divisor_at_most(ob, self.lanes)
        vo, vi = sch.split(v, [None, lanes])
        if pack is None:
            sch.reorder(vo, wo, wi, vi)
            task = sch.fuse(n, o, h)
        else:   # a task: one row of the channel blocks one word packs
            oo, oi = sch.split(o, [None, per_word])
            sch.reorder(h, oi, vo, wo, wi, vi)
            task = sch.fuse(n, oo, h)
        sch.parallel(task)
        sch.vectorize(vi)
        sch.compute_at(pop, wo)
        sch.set_scope(pop, 0, "local")
        # under (n*o*h, lane block, w-block) (and the word's channel block); unit loops dropped
        inner = sch.get_loops(pop)[3 + (pack is not None):]
        nsp = 1 + (reg_w > 1)
        spatial, red = inner[:nsp], inner[nsp:]
        if seal and len(red) == 3 and lanes >= 2 and extent(sch, spatial[-1]) == lanes:
            if len(spatial) == 2:
                sch.unroll(spatial[0])    # the pixels' adder chains interleave
            init = sch.decompose_reduction(pop, spatial[-1])
            sch.vectorize(sch.get_loops(init)[-1])
            sch.tensorize(spatial[-1], harley_seal_intrinsic(*taps, lanes))
            parallel_rows(sch, func, BPAD_BLOCK, 2)
            if pack is not None:
                pack_under(sch, pack, task, target)
            return sch
        if red:
            sch.reorder(*red, *spatial)
        if len(spatial) == 2:
            sch.unroll(spatial[0])
        sch.vectorize(spatial[-1])
        init = sch.decompose_reduction(pop, red[0] if red else spatial[0])
        sch.vectorize(sch.get_loops(init)[-1])
        parallel_rows(sch, func, BPAD_BLOCK, 2)
        if pack is not None:
            pack_under(sch, pack, task, target)
        return sch
