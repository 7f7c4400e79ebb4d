"""The rewrite driver: a pass is a list of `Rule`s (op, guards, rewrite) that `apply_rules` runs
over a copy of the graph, once per node in topological order.

Rules never touch the Graph. A rule's rewrite reads its match (graph, node id, node) and returns
a `Rewrite`, a value saying what should change there, or None to leave the match alone; the
driver does the surgery. A Rewrite may
- replace the matched node (`node`: its consumers keep pointing at it),
- replace some of the match's producers (`producers`, by id: the conv whose weights absorb a BN),
- add new nodes (`add`, keyed by `Fresh` id hints: the driver picks unused ids, puts them in
  every node of the Rewrite that names the hint, and places them just before the match in
  `topo()` order),
- forward the match (`forward`: every use of the match moves to that node; the match goes),
- carry a short `note` for the debug log and `facts` for the pass to report (`Applied.facts`).
A node the rewrite left without uses goes with it (graph inputs stay: remove_dead_nodes decides).

Guards are named predicates. When one fails the driver counts `rule:skipped:guard` and logs why,
so bail-outs show in debug logs and pass statistics; an applied rewrite counts as `rule`.
The guards and the one rewrite (`bn_to_affine`) that several passes share are defined here.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from reidc.compiler.ir import Graph, Node, Op, Placement

from .bn_math import bn_tables

log = logging.getLogger("reidc.passes")

Guard = tuple[str, Callable[[Graph, str, Node], bool]]


class Fresh(str):
    """The id hint of a node a `Rewrite` adds. Where a Rewrite's nodes name it (as an input, or
    as `forward`), the driver puts the unused id it picked from the hint."""

    __slots__ = ()


@dataclass(frozen=True)
class Rewrite:
    """What a rule wants done at its match; `apply_rules` does it (see the module docstring)."""

    node: Node | None = None
    producers: Mapping[str, Node] = field(default_factory=dict)
    add: Mapping[Fresh, Node] = field(default_factory=dict)
    forward: str | None = None
    note: str = ""
    facts: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.node is not None and self.forward is not None:
            raise ValueError("a rewrite either replaces its match or forwards it, not both")
        if not all(isinstance(k, Fresh) for k in self.add):
            raise TypeError("new nodes are keyed by Fresh id hints")
        for name in ("producers", "add", "facts"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))


@dataclass(frozen=True)
class Rule:
    name: str
    op: Op
    rewrite: Callable[[Graph, str, Node], Rewrite | None]
    guards: tuple[Guard, ...] = field(default_factory=tuple)


class Applied(NamedTuple):
    """What `apply_rules` returns: the rewritten copy, and the facts its rewrites reported."""

    graph: Graph
    facts: dict


def apply_rules(g: Graph, rules: list[Rule], stats: Counter | None = None) -> Applied:
    """Run every rule once over the nodes in topological order, on a copy of g (g is unchanged).
    At each node the first rule whose guards hold and whose rewrite returns a Rewrite applies."""
    g = g.copy()
    stats = stats if stats is not None else Counter()
    facts: dict = {}
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
            rw = rule.rewrite(g, nid, node)
            if rw is None:
                continue
            _apply(g, nid, node, rw)
            stats[rule.name] += 1
            facts.update(rw.facts)
            log.debug("%s: rewrote %s (%s): %s", rule.name, nid, node.source, rw.note)
            break
    return Applied(g, facts)


def _apply(g: Graph, nid: str, node: Node, rw: Rewrite) -> None:
    """The surgery a Rewrite asks for at `nid` (whose node was `node`)."""
    stray = [p for p in rw.producers if p not in node.inputs]
    if stray:
        raise ValueError(f"a rewrite of {nid!r} may replace its producers only, not {stray}")
    ids: dict[Fresh, str] = {}

    def real(i: str) -> str:
        if not isinstance(i, Fresh):
            return i
        if i not in ids:
            raise KeyError(f"rewrite of {nid!r} names new node {i!r} before adding it")
        return ids[i]

    def resolved(n: Node) -> Node:
        return n.with_(inputs=tuple(real(i) for i in n.inputs))

    was_used = set(node.inputs).union(*(g[p].inputs for p in rw.producers))
    for hint, new in rw.add.items():
        ids[hint] = g.add(g.fresh_id(str(hint)), resolved(new), order=g.order(nid))
    for pid, p in rw.producers.items():
        g.replace(pid, resolved(p))
    if rw.node is not None:
        g.replace(nid, resolved(rw.node))
    if rw.forward is not None:
        g.redirect(nid, real(rw.forward))
        g.remove(nid)
    unused = [i for i in sorted(was_used) if i in g and not g.consumers(i) and i not in g.outputs
              and g[i].op != Op.INPUT]
    for i in unused:
        g.remove(i)


# --- named guards shared by several passes -------------------------------------------------
def producer_is(op: Op) -> Guard:
    return (f"producer is {op}", lambda g, nid, n: g[n.inputs[0]].op == op)


def producer_has_one_use() -> Guard:
    return ("producer has one use", lambda g, nid, n: len(g.consumers(n.inputs[0])) == 1
            and n.inputs[0] not in g.outputs)


def modality_is(*tags: Placement) -> Guard:
    return (f"modality in {tuple(map(str, tags))}", lambda g, nid, n: n.modality in tags)


def one_weight_set() -> Guard:
    """A conv with one weight set (O, I, kh, kw), not the per-modality (2, O, I, kh, kw) that
    fold_modality_bn makes: neither a second BN fold nor binary detection can take those."""
    return ("one weight set", lambda g, nid, n: n.attrs["weight"].ndim == 4)


def on_producer(guard: Guard) -> Guard:
    """`guard`, checked on the match's first input instead of the match."""
    name, pred = guard
    return (f"producer has {name}", lambda g, nid, n: pred(g, n.inputs[0], g[n.inputs[0]]))


# --- a rewrite shared by several passes ----------------------------------------------------
def modality_input(g: Graph) -> str | None:
    """The id of the graph's `modality` input (a mixed graph's), or None."""
    return next((nid for nid, n in g.items() if n.op == Op.INPUT and n.attrs.get("name") == "modality"), None)


def bn_to_affine(g: Graph, nid: str, n: Node) -> Rewrite:
    """A BN becomes the per-channel affine it computes: shared statistics give (C,) vectors on
    no placement (`any`); split ones (2, C) tables picked per sample by the modality input."""
    scale, shift = bn_tables(n.attrs["params"], n.attrs["eps"])
    placement = Placement.ANY if n.modality == Placement.SHARED else n.modality
    return Rewrite(node=n.with_(op=Op.AFFINE, attrs={"scale": scale, "bias": shift}, modality=placement),
                   note="per-channel affine" if scale.ndim == 1 else "per-modality affine")
