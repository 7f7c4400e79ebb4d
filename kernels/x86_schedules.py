"""x86 schedules as dlight rules: `Conv2dNCHWc` for reidc's conv (with its fused epilogue) and
`CPUFallback` for everything else (pooling, reductions, elementwise, layout changes).

Tunable knobs (register tile width, reduction split) are plain parameters so MetaSchedule
can search them later; the defaults are derived from the target's SIMD width.
"""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.target import Target

from .conv2d import CONV_BLOCK, PAD_BLOCK


def _extent(sch, loop):
    e = sch.get(loop).extent
    return int(e) if isinstance(e, (int, tirx.IntImm)) else None


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


def _block_named(sch, func, name):
    """The block called `name`, or None (TVM raises a generic error for a missing block)."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001
        return None


class Conv2dNCHWc(dl.ScheduleRule):
    """Output-stationary direct conv: parallel over (n, oc-block, row), a register tile of
    `reg_w` output pixels x `ob` channels, reduction loops outside, channel lanes vectorised."""

    def __init__(self, vector_lanes: int = 8, accumulators: int = 12):
        self.lanes = vector_lanes
        self.accumulators = accumulators

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        if _block_named(sch, func, CONV_BLOCK) is None:
            return None
        conv = sch.get_sblock(CONV_BLOCK)
        # inline every injective block between the conv and the function's output
        blocks = sch.get_child_blocks(root) if (root := _block_named(sch, func, "root")) is not None else []
        names = [sch.get(b).name_hint for b in blocks]
        if not blocks:
            return None
        out = blocks[-1]
        if sch.get(out).name_hint == CONV_BLOCK:
            return None  # always lowered with a bias epilogue; anything else takes the fallback
        for b, name in zip(blocks[:-1], names[:-1]):
            if name in (CONV_BLOCK, PAD_BLOCK):
                continue
            try:
                sch.compute_inline(b)
            except s_tir.ScheduleError:
                return None
        loops = sch.get_loops(out)
        if len(loops) != 5:
            return None
        n, o, h, w, v = loops
        ob = _extent(sch, v)
        ow = _extent(sch, w)
        if ob is None or ow is None:
            return None
        vecs_per_pixel = max(1, ob // self.lanes)
        reg_w = _largest_divisor_at_most(ow, max(1, self.accumulators // vecs_per_pixel))
        wo, wi = sch.split(w, [None, reg_w])
        outer = sch.fuse(n, o, h)
        sch.parallel(outer)
        sch.vectorize(v)
        sch.compute_at(conv, wo)
        sch.set_scope(conv, 0, "local")
        cl = sch.get_loops(conv)[2:]  # loops of extent 1 vanish under compute_at
        if reg_w > 1:
            cwi, cv = cl[0], cl[1]
            reds = cl[2:]
        else:
            cwi, cv = None, cl[0]
            reds = cl[1:]
        ic, rest = reds[0], reds[1:]
        cb = _ic_block(sch, func)
        ico, ici = sch.split(ic, [None, cb])
        order = [ico, *rest, ici] + ([cwi] if cwi is not None else []) + [cv]
        sch.reorder(*order)
        if cwi is not None:
            sch.unroll(cwi)
        sch.vectorize(cv)
        init = sch.decompose_reduction(conv, ico)
        sch.vectorize(sch.get_loops(init)[-1])
        if _block_named(sch, func, PAD_BLOCK) is not None:
            pad = sch.get_sblock(PAD_BLOCK)
            pl = sch.get_loops(pad)
            sch.parallel(sch.fuse(*pl[:3]))
            if _extent(sch, pl[-1]) is not None:
                sch.vectorize(pl[-1])
        return sch


def _ic_block(sch, func) -> int:
    """Innermost channel block of the conv's data input (the last dim of its first read)."""
    block = sch.get(sch.get_sblock(CONV_BLOCK))
    region = block.reads[0]
    src = getattr(region, "buffer", None) or region.source
    shape = src.shape
    return int(shape[-1])


class CPUFallback(dl.ScheduleRule):
    """Inline what can be inlined, then parallelise the outer spatial loops of each block and
    vectorise an innermost spatial loop of static extent. Correct for any PrimFunc."""

    def is_target_available(self, target: Target) -> bool:
        return target.kind.name == "llvm"

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        infos = dl.normalize_prim_func(sch)
        if infos is None:
            return None
        infos = dl.try_inline(sch, infos)
        for info in infos:
            block = info.block_rv
            loops = sch.get_loops(block)
            kinds = [it.kind for it in info.iters]
            if len(loops) != len(kinds) or not loops:
                continue
            lead = 0
            while lead < len(kinds) and kinds[lead] == "S":
                lead += 1
            if lead == len(kinds) and lead > 1 and (_extent(sch, loops[-1]) or 0) <= 64:
                sch.vectorize(loops[-1])
                lead -= 1
            if lead >= 1:
                sch.parallel(sch.fuse(*loops[:lead]) if lead > 1 else loops[0])
        return sch
