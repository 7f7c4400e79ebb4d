"""Specialise a graph to a single-modality batch: every split BN keeps only that modality's BN.

Runs first in the `visible` and `infrared` pipelines; after it no node needs the modality
input, so dead-node removal drops it. Not run in the `mixed` pipeline.
"""
from __future__ import annotations

from collections import Counter

from compiler.ir import Graph, Op

from .rewrite import Rule, apply_rules, modality_is


def _pick(modality: str):
    def rewrite(g: Graph, nid, n):
        params = {"shared": n.attrs["params"][modality]}
        g.replace(nid, n.with_(inputs=n.inputs[:1], attrs={**n.attrs, "params": params}, modality="shared"))
        return f"kept the {modality} BN"
    return rewrite


def specialise_modality(g: Graph, modality: str, stats: Counter | None = None) -> Graph:
    if modality not in ("visible", "infrared"):
        raise ValueError(f"cannot specialise to {modality!r}")
    rules = [Rule("specialise_split_bn", Op.BATCH_NORM, _pick(modality), (modality_is("split"),))]
    out = apply_rules(g, rules, stats)
    out.meta["modality"] = modality
    return out
