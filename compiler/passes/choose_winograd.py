"""Winograd F(2x2, 3x3) for the fp32 3x3 convs where reidc's Winograd kernel is faster
(kernels/winograd.py): graph surgery only, the conv's `algorithm` attribute set to
"winograd_f2"; its maths (and the IR interpreter's reference) are the conv's.

    %y = conv2d(%x) [3x3, stride 1, pad 1]  ->  %y = conv2d(%x) [..., algorithm="winograd_f2"]

Fires on a conv with a 3x3 kernel, stride 1, padding 1 and zeros at the border (no
`pad_value`), one weight set (per-modality weights stay direct), at least MIN_CHANNELS input
and output channels and output channels in whole 16-channel blocks, on x86 targets
(`winograd_target`). Measured per layer on a Xeon (AVX-512, 2 threads, batch 1; kernel alone,
direct conv with its 4x4 register tile vs Winograd): ResNet-50's 3x3 convs at 256x128 input
1.49x (64 ch, 64x32), 1.92x (128 ch, 32x16), 1.50x (256 ch, 16x8), 1.62x (512 ch, 16x8); a
32-channel 7x9 conv was 1.5x slower, hence MIN_CHANNELS. aarch64 and CUDA keep the direct
conv (not measured on a board or a GPU). Each rewritten conv is listed in the manifest's
layer table with its algorithm.
"""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph, Node, Op

from .rewrite import Rewrite, Rule, apply_rules

WINOGRAD = "winograd_f2"
MIN_CHANNELS = 64


def winograd_target(preset) -> bool:
    """Whether reidc's Winograd kernel is scheduled (and was measured faster) for the preset."""
    return preset.kind != "cuda" and preset.arch == "x86_64"


def _is_3x3_same(g: Graph, nid: str, n: Node) -> bool:
    w = n.attrs["weight"]
    return tuple(w.shape[-2:]) == (3, 3) and tuple(n.attrs["stride"]) == (1, 1) and tuple(n.attrs["padding"]) == (1, 1)


def _one_weight_set(g: Graph, nid: str, n: Node) -> bool:
    return n.attrs["weight"].ndim == 4


def _zero_border(g: Graph, nid: str, n: Node) -> bool:
    return n.attr("pad_value") is None


def _wide_enough(g: Graph, nid: str, n: Node) -> bool:
    o, c = n.attrs["weight"].shape[:2]
    return c >= MIN_CHANNELS and o >= MIN_CHANNELS and o % 16 == 0


def _direct(g: Graph, nid: str, n: Node) -> bool:
    return n.attr("algorithm") in (None, "direct")


def _winograd(g: Graph, nid: str, n: Node) -> Rewrite:
    return Rewrite(node=n.with_(attrs={**n.attrs, "algorithm": WINOGRAD}), note="F(2x2, 3x3)")


RULES = [Rule("winograd_f2", Op.CONV2D, _winograd,
              guards=(("3x3_stride1_pad1", _is_3x3_same), ("one_weight_set", _one_weight_set), ("zero_border", _zero_border),
                      ("channels", _wide_enough), ("direct", _direct)))]


def choose_winograd(g: Graph, stats: Counter | None = None) -> Graph:
    """g with its qualifying 3x3 convs set to Winograd (see the module docstring)."""
    return apply_rules(g, RULES, stats).graph
