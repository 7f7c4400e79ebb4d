"""Schedule helpers shared by the CPU and CUDA rules: find a kernel's anchor block in a fused
PrimFunc, inline what surrounds it, read loop extents; the register tile and task count the
direct and Winograd convs share."""
from __future__ import annotations

from tvm import s_tir, tirx


def extent(sch, loop):
    e = sch.get(loop).extent
    return int(e) if isinstance(e, (int, tirx.IntImm)) else None


def largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, max(1, min(n, cap)) + 1) if n % d == 0)


def block_named(sch, func, name):
    """The block called `name`, or None (TVM raises a generic error for a missing block)."""
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001
        return None


def anchored(func, anchor: str, keep: tuple[str, ...], anchor_is_output: bool = False):
    """(schedule, output block) for a PrimFunc holding block `anchor`, with the injective blocks
    around it inlined (blocks in `keep` stay); None when the function is not of that form:
    the output must be the anchor itself, or an epilogue after it, as `anchor_is_output` says."""
    if not isinstance(func, tirx.PrimFunc):
        return None
    sch = s_tir.Schedule(func)
    if block_named(sch, func, anchor) is None:
        return None
    out = inline_epilogue(sch, func, keep)
    if out is None or (sch.get(out).name_hint == anchor) != anchor_is_output:
        return None
    return sch, out


def anchored_nchwc(func, anchor: str, pad: str):
    """(schedule, anchor block, output block, its 5 loops n, o, h, w, v) for a blocked-layout conv
    PrimFunc (anchor + padding + fused epilogue); None when the function is not of that form."""
    found = anchored(func, anchor, (anchor, pad))
    if found is None:
        return None
    sch, out = found
    loops = sch.get_loops(out)
    if len(loops) != 5:
        return None
    return sch, sch.get_sblock(anchor), out, loops


def inline_epilogue(sch, func, keep):
    """Inline every block except `keep` and the last; return the last (the output) or None."""
    root = block_named(sch, func, "root")
    blocks = sch.get_child_blocks(root) if root is not None else []
    if not blocks:
        return None
    for b in blocks[:-1]:
        if sch.get(b).name_hint in keep:
            continue
        try:
            sch.compute_inline(b)
        except s_tir.ScheduleError:
            return None
    return blocks[-1]


def register_tile(ow: int, oc_blocks: int, vecs_per_pixel: int, accumulators: int, max_oct: int) -> tuple[int, int]:
    """(pixels, output blocks) of a conv's register tile: the most accumulator vectors
    (pixels x blocks x vectors per pixel, within `accumulators`; pixels divide the output width,
    blocks the output block count, up to `max_oct`), then the fewest loads per reduction step
    (blocks x vectors of weights + pixels of broadcast inputs), then the fewest blocks. AVX-512
    (24 accumulators, one vector per block): OW 8/16/32 -> (4, 4); OW 7 -> (7, 2). AVX2 and NEON
    (two and four vectors per 16-channel block) keep one block per tile."""
    best = None
    for oct_ in range(1, max(1, max_oct) + 1):
        if oc_blocks % oct_:
            continue
        reg_w = largest_divisor_at_most(ow, max(1, accumulators // (vecs_per_pixel * oct_)))
        key = (reg_w * oct_ * vecs_per_pixel <= accumulators, reg_w * oct_ * vecs_per_pixel,
               -(oct_ * vecs_per_pixel + reg_w), -oct_)
        if best is None or key > best[0]:
            best = (key, reg_w, oct_)
    return best[1], best[2]


def target_cores(target) -> int:
    return int(target.attrs.get("num-cores", 1) or 1)


def rows_for_tasks(oh: int | None, rows: int, other_tasks: int, want: int) -> int:
    """`rows` shrunk (to divisors of oh) until other_tasks x oh / rows >= want, or to 1."""
    while oh and rows > 1 and other_tasks * (oh // rows) < want:
        rows = largest_divisor_at_most(oh, rows - 1)
    return rows


def safe_inline(sch, blocks):
    """dlight's try_inline, except that nothing is reverse-inlined into a block that has an init
    (a reduction). With a reduction of extent 1 (a dense layer with one input feature) dlight's
    normalisation leaves such a block with spatial iterators only, and TVM 0.27 then inlines the
    consumer into both the init and the update: `y = x @ w + b` came out as `x @ w + 2b`."""
    def reducing_producer(rv) -> bool:
        return any(sch.get(p).init is not None for p in sch.get_producers(rv))

    def trial(fn, guard=lambda rv: False):
        for i, b in enumerate(blocks):
            if guard(b.block_rv):
                continue
            try:
                fn(b.block_rv)
            except Exception:  # noqa: BLE001  (TVM raises ScheduleError when a block cannot be inlined)
                continue
            return i
        return None

    while True:
        i = trial(sch.compute_inline)
        if i is None:
            i = trial(sch.reverse_compute_inline, reducing_producer)
        if i is None:
            return blocks
        blocks.pop(i)
