"""Specialise a graph to a single-modality batch: every split BN keeps only that modality's BN.

Runs first in the `visible` and `infrared` pipelines; after it no node needs the modality
input, so dead-node removal drops it. Not run in the `mixed` pipeline.
"""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph, Modality, Op, Placement

from .rewrite import Rewrite, Rule, apply_rules, modality_is


def _pick(modality: Modality):
    def rewrite(g: Graph, nid, n):
        params = {"shared": n.attrs["params"][modality]}
        return Rewrite(node=n.with_(inputs=n.inputs[:1], attrs={**n.attrs, "params": params},
                                    modality=Placement.SHARED), note=f"kept the {modality} BN")
    return rewrite


def specialise_modality(g: Graph, modality: Modality | str, stats: Counter | None = None) -> Graph:
    try:
        modality = Modality(modality)
    except ValueError:
        raise ValueError(f"cannot specialise to {modality!r}") from None
    rules = [Rule("specialise_split_bn", Op.BATCH_NORM, _pick(modality), (modality_is(Placement.SPLIT),))]
    out = apply_rules(g, rules, stats).graph
    out.meta["modality"] = modality
    return out
