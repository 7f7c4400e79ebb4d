"""Remove nodes no output depends on (inputs included: a single-modality graph drops `modality`)."""
from __future__ import annotations

from collections import Counter

import networkx as nx

from compiler.ir import Graph


def remove_dead_nodes(g: Graph, stats: Counter | None = None) -> Graph:
    g = g.copy()
    live = set(g.outputs)
    for o in g.outputs:
        live |= nx.ancestors(g.g, o)
    dead = [n for n in g.g.nodes if n not in live]
    for n in dead:
        g.remove(n)
    if stats is not None and dead:
        stats["remove_dead_nodes"] += len(dead)
    return g
