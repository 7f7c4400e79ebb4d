"""A graph of IR nodes over networkx. Node ids are strings; edge order lives in Node.inputs."""
from __future__ import annotations

from typing import Iterator

import networkx as nx

from .node import Node


class Graph:
    """A DAG of `Node`s with named outputs. Passes work on a `copy()` and return it."""

    def __init__(self, name: str = "model"):
        self.name = name
        self.g = nx.DiGraph()
        self.outputs: list[str] = []
        self.meta: dict = {}

    # --- construction -------------------------------------------------------------
    def add(self, nid: str, node: Node) -> str:
        if nid in self.g:
            raise KeyError(f"node id {nid!r} already in graph")
        for i in node.inputs:
            if i not in self.g:
                raise KeyError(f"node {nid!r} uses unknown input {i!r}")
        self.g.add_node(nid, node=node)
        for i in node.inputs:
            self.g.add_edge(i, nid)
        return nid

    def fresh_id(self, base: str) -> str:
        nid, k = base, 1
        while nid in self.g:
            nid, k = f"{base}_{k}", k + 1
        return nid

    def copy(self) -> "Graph":
        out = Graph(self.name)
        out.g = self.g.copy()
        out.outputs = list(self.outputs)
        out.meta = dict(self.meta)
        return out

    # --- queries ------------------------------------------------------------------
    def __getitem__(self, nid: str) -> Node:
        return self.g.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def consumers(self, nid: str) -> list[str]:
        return list(self.g.successors(nid))

    def topo(self) -> Iterator[str]:
        return iter(nx.lexicographical_topological_sort(self.g, key=self._order_key))

    def _order_key(self, nid: str):
        return self.g.nodes[nid].get("order", 0), nid

    def items(self) -> Iterator[tuple[str, Node]]:
        for nid in self.topo():
            yield nid, self[nid]

    def count(self, op) -> int:
        return sum(1 for _, n in self.items() if n.op == op)

    # --- surgery ------------------------------------------------------------------
    def replace(self, nid: str, node: Node) -> None:
        """Swap the node at `nid` (its inputs may change); consumers keep pointing at nid."""
        for i in node.inputs:
            if i not in self.g:
                raise KeyError(f"replacement for {nid!r} uses unknown input {i!r}")
        self.g.remove_edges_from(list(self.g.in_edges(nid)))
        self.g.nodes[nid]["node"] = node
        for i in node.inputs:
            self.g.add_edge(i, nid)
        if not nx.is_directed_acyclic_graph(self.g):
            raise ValueError(f"replacing {nid!r} made a cycle")

    def redirect(self, old: str, new: str) -> None:
        """Every use of `old` (consumers and graph outputs) now uses `new`."""
        for c in self.consumers(old):
            if c == new:
                continue
            n = self[c]
            self.replace(c, n.with_(inputs=tuple(new if i == old else i for i in n.inputs)))
        self.outputs = [new if o == old else o for o in self.outputs]

    def remove(self, nid: str) -> None:
        self.g.remove_node(nid)

    def insert_after(self, nid: str, new_id: str, node: Node) -> str:
        """Add `node` (which consumes `nid`) and move all other uses of `nid` onto it."""
        order = self.g.nodes[nid].get("order", 0)
        self.add(new_id, node)
        self.g.nodes[new_id]["order"] = order
        self.redirect(nid, new_id)
        return new_id
