"""Schedule helpers shared by the CPU and CUDA rules: find a kernel's anchor block in a fused
PrimFunc, inline what surrounds it, read loop extents; the register tile and task count the
direct and Winograd convs share."""
from __future__ import annotations

from dataclasses import dataclass

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


def inline_epilogue(sch, func, keep, tail: int = 1):
    """Inline every block except `keep` and the last `tail`; return the last (the output), or
    the last `tail` blocks as a list where tail > 1; None if a block does not inline."""
    root = block_named(sch, func, "root")
    blocks = sch.get_child_blocks(root) if root is not None else []
    if len(blocks) < tail or not blocks:
        return None
    for b in blocks[:-tail]:
        if sch.get(b).name_hint in keep:
            continue
        try:
            sch.compute_inline(b)
        except s_tir.ScheduleError:
            return None
    return blocks[-1] if tail == 1 else blocks[-tail:]


def reads_of(sch, block_rv) -> list:
    """[(index, buffer)] of a block's reads."""
    return [(i, getattr(r, "buffer", None) or r.source) for i, r in enumerate(sch.get(block_rv).reads)]


@dataclass(frozen=True)
class ThreadTile:
    """A GPU conv's output bound to threads (`thread_tile`): `threads` per block, `rows` output
    rows per block of a map oh x ow; the anchor's loops under the thread: `spatial` (its pixels
    and channels), `reductions` {axis index: loop} for the reduction axes of extent > 1 (extents
    in `red`)."""
    threads: int
    rows: int
    oh: int
    ow: int
    spatial: list
    reductions: dict
    red: list


def thread_tile(sch, out, main, threads: int, px: int, ch: int) -> ThreadTile | None:
    """Bind a blocked-layout conv's output loops (n, o, h, w, v): a thread block per (n, o,
    `rows` output rows), a thread per `px` adjacent pixels x `ch` adjacent channels (unrolled),
    about `threads` threads; the anchor `main` is computed under the thread, in registers.
    None when the output is not of that form."""
    loops = sch.get_loops(out)
    if len(loops) != 5:
        return None
    n, o, h, w, v = loops
    oh, ow, ob = extent(sch, h), extent(sch, w), extent(sch, v)
    if None in (oh, ow, ob):
        return None
    tc, tw = largest_divisor_at_most(ob, ch), largest_divisor_at_most(ow, px)
    per_row = (ow // tw) * (ob // tc)
    rows = largest_divisor_at_most(oh, max(1, threads // per_row))
    ho, hi = sch.split(h, [None, rows])
    wo, wi = sch.split(w, [None, tw])
    vo, vi = sch.split(v, [None, tc])
    sch.reorder(n, o, ho, hi, wo, vo, wi, vi)
    bx, tx = sch.fuse(n, o, ho), sch.fuse(hi, wo, vo)
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    for lp in (wi, vi):
        if extent(sch, lp) > 1:
            sch.unroll(lp)
    sch.compute_at(main, tx)
    sch.set_scope(main, 0, "local")
    # the anchor's loops under the thread: spatial (unit loops dropped), then its reductions
    ml = sch.get_loops(main)[2:]
    red = [int(iv.dom.extent) for iv in sch.get(main).iter_vars if iv.iter_type == 2]
    nred = sum(e > 1 for e in red)
    named = dict(zip([i for i, e in enumerate(red) if e > 1], ml[len(ml) - nred:]))
    return ThreadTile(rows * per_row, rows, oh, ow, list(ml[:len(ml) - nred]), named, red)


def cooperative_fetch(sch, block_rv, at, threads: int, vector: int = 1) -> None:
    """Spread a GPU shared-memory stage's copy loops (those under loop `at`) over the block's
    threads (consecutive threads copy consecutive elements), `vector` elements per thread and
    step (the innermost copy loop's extent must be a multiple of it)."""
    loops = sch.get_loops(block_rv)
    depth = 1 + next(i for i, lp in enumerate(loops) if sch.get(lp).same_as(sch.get(at)))
    fetch = sch.fuse(*loops[depth:]) if len(loops) - depth > 1 else loops[depth]
    if vector > 1:
        fetch, vec = sch.split(fetch, [None, vector])
        sch.vectorize(vec)
    _, tx = sch.split(fetch, [None, threads])
    sch.bind(tx, "threadIdx.x")


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


def parallel_rows(sch, func, block: str, nfuse: int) -> None:
    """Parallelise a padding stage over its first `nfuse` loops and vectorise its innermost
    (channel) loop, if the function has that stage."""
    if block_named(sch, func, block) is not None:
        loops = sch.get_loops(sch.get_sblock(block))
        sch.parallel(sch.fuse(*loops[:nfuse]))
        if extent(sch, loops[-1]) is not None:
            sch.vectorize(loops[-1])
