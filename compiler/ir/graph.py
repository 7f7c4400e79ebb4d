"""A graph of IR nodes over networkx. Node ids are strings; edge order lives in Node.inputs.

Only this class touches the networkx graph (`_nx`): everything else (passes, verifier, frontend) reads
and changes a Graph through its methods. Each node also has an `order` (its capture position)
that breaks ties in `topo()`, so printing and lowering follow the model's source order.
"""
from __future__ import annotations

from typing import Iterator

import networkx as nx

from .node import Node


class Graph:
    """A DAG of `Node`s with named outputs. Passes work on a `copy()` and return it."""

    def __init__(self, name: str = "model"):
        self.name = name
        self._nx = nx.DiGraph()
        self.outputs: list[str] = []
        self.meta: dict = {}

    # --- construction -------------------------------------------------------------
    def add(self, nid: str, node: Node, order: int = 0) -> str:
        """Add `node` as `nid`; `order` ranks it among nodes ready at once in `topo()`."""
        if nid in self._nx:
            raise KeyError(f"node id {nid!r} already in graph")
        for i in node.inputs:
            if i not in self._nx:
                raise KeyError(f"node {nid!r} uses unknown input {i!r}")
        self._nx.add_node(nid, node=node, order=order)
        for i in node.inputs:
            self._nx.add_edge(i, nid)
        return nid

    def fresh_id(self, base: str) -> str:
        nid, k = base, 1
        while nid in self._nx:
            nid, k = f"{base}_{k}", k + 1
        return nid

    def copy(self) -> "Graph":
        out = Graph(self.name)
        out._nx = self._nx.copy()
        out.outputs = list(self.outputs)
        out.meta = dict(self.meta)
        return out

    # --- queries ------------------------------------------------------------------
    def __getitem__(self, nid: str) -> Node:
        return self._nx.nodes[nid]["node"]

    def __contains__(self, nid: str) -> bool:
        return nid in self._nx

    def __len__(self) -> int:
        return self._nx.number_of_nodes()

    def node_ids(self) -> list[str]:
        """Every node id, in insertion order (`topo()` for dependency order)."""
        return list(self._nx.nodes)

    def consumers(self, nid: str) -> list[str]:
        return list(self._nx.successors(nid))

    def producers(self, nid: str) -> list[str]:
        """The nodes with an edge into `nid` (its distinct inputs, as the edges record them)."""
        return list(self._nx.predecessors(nid))

    def ancestors(self, nid: str) -> set[str]:
        """Every node `nid` depends on, transitively (not `nid` itself)."""
        return nx.ancestors(self._nx, nid)

    def is_acyclic(self) -> bool:
        return nx.is_directed_acyclic_graph(self._nx)

    def order(self, nid: str) -> int:
        return self._nx.nodes[nid].get("order", 0)

    def topo(self) -> Iterator[str]:
        return iter(nx.lexicographical_topological_sort(self._nx, key=self._order_key))

    def _order_key(self, nid: str):
        return self.order(nid), nid

    def items(self) -> Iterator[tuple[str, Node]]:
        for nid in self.topo():
            yield nid, self[nid]

    def count(self, op) -> int:
        return sum(1 for _, n in self.items() if n.op == op)

    # --- surgery ------------------------------------------------------------------
    def replace(self, nid: str, node: Node) -> None:
        """Swap the node at `nid` (its inputs may change); consumers keep pointing at nid."""
        for i in node.inputs:
            if i not in self._nx:
                raise KeyError(f"replacement for {nid!r} uses unknown input {i!r}")
        self._nx.remove_edges_from(list(self._nx.in_edges(nid)))
        self._nx.nodes[nid]["node"] = node
        for i in node.inputs:
            self._nx.add_edge(i, nid)
        if not self.is_acyclic():
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
        """Remove an unused node (no consumers, not an output)."""
        if self.consumers(nid) or nid in self.outputs:
            raise ValueError(f"cannot remove {nid!r}: still used by {self.consumers(nid) or 'the outputs'}")
        self._nx.remove_node(nid)
