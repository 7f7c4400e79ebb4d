"""Remove nodes no output depends on (inputs included: a single-modality graph drops `modality`)."""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph


def remove_dead_nodes(g: Graph, stats: Counter | None = None) -> Graph:
    g = g.copy()
    live = set(g.outputs).union(*(g.ancestors(o) for o in g.outputs))
    dead = [n for n in reversed(list(g.topo())) if n not in live]  # consumers before their producers
    for n in dead:
        g.remove(n)
    if stats is not None and dead:
        stats["remove_dead_nodes"] += len(dead)
    return g
