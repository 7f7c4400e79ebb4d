"""The explicit pass pipeline, one per run mode, with optional IR dumps after each pass.

visible / infrared:  specialise_modality -> BINARY -> fold_shared_bn -> fold_sign_threshold
                     -> bitpack_weights -> fold_bnneck -> remove_dead_nodes
mixed:               BINARY -> fold_shared_bn -> fold_modality_bn -> fold_sign_threshold -> ...
BINARY = detect_binary_conv -> fold_binary_scale (before the BN folds, so a BN after a binary
conv lands in its scale, never in the +-1 weights). Binary passes fire only where the pattern
is (conv of sign(x) with +-alpha weights). The verifier runs after every pass.
"""
from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path

from compiler.ir import Graph, dump, verify

from .bitpack_weights import bitpack_weights
from .dead_nodes import remove_dead_nodes
from .detect_binary_conv import detect_binary_conv
from .fold_binary_scale import fold_binary_scale
from .fold_sign_threshold import fold_sign_threshold
from .fold_bnneck import fold_bnneck
from .fold_modality_bn import fold_modality_bn
from .fold_shared_bn import fold_shared_bn
from .specialise_modality import specialise_modality

MODES = ("visible", "infrared", "mixed", "main")


def passes_for(mode: str, mixed_strategy: str | None = None) -> list[tuple[str, callable]]:
    if mode in ("visible", "infrared"):
        first = [("specialise_modality", partial(specialise_modality, modality=mode))]
        middle = []
    elif mode == "main":  # a modality-agnostic program (.pt2): nothing to specialise
        first, middle = [], []
    elif mode == "mixed":
        first = []
        middle = [("fold_modality_bn", partial(fold_modality_bn, strategy=mixed_strategy))]
    else:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    binary = [("detect_binary_conv", detect_binary_conv), ("fold_binary_scale", fold_binary_scale)]
    return first + binary + [("fold_shared_bn", fold_shared_bn)] + middle + [
        ("fold_sign_threshold", fold_sign_threshold), ("bitpack_weights", bitpack_weights),
        ("fold_bnneck", fold_bnneck), ("remove_dead_nodes", remove_dead_nodes)]


def run_pipeline(g: Graph, mode: str, dump_dir: str | Path | None = None,
                 mixed_strategy: str | None = None, stats: Counter | None = None) -> Graph:
    stats = stats if stats is not None else Counter()
    g = verify(g)
    if dump_dir is not None:
        d = Path(dump_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{mode}.00-captured.ir").write_text(dump(g))
    for k, (name, fn) in enumerate(passes_for(mode, mixed_strategy), start=1):
        g = verify(fn(g, stats=stats))
        if dump_dir is not None:
            (Path(dump_dir) / f"{mode}.{k:02d}-{name}.ir").write_text(dump(g))
    g.name = f"{g.name}_{mode}"
    g.meta["mode"] = mode
    return g
