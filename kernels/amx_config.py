"""Configure AMX tiles once per parallel task, not once per tile group.

The AMX intrinsics (amx_intrin.py) configure the tiles (ldtilecfg) in their `init`, which the
schedule places once per group of accumulator tiles: a 64-channel 3x3 conv configures every
nine tile updates. ldtilecfg waits for every tile instruction in flight and clears the tiles,
so each group paid a full drain of the AMX pipeline (about a fifth of such a kernel's time).
The configuration is the same constant for every group of a kernel, so this pass, run on the
lowered TIR, moves it to the top of each parallel task (a task runs on one thread from start
to end, so its tiles stay configured): the 64-byte config is filled and loaded once per task.
A task whose groups use different configurations is left as it is."""
from __future__ import annotations

import tvm
import tvm_ffi
from tvm import tirx

from .tir_walk import children, rebuild, rewritten, walk

LDTILECFG = "llvm.x86.ldtilecfg"


def _is_ldtilecfg(stmt) -> bool:
    if not isinstance(stmt, tirx.Evaluate) or not isinstance(stmt.value, tvm.ir.Call):
        return False
    call = stmt.value
    if getattr(call.op, "name", "") != "tirx.call_llvm_intrin" or not isinstance(call.args[0], tirx.IntImm):
        return False
    return int(call.args[0].value) == tvm.target.codegen.llvm_lookup_intrinsic_id(LDTILECFG)


def _config_pairs(body) -> list:
    """[(fill loop, ldtilecfg statement)]: each ldtilecfg with the loop right before it (the
    loop that fills its 64-byte config buffer)."""
    pairs = []

    def visit(node):
        if isinstance(node, tirx.SeqStmt):
            seq = list(node.seq)
            for i, s in enumerate(seq):
                if _is_ldtilecfg(s) and i > 0 and isinstance(seq[i - 1], tirx.For):
                    pairs.append((seq[i - 1], s))
    walk(body, visit)
    return pairs


def _stores(stmt) -> list:
    found = []

    def visit(node):
        if isinstance(node, tirx.BufferStore) and not any(node.buffer.same_as(b) for b in found):
            found.append(node.buffer)
    walk(stmt, visit)
    return found


def _strip(stmt, gone):
    kids = children(stmt)
    if not kids:
        return stmt
    new = [_strip(k, gone) for k in kids if not any(k.same_as(g) for g in gone)]
    if len(new) == len(kids) and all(a.same_as(b) for a, b in zip(new, kids)):
        return stmt
    return rebuild(stmt, new)


def _hoist(loop: tirx.For) -> tirx.For:
    pairs = _config_pairs(loop.body)
    top = list(loop.body.seq) if isinstance(loop.body, tirx.SeqStmt) else [loop.body]
    if not pairs or any(s.same_as(load) for _, load in pairs for s in top):
        return loop   # none, or already loaded once at the task's top
    fill, load = pairs[0]
    if not all(tvm_ffi.structural_equal(f, fill) and tvm_ffi.structural_equal(s, load) for f, s in pairs):
        return loop
    written = _stores(fill)
    if len(written) != 1:
        return loop
    if any(v.name != written[0].name for v in tirx.analysis.undefined_vars(fill, [])):
        return loop   # the fill reads a value the task does not have at its start
    body = _strip(loop.body, [s for pair in pairs for s in pair])
    # right after the config buffer's allocation (the lowering puts it at the task's top)
    seq = list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]
    for i, s in enumerate(seq):
        if isinstance(s, tirx.AllocBuffer) and s.buffer.same_as(written[0]):
            seq[i + 1:i + 1] = [fill, load]
            return tirx.For(loop.loop_var, loop.min, loop.extent, loop.kind, tirx.SeqStmt(seq),
                            loop.thread_binding, loop.annotations, loop.step, loop.span)
    return loop


def hoist_tile_config(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """`func` with each parallel task's tile configuration loaded once, at the task's top."""
    body = rewritten(func.body, lambda s: _hoist(s) if isinstance(s, tirx.For) and s.kind == tirx.ForKind.PARALLEL
                     else None)
    return func if body.same_as(func.body) else func.with_body(body)
