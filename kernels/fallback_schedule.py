"""The CPU schedule of everything without a rule of its own (pooling, reductions, elementwise,
layout changes) as a dlight rule: inline, parallelise, vectorise. Correct for any PrimFunc."""
from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule

from .schedule_utils import extent, safe_inline


def _lanes_under_reduction(sch, block, loops, kinds, lead) -> bool:
    """A reduction over a blocked layout (pooling: S... (channel lanes) R...): move the lane loop
    under the reductions and vectorise it, parallel over the other spatial loops. True if done."""
    if not (2 <= lead < len(kinds) and all(k == "R" for k in kinds[lead:])):
        return False
    lanes = extent(sch, loops[lead - 1])
    if lanes is None or not 4 <= lanes <= 64 or any(extent(sch, r) is None for r in loops[lead:]):
        return False
    if sch.get(block).init is None:
        return False
    sch.reorder(*loops[lead:], loops[lead - 1])
    if lead > 2:
        sch.parallel(sch.fuse(*loops[:lead - 1]))
    else:
        sch.parallel(loops[0])
    sch.vectorize(loops[lead - 1])
    init = sch.decompose_reduction(block, loops[lead])
    sch.vectorize(sch.get_loops(init)[-1])
    return True


class CPUFallback(CPUScheduleRule):
    """Inline what can be inlined, then parallelise the outer spatial loops of each block and
    vectorise an innermost spatial loop of static extent. Correct for any PrimFunc."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        infos = dl.normalize_prim_func(sch)
        if infos is None:
            return None
        infos = safe_inline(sch, infos)
        for info in infos:
            block = info.block_rv
            loops = sch.get_loops(block)
            kinds = [it.kind for it in info.iters]
            if len(loops) != len(kinds) or not loops:
                continue
            lead = 0
            while lead < len(kinds) and kinds[lead] == "S":
                lead += 1
            if _lanes_under_reduction(sch, block, loops, kinds, lead):
                continue
            if lead == len(kinds) and lead > 1 and (extent(sch, loops[-1]) or 0) <= 64:
                sch.vectorize(loops[-1])
                lead -= 1
            if lead >= 1:
                sch.parallel(sch.fuse(*loops[:lead]) if lead > 1 else loops[0])
        return sch
