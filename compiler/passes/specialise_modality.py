"""Specialise a graph to a single-modality batch: every split BN keeps only that modality's BN.

Runs first in the `visible` and `infrared` pipelines; after it no node needs the modality
input, so dead-node removal drops it. Not run in the `mixed` pipeline.

With `share_weights` (an artifact with more than one entry), a split BN after a real-valued
conv or grouped conv (one that does not read a sign: binary convs keep their BN, which lands in
their scale) becomes that modality's per-channel `affine` instead of a BN that fold_shared_bn
would fold into the conv's weights: the conv keeps its own weights, the same array in every
entry, so the library stores them once (the affine fuses into the conv's epilogue).
"""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph, Modality, Op, Placement

from .rewrite import Rewrite, Rule, apply_rules, bn_to_affine, modality_is


def _after_real_conv(g: Graph, n) -> bool:
    p = g[n.inputs[0]]
    return p.op in (Op.CONV2D, Op.GROUP_CONV2D) and g[p.inputs[0]].op != Op.SIGN and p.attrs["weight"].ndim == 4


def _pick(modality: Modality, share_weights: bool):
    def rewrite(g: Graph, nid, n):
        params = {"shared": n.attrs["params"][modality]}
        kept = n.with_(inputs=n.inputs[:1], attrs={**n.attrs, "params": params}, modality=Placement.SHARED)
        if share_weights and _after_real_conv(g, n):
            rw = bn_to_affine(g, nid, kept)
            return Rewrite(node=rw.node, note=f"the {modality} BN as an affine: the conv's weights stay shared")
        return Rewrite(node=kept, note=f"kept the {modality} BN")
    return rewrite


def specialise_modality(g: Graph, modality: Modality | str, stats: Counter | None = None,
                        share_weights: bool = False) -> Graph:
    try:
        modality = Modality(modality)
    except ValueError:
        raise ValueError(f"cannot specialise to {modality!r}") from None
    rules = [Rule("specialise_split_bn", Op.BATCH_NORM, _pick(modality, share_weights), (modality_is(Placement.SPLIT),))]
    out = apply_rules(g, rules, stats).graph
    out.meta["modality"] = modality
    return out
