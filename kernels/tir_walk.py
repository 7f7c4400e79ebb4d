"""Walking and rebuilding lowered TIR statements (the containers reidc's kernels' lowered TIR
has: SeqStmt, For, AttrStmt, While, IfThenElse), for the passes after TVM's lowering
(amx_config.py, stack_tiles.py)."""
from __future__ import annotations

from tvm import tirx


def children(stmt) -> list:
    """The statements directly under `stmt` (the containers these kernels' lowered TIR has)."""
    if isinstance(stmt, tirx.SeqStmt):
        return list(stmt.seq)
    if isinstance(stmt, (tirx.For, tirx.AttrStmt, tirx.While)):
        return [stmt.body]
    if isinstance(stmt, tirx.IfThenElse):
        return [stmt.then_case] + ([stmt.else_case] if stmt.else_case is not None else [])
    return []


def rebuild(stmt, kids: list):
    if isinstance(stmt, tirx.SeqStmt):
        return tirx.SeqStmt(kids) if len(kids) > 1 else (kids[0] if kids else tirx.Evaluate(0))
    if isinstance(stmt, tirx.For):
        return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, kids[0], stmt.thread_binding,
                        stmt.annotations, stmt.step, stmt.span)
    if isinstance(stmt, tirx.AttrStmt):
        return tirx.AttrStmt(stmt.node, stmt.attr_key, stmt.value, kids[0], stmt.span)
    if isinstance(stmt, tirx.While):
        return tirx.While(stmt.condition, kids[0], stmt.span)
    if isinstance(stmt, tirx.IfThenElse):
        return tirx.IfThenElse(stmt.condition, kids[0], kids[1] if len(kids) > 1 else None, stmt.span)
    return stmt


def walk(stmt, fn):
    fn(stmt)
    for k in children(stmt):
        walk(k, fn)


def rewritten(stmt, fn):
    """stmt with fn applied top-down: where fn returns a statement, it replaces that subtree;
    where it returns None, the children are rewritten (a node is rebuilt only if one changed)."""
    new = fn(stmt)
    if new is not None:
        return new
    kids = children(stmt)
    out = [rewritten(k, fn) for k in kids]
    return stmt if all(a.same_as(b) for a, b in zip(out, kids)) else rebuild(stmt, out)
