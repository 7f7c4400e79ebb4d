"""The rewrite driver: a pass is a list of `Rule`s (op, guards, rewrite) run over the graph.

A rule's rewrite gets (graph, node id, node) and either performs its surgery and returns a
short note, or returns None to leave the match alone. Guards are named predicates; when one
fails the driver logs why, so bail-outs are visible in debug logs and in pass statistics.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from compiler.ir import Graph, Node, Op

log = logging.getLogger("reidc.passes")

Guard = tuple[str, Callable[[Graph, str, Node], bool]]


@dataclass(frozen=True)
class Rule:
    name: str
    op: Op
    rewrite: Callable[[Graph, str, Node], str | None]
    guards: tuple[Guard, ...] = field(default_factory=tuple)


def apply_rules(g: Graph, rules: list[Rule], stats: Counter | None = None) -> Graph:
    """Run every rule once over the nodes in topological order, on a copy of g."""
    g = g.copy()
    stats = stats if stats is not None else Counter()
    for nid in list(g.topo()):
        for rule in rules:
            if nid not in g or g[nid].op != rule.op:
                continue
            node = g[nid]
            failed = next((name for name, pred in rule.guards if not pred(g, nid, node)), None)
            if failed:
                stats[f"{rule.name}:skipped:{failed}"] += 1
                log.debug("%s: left %s (%s) alone: %s", rule.name, nid, node.source, failed)
                continue
            note = rule.rewrite(g, nid, node)
            if note is not None:
                stats[rule.name] += 1
                log.debug("%s: rewrote %s (%s): %s", rule.name, nid, node.source, note)
                break
    return g


# --- named guards shared by several passes -------------------------------------------------
def producer_is(op: Op) -> Guard:
    return (f"producer is {op}", lambda g, nid, n: g[n.inputs[0]].op == op)


def producer_has_one_use() -> Guard:
    return ("producer has one use", lambda g, nid, n: len(g.consumers(n.inputs[0])) == 1
            and n.inputs[0] not in g.outputs)


def modality_is(*tags: str) -> Guard:
    return (f"modality in {tags}", lambda g, nid, n: n.modality in tags)
