"""The CPU schedule of bit-packing (kernels/bitpack.py): a dlight rule, as cpu_schedules.py's,
and the packing a binary conv's function does of its own output (compiler/lower/fuse_bitpack.py)
under the conv's row task (`with_packed_output`, `pack_under`)."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from reidc.compiler.ir.bits import WORD_BITS

from .bitpack import BITPACK_BLOCK, whole_words
from .schedule_utils import anchored, block_named, inline_epilogue
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
        if len(sch.get_loops(out)) != 5:
            return None
        return _word_intrinsic(sch, out, target)


def _word_form(sch, out):
    """(word dtype, data dtype, data channel block, words) of a bitpack block whose words hold
    whole channel blocks (or slices of one), else None."""
    block = sch.get(out)
    if len(block.writes) != 1:
        return None
    buf = [getattr(r, "buffer", None) or r.source for r in (*block.writes, *block.reads)]
    word, data = str(buf[0].dtype), [b for b in buf[1:] if len(b.shape) == 5]
    if word not in WORD_BITS or len(data) != 1 or str(data[0].dtype) not in ("float32", "int32"):
        return None
    cb, chans = data[0].shape[-1], buf[0].shape[-1]
    if not all(isinstance(e, tirx.IntImm) for e in (cb, chans)):
        return None
    if not whole_words(int(cb), int(chans) * WORD_BITS[word], word):
        return None
    return word, str(data[0].dtype), int(cb), int(chans)


def _word_intrinsic(sch, out, target):
    triple = str(target.attrs.get("mtriple", "") or "")
    if target.kind.name != "llvm" or not (triple == "" or triple.startswith(("x86_64", "i686"))):
        return None
    form = _word_form(sch, out)
    return None if form is None else bitpack_intrinsic(form[2], WORD_BITS[form[0]], form[1])


def with_packed_output(func, anchor: str, keep: tuple[str, ...]):
    """For a conv function that ends by bit-packing its own output (compiler/lower/fuse_bitpack.py):
    (schedule, output block, its 5 loops, bitpack block, channel blocks per word), with the
    epilogue between the anchor and the output inlined; None for any other function, or where
    a word does not hold whole channel blocks."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func)
    if block_named(sch, func, anchor) is None or block_named(sch, func, BITPACK_BLOCK) is None:
        return None
    last = inline_epilogue(sch, func, keep, tail=2)
    if last is None or sch.get(last[1]).name_hint != BITPACK_BLOCK or sch.get(last[0]).name_hint in keep:
        return None
    out, pack = last
    loops = sch.get_loops(out)
    form = _word_form(sch, pack)
    if len(loops) != 5 or form is None or WORD_BITS[form[0]] % form[2]:
        return None
    return sch, out, loops, pack, WORD_BITS[form[0]] // form[2]


def pack_under(sch, pack, loop, target) -> None:
    """Pack the words of what `loop`'s iteration computed, under it: the x86 word intrinsic, or
    the bit loop unrolled (as `Bitpack` does)."""
    sch.reverse_compute_at(pack, loop)
    bit = sch.get_loops(pack)[-1]
    intrin = _word_intrinsic(sch, pack, target)
    if intrin is not None:
        sch.decompose_reduction(pack, bit)
        try:
            sch.tensorize(bit, intrin)
            return
        except s_tir.ScheduleError:
            bit = sch.get_loops(pack)[-1]
    sch.unroll(bit)
