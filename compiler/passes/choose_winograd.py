"""Winograd F(4x4, 3x3) or F(2x2, 3x3) for the fp32 3x3 convs where reidc's Winograd kernel is
faster (kernels/winograd.py): graph surgery only, the conv's `algorithm` attribute set to
"winograd_f4" or "winograd_f2"; its maths (and the IR interpreter's reference) are the conv's.
With `bf16` (the target's bf16 convs run on AVX512-BF16's vdpbf16ps) the bf16 3x3 convs take
F(2x2) as well, whatever `tiles` says; there the transformed input and weights are rounded to
bf16, which the bf16 conv's reference models (refmath.winograd_bf16: 0.4% relative L2 per layer
against the direct bf16 conv on random values). Measured per layer on a Zen 4 (2 threads, batch
1, direct bf16 -> F(2x2) bf16): 64 ch 64x32 1.37x, 128 ch 32x16 1.72x, 256 ch 16x8 1.83x, 512 ch
16x8 2.04x; CM-NAS ResNet-50 bf16 318 -> 262 ms at batch 16.

    %y = conv2d(%x) [3x3, stride 1, pad 1]  ->  %y = conv2d(%x) [..., algorithm="winograd_f4"]

Fires on a conv with a 3x3 kernel, stride 1, padding 1 and zeros at the border (no
`pad_value`), one weight set (per-modality weights stay direct), at least MIN_CHANNELS input
and output channels and output channels in whole 16-channel blocks, on x86 targets
(`winograd_target`). Measured per layer on a Xeon (AVX-512, 2 threads, batch 1; kernel alone,
direct conv with its 4x4 register tile vs Winograd): ResNet-50's 3x3 convs at 256x128 input
1.49x (64 ch, 64x32), 1.92x (128 ch, 32x16), 1.50x (256 ch, 16x8), 1.62x (512 ch, 16x8); a
32-channel 7x9 conv was 1.5x slower, hence MIN_CHANNELS. aarch64 and CUDA keep the direct
conv (not measured on a board or a GPU). Each rewritten conv is listed in the manifest's
layer table with its algorithm.

F(4x4, 3x3) multiplies 36 times per 16 outputs where F(2x2) multiplies 16 times per 4 (1.78x
fewer), for 4x the 3x3 weights in the transformed U (F(2x2): 16/9) and a relative error of
2-5e-6 per layer against F(2x2)'s 0.5-1.4e-6 (the G of F(4x4) has sixths and twelfths). It is
chosen by `tiles`: "auto" (the default) takes F(4x4) where its U fits the caches (C x O <=
256 x 256, 9.4 MB) and F(2x2) beyond, as a library's size matters as much as its speed; "4"
takes F(4x4) wherever it was measured faster, also where an image has enough tiles to read a
bigger U for (`_f4_pays`); "2" keeps F(2x2) everywhere (the smallest Winograd library).
CM-NAS ResNet-50 (Zen 4, 2 threads, in-process A/B): "2" 31.8 / 506 ms at batch 1 / 16, 127 MB;
"auto" 30.7 / 481 ms, 158 MB; "4" 30.4 / 456 ms, 221 MB.
Kernels alone, 2 threads, Zen 4 (AVX-512) / the x86-avx2 build on it, F(2x2) ms -> F(4x4) ms:
ResNet-50's 3x3 layers at 256x128 input, batch 1: 64 ch 64x32 0.73 -> 0.46 (1.61x; AVX2
1.46x), 128 ch 32x16 1.69x (1.57x), 256 ch 16x8 1.60x (1.34x), 512 ch 16x8 2.65 -> 1.90 (1.39x;
1.07x); batch 16: 1.53x, 1.69x, 1.69x, 1.66x. But 512 ch 8x4 at batch 1: 0.68 -> 1.30 ms
(0.53x): two tiles per image read all 37.7 MB of U each time, where F(2x2)'s 16.8 MB serve
eight; 256 ch 8x4 (9.4 MB) was still 1.23x, 64 ch 14x14 1.08x, 128 ch 7x9 1.31x.

With a tuning database (`reidc compile --tuning-db`), `measured` replaces the policy's guess for
every conv shape `reidc tune` timed (compiler/tune/algorithms.py: direct, F(2x2) and F(4x4) each
built alone and timed on the target at the tuned batch): the fastest there, "direct" included.
On the Zen 4 above it took F(4x4) for ResNet-50's 512-channel 16x8 conv at batch 16 (39.9 ->
23.3 ms a call), which "auto" leaves at F(2x2) to keep 63 MB out of the library.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from reidc.compiler.ir import Graph, Node, Op

from .rewrite import Rewrite, Rule, apply_rules

WINOGRAD = "winograd_f2"
WINOGRAD_F4 = "winograd_f4"
MIN_CHANNELS = 64
F4_CACHED_PRODUCTS = 256 * 256   # C x O at most: F(4x4)'s U (36 C O floats, 9.4 MB) stays in the caches
F4_MIN_TILES = 8                 # ... or at least this many 4x4 tiles per image read it ("4")


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


def _f4_fits(c: int, o: int, h: int, w: int) -> bool:
    """Whether F(4x4, 3x3)'s U for this conv stays in the caches."""
    return c * o <= F4_CACHED_PRODUCTS


