"""The CPU schedule of bit-packing (kernels/bitpack.py): a dlight rule, as cpu_schedules.py's."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from reidc.compiler.ir.bits import WORD_BITS

from .bitpack import BITPACK_BLOCK, whole_words
from .schedule_utils import anchored
from .x86_intrin import bitpack_intrinsic


class Bitpack(CPUScheduleRule):
    """Parallel over (n, row). On x86, a word whose channels are whole channel blocks (or one
    slice of a block: bitpack.py `whole_words`) is one tensor intrinsic (x86_intrin.py
    `bitpack_intrinsic`): a vector multiply and compare per 16 channels, their lanes packed into a
    16-bit mask (AVX-512: vcmpps + kmovw). Elsewhere (aarch64, a partial last word, a fused input
    the intrinsic does not match) the loop over a word's bits is fully unrolled, so channel
    indices become constants for LLVM."""

    def apply(self, func, target, tunable):
        found = anchored(func, BITPACK_BLOCK, (BITPACK_BLOCK,), anchor_is_output=True)
        if found is None:  # bit-packing is always the function's output
            return None
        intrin = self._intrinsic(found[0], found[1], target)
        if intrin is not None:
            sch, out = anchored(func, BITPACK_BLOCK, (BITPACK_BLOCK,), anchor_is_output=True)
            try:
                return self._loops(sch, out, intrin)
            except s_tir.ScheduleError:  # the block is not the intrinsic's form: the plain loops
                pass
        sch, out = found
        return self._loops(sch, out, None)

    @staticmethod
    def _loops(sch, out, intrin):
        loops = sch.get_loops(out)
        sch.parallel(sch.fuse(loops[0], loops[1]))
        if intrin is None:
            sch.unroll(loops[-1])
            return sch
        sch.decompose_reduction(out, loops[-1])
        sch.tensorize(loops[-1], intrin)
        return sch

    @staticmethod
    def _intrinsic(sch, out, target):
        """The x86 intrinsic for this block's word, data dtype and channel block, or None."""
        triple = str(target.attrs.get("mtriple", "") or "")
        if target.kind.name != "llvm" or not (triple == "" or triple.startswith(("x86_64", "i686"))):
            return None
        block = sch.get(out)
        if len(sch.get_loops(out)) != 5 or len(block.writes) != 1:
            return None
        buf = [getattr(r, "buffer", None) or r.source for r in (*block.writes, *block.reads)]
        word, data = str(buf[0].dtype), [b for b in buf[1:] if len(b.shape) == 5]
        if word not in WORD_BITS or len(data) != 1 or str(data[0].dtype) not in ("float32", "int32"):
            return None
        cb, chans = data[0].shape[-1], buf[0].shape[-1]
        if not all(isinstance(e, tirx.IntImm) for e in (cb, chans)):
            return None
        bits = WORD_BITS[word]
        if not whole_words(int(cb), int(chans) * bits, word):
            return None
        return bitpack_intrinsic(int(cb), bits, str(data[0].dtype))
