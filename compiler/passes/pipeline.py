"""The explicit pass pipeline, one per run mode, with optional IR dumps after each pass.

Every mode starts with fold_input_norm (an image normalisation inside the network, fast-reid's,
folds into the stem conv; fires on nothing else).
visible / infrared:  specialise_modality -> BINARY -> fold_shared_bn -> fold_sign_threshold
                     -> bitpack_weights -> fold_bnneck -> remove_dead_nodes
mixed:               BINARY -> fold_shared_bn -> fold_modality_bn -> fold_sign_threshold -> ...
main (a .pt2):       BINARY -> fold_shared_bn -> fold_sign_threshold -> ...
BINARY = detect_binary_conv -> fold_binary_scale (before the BN folds, so a BN after a binary
conv lands in its scale, never in the +-1 weights). Binary passes fire only where the pattern
is (conv of sign(x) with +-alpha weights). The verifier runs after every pass.

A pass that reports facts (fold_modality_bn: the mixed plan) returns them with its graph; the
pipeline records them in the graph's `meta` under the step's `reports` key.
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Callable, NamedTuple

from reidc.compiler.base.atomic import atomic_write_text
from reidc.compiler.ir import Graph, RunMode, dump, verify

from .bitpack_weights import bitpack_weights
from .dead_nodes import remove_dead_nodes
from .detect_binary_conv import detect_binary_conv
from .fold_binary_scale import fold_binary_scale
from .fold_bnneck import fold_bnneck
from .fold_input_norm import fold_input_norm
from .fold_modality_bn import fold_modality_bn
from .fold_shared_bn import fold_shared_bn
from .fold_sign_threshold import fold_sign_threshold
from .specialise_modality import specialise_modality


class Step(NamedTuple):
    name: str
    run: Callable  # (graph, stats=Counter) -> Graph, or -> Applied (graph, facts) where `reports` is set
    reports: str | None = None  # the meta key that records the facts the pass returns


def passes_for(mode: RunMode | str, mixed_strategy: str | None = None, share_weights: bool = False) -> list[Step]:
    """The steps for `mode`; `share_weights`: the artifact has other entries (specialise_modality
    then keeps a real-valued conv's weights as they are, the same array in every entry)."""
    mode = RunMode.parse(mode)
    first = [Step("specialise_modality", partial(specialise_modality, modality=mode.modality,
                                                 share_weights=share_weights))] if mode.modality else []
    middle = [Step("fold_modality_bn", partial(fold_modality_bn, strategy=mixed_strategy, share_weights=share_weights),
                   reports="mixed_plan")
              ] if mode == RunMode.MIXED else []
    binary = [Step("detect_binary_conv", detect_binary_conv), Step("fold_binary_scale", fold_binary_scale)]
    first = [Step("fold_input_norm", fold_input_norm)] + first
    return first + binary + [Step("fold_shared_bn", fold_shared_bn)] + middle + [
        Step("fold_sign_threshold", fold_sign_threshold), Step("bitpack_weights", bitpack_weights),
        Step("fold_bnneck", fold_bnneck), Step("remove_dead_nodes", remove_dead_nodes)]


def run_pipeline(g: Graph, mode: RunMode | str, dump_dir: str | Path | None = None,
                 mixed_strategy: str | None = None, stats: Counter | None = None, share_weights: bool = False) -> Graph:
    """The graph compiled for `mode` (a new Graph; g is unchanged). Its meta records the mode and
    what the passes reported (`mixed_plan`). `share_weights`: see `passes_for`."""
    steps = passes_for(mode, mixed_strategy, share_weights)
    mode = RunMode.parse(mode)
    stats = stats if stats is not None else Counter()
    g = verify(g)
    if dump_dir is not None:
        d = Path(dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / f"{mode}.00-captured.ir", dump(g))
    for k, step in enumerate(steps, start=1):
        out = step.run(g, stats=stats)
        if step.reports is not None:
            out, facts = out
            if facts:
                out.meta[step.reports] = facts
        g = verify(out)
        if dump_dir is not None:
            atomic_write_text(Path(dump_dir) / f"{mode}.{k:02d}-{step.name}.ir", dump(g))
    g.name = f"{g.name}_{mode}"
    g.meta["mode"] = mode
    return g