def _f4_pays(c: int, o: int, h: int, w: int) -> bool:
    """Whether F(4x4, 3x3) was measured faster than F(2x2) for this conv (module docstring): its
    U fits the caches, or each image has enough 4x4 tiles to read it for."""
    return _f4_fits(c, o, h, w) or -(-h // 4) * -(-w // 4) >= F4_MIN_TILES


_TAKES_F4 = {"auto": _f4_fits, "4": _f4_pays, "2": lambda c, o, h, w: False}
TILES = tuple(_TAKES_F4)   # what `choose_winograd` takes F(4x4) for (module docstring)


def _dims(n: Node) -> tuple[int, int, int, int]:
    o, c = n.attrs["weight"].shape[:2]
    h, w = n.shape[-2:]
    return int(c), int(o), int(h), int(w)


def policy(sig: str, tiles: str = "auto") -> str:
    """The algorithm `tiles` gives a candidate conv of this `signature` (no measurement)."""
    chw, o = sig.split("->")
    c, h, w = (int(v) for v in chw.split("x"))
    return WINOGRAD_F4 if _TAKES_F4[tiles](c, int(o), h, w) else WINOGRAD


def _even_input(g: Graph, nid: str, n: Node) -> bool:
    return n.attrs["weight"].shape[1] % 2 == 0


def _set(n: Node, algorithm: str, note: str) -> Rewrite:
    return Rewrite(node=n.with_(attrs={**n.attrs, "algorithm": algorithm}), note=note)


GUARDS = (("3x3_stride1_pad1", _is_3x3_same), ("one_weight_set", _one_weight_set),
          ("zero_border", _zero_border), ("channels", _wide_enough), ("direct", _direct))
ALGORITHMS = ("direct", WINOGRAD, WINOGRAD_F4)   # what `reidc tune` measures per candidate conv


def signature(n: Node) -> str:
    """A 3x3 conv's shape as a tuning database keys its measured algorithm: "CxHxW->O"."""
    c, o, h, w = _dims(n)
    return f"{c}x{h}x{w}->{o}"


def candidates(g: Graph) -> dict[str, Node]:
    """The fp32 convs this pass may rewrite (every guard holds), by id."""
    return {nid: n for nid, n in g.items()
            if n.op == Op.CONV2D and all(pred(g, nid, n) for _, pred in GUARDS)}


def _rules(tiles: str, bf16: bool = False, measured: Mapping[str, str] | None = None) -> list[Rule]:
    takes_f4 = _TAKES_F4[tiles]
    measured = measured or {}

    def winograd(g: Graph, nid: str, n: Node) -> Rewrite | None:
        chosen = measured.get(signature(n))
        if chosen == "direct":
            return None
        if chosen is not None:
            return _set(n, chosen, f"{chosen}, measured fastest by `reidc tune`")
        return _set(n, WINOGRAD_F4, "F(4x4, 3x3)") if takes_f4(*_dims(n)) else _set(n, WINOGRAD, "F(2x2, 3x3)")
    rules = [Rule("winograd", Op.CONV2D, winograd, guards=GUARDS)]
    if bf16:   # F(2x2) only: F(4x4)'s transforms (x4, x5, x8) on bf16-rounded V would add too much error
        rules.append(Rule("winograd_bf16", Op.CONV2D_BF16, lambda g, nid, n: _set(n, WINOGRAD, "F(2x2, 3x3), bf16"),
                          guards=GUARDS + (("even_input", _even_input),)))
    return rules


def choose_winograd(g: Graph, stats: Counter | None = None, tiles: str = "auto", bf16: bool = False,
                    measured: Mapping[str, str] | None = None) -> Graph:
    """g with its qualifying 3x3 convs set to Winograd, F(4x4) or F(2x2) as `tiles` says (see
    the module docstring); with `bf16` (the target's bf16 convs run on vdpbf16ps) its bf16 3x3
    convs too, F(2x2) whatever `tiles` says. `measured` (a tuning database's, by `signature`):
    the algorithm `reidc tune` timed fastest for an fp32 conv of that shape on the target, which
    replaces the policy's guess there ("direct" leaves the conv as it is)."""
    if tiles not in _TAKES_F4:
        raise ValueError(f"winograd tiles {tiles!r}: expected one of {', '.join(TILES)}")
    bad = {k: v for k, v in (measured or {}).items() if v not in ALGORITHMS}
    if bad:
        raise ValueError(f"measured algorithms {bad}: expected one of {', '.join(ALGORITHMS)}")
    return apply_rules(g, _rules(tiles, bf16, measured), stats).graph
