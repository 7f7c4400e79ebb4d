"""Pure cost model for a split BN after a conv in a mixed-modality batch.

Two ways to run `conv -> split BN` when one batch holds both modalities:
- "affine": run the conv once with the raw weights, then a per-sample affine (the sample's
  modality picks scale and shift). The affine fuses into the conv's epilogue: one extra
  multiply per output element, and one weight set in cache.
- "weights": fold each modality's BN into its own copy of the weights and let each sample use
  its modality's copy. This is splitting the batch by modality without moving any data; the
  numbers equal the single-modality builds exactly, but the layer streams two weight sets.
The plan takes "weights" while the second weight copy stays small against the L2 cache
(it then costs nothing measurable and keeps mixed and single-modality numbers identical),
and "affine" otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

#: extra weight bytes a layer may add before the second copy competes for L2 (half of 512 KiB)
WEIGHT_BUDGET_BYTES = 256 * 1024


@dataclass(frozen=True)
class MixedChoice:
    strategy: str  # "affine" | "weights"
    reason: str
    extra_weight_bytes: int
    epilogue_flops_per_sample: int
    conv_flops_per_sample: int


def choose(weight_shape: tuple, out_shape: tuple, forced: str | None = None, shared: bool = False) -> MixedChoice:
    """`shared`: the artifact's single-modality entries keep this conv's own weights (an affine
    after them): "affine" is then their exact match and stores nothing more, where "weights"
    would store two more weight sets."""
    o, i, kh, kw = weight_shape
    hw = out_shape[2] * out_shape[3]
    extra = o * i * kh * kw * 4
    epi = o * hw
    conv = 2 * o * i * kh * kw * hw
    if forced in ("affine", "weights"):
        return MixedChoice(forced, f"forced by --mixed-strategy {forced}", extra, epi, conv)
    if shared:
        why = ("the other entries keep this conv's weights (a per-channel affine after them): the per-sample "
               f"affine shares them and matches those entries ({100 * epi / conv:.2f}% of the conv's FLOPs), "
               f"per-sample weights would store {2 * extra / 1024:.0f} KiB more")
        return MixedChoice("affine", why, extra, epi, conv)
    if extra <= WEIGHT_BUDGET_BYTES:
        why = (f"second weight copy {extra / 1024:.0f} KiB <= {WEIGHT_BUDGET_BYTES // 1024} KiB budget: "
               f"per-sample weights, exact match with single-modality folding")
        return MixedChoice("weights", why, extra, epi, conv)
    why = (f"second weight copy {extra / 1024:.0f} KiB > {WEIGHT_BUDGET_BYTES // 1024} KiB budget; "
           f"fused per-sample affine costs {100 * epi / conv:.2f}% of the conv's FLOPs")
    return MixedChoice("affine", why, extra, epi, conv)
