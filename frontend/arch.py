"""Architecture specs: which BatchNorms are split by modality (CM-NAS's search space).

The split vector follows CM-NAS's order: the stem BN, then per stage the downsample BN
first, then each block's BNs (bn1, bn2[, bn3]). 0 = split (visible BN + infrared BN),
1 = shared. ResNet-50 has 53 entries, ResNet-18 has 20.
"""
from __future__ import annotations

import json
import random as _random
from dataclasses import dataclass, field
from pathlib import Path

from reidc.compiler.base.errors import ArchError

# depth -> (block kind, blocks per stage)
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3))}
STAGE_WIDTHS = (64, 128, 256, 512)
SPEC_VERSION = 1


FAMILIES = ("cmnas", "bire")
FEATURES = ("bnneck", "pool")  # CM-NAS eval: `feat` after the BNNeck BN, `global_feat` before it


def _stages(depth: int, expansion: int):
    """(stage index, blocks, in channels, out channels, stride) with last stride 1."""
    _, blocks = DEPTHS[depth]
    cin = 64
    for stage, n in enumerate(blocks):
        cout = STAGE_WIDTHS[stage] * expansion
        yield stage, n, cin, cout, (1 if stage in (0, 3) else 2)
        cin = cout


def bn_names(depth: int, family: str = "cmnas") -> list[str]:
    """Module paths of the switchable BNs, in split-vector order: the stem BN, then per stage
    the downsample BN first, then each block's BNs (CM-NAS: bn1, bn2[, bn3]; BiRe: per conv
    unit the BN before the sign and the BN after the binary conv)."""
    if family == "bire":
        if DEPTHS[depth][0] != "basic":
            raise ArchError(f"binarized networks use basic blocks: ResNet-18 or -34, not {depth}")
        names = ["bn1"]
        for stage, n, cin, cout, stride in _stages(depth, 1):
            if stride != 1 or cin != cout:
                names.append(f"layer{stage + 1}.0.unit1.shortcut.bn")
            for b in range(n):
                for u in ("unit1", "unit2"):
                    names += [f"layer{stage + 1}.{b}.{u}.bn_in", f"layer{stage + 1}.{b}.{u}.bn_out"]
        return names
    kind, blocks = DEPTHS[depth]
    per_block = ("bn1", "bn2") if kind == "basic" else ("bn1", "bn2", "bn3")
    expansion = 1 if kind == "basic" else 4
    names = ["bn1"]
    in_ch = 64
    for stage, n in enumerate(blocks):
        out_ch = STAGE_WIDTHS[stage] * expansion
        stride = 1 if stage in (0, 3) else 2  # last stride 1 (ReID convention)
        if stride != 1 or in_ch != out_ch:
            names.append(f"layer{stage + 1}.0.downsample.1")
        for b in range(n):
            names.extend(f"layer{stage + 1}.{b}.{bn}" for bn in per_block)
        in_ch = out_ch
    return names


#: the per-channel statistics ReID codebases normalise with (ImageNet's), after scaling to [0, 1]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_for(input_shape) -> dict:
    """How images become the network's input, as CM-NAS's and BiRe-ID's test transforms do it
    (Resize to H x W, ToTensor, Normalize with ImageNet statistics); recorded in the manifest
    so `reidc run` can read image files."""
    return {"color": "RGB", "resize": [int(d) for d in tuple(input_shape)[-2:]], "scale": 1 / 255,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}

@dataclass(frozen=True)
class ArchSpec:
    """What a checkpoint's weights mean: the network, its BN split vector and its input."""

    depth: int
    split: tuple[int, ...]
    input_size: tuple[int, int] = (256, 128)
    num_classes: int = 395
    family: str = "cmnas"
    binary_stages: tuple[bool, ...] = (True, True, True, True)  # bire: which stages binarize
    binary_downsample: bool = False                              # bire: 1x1 shortcut binary too
    feature: str = "bnneck"       # the output: "bnneck" (after the BNNeck BN) or "pool" (before it)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ArchError(f"unknown model family {self.family!r}; known: {', '.join(FAMILIES)}")
        if self.depth not in DEPTHS:
            raise ArchError(f"unsupported ResNet depth {self.depth}; supported: {sorted(DEPTHS)}")
        if len(self.binary_stages) != 4:
            raise ArchError(f"binary_stages needs 4 entries (one per stage), has {len(self.binary_stages)}")
        n = len(bn_names(self.depth, self.family))
        if len(self.split) != n:
            raise ArchError(
                f"split vector has {len(self.split)} entries but ResNet-{self.depth} has {n} BatchNorms")
        bad = [i for i, v in enumerate(self.split) if v not in (0, 1)]
        if bad:
            raise ArchError(f"split vector entry {bad[0]} is {self.split[bad[0]]!r}; entries must be 0 (split) or 1 (shared)")
        if self.feature not in FEATURES:
            raise ArchError(f"feature {self.feature!r}: expected {' or '.join(FEATURES)}")
        h, w = self.input_size
        if h < 32 or w < 32 or h % 32 or w % 32:
            raise ArchError(f"input size {h}x{w} must be multiples of 32, at least 32x32")

    @property
    def name(self) -> str:
        return f"{self.family}-resnet{self.depth}"

    def split_of(self) -> dict[str, bool]:
        """BN module path -> True when that BN is split by modality."""
        return {n: v == 0 for n, v in zip(bn_names(self.depth, self.family), self.split)}

    def to_json(self) -> dict:
        d = {"version": SPEC_VERSION, "family": self.family, "depth": self.depth,
             "split": list(self.split), "input_size": list(self.input_size),
             "num_classes": self.num_classes}
        if self.family == "bire":
            d["binary_stages"] = [bool(b) for b in self.binary_stages]
            d["binary_downsample"] = bool(self.binary_downsample)
        if self.feature != "bnneck":
            d["feature"] = self.feature
        return d

    @classmethod
    def from_json(cls, d: dict, source: str = "spec") -> "ArchSpec":
        try:
            if d.get("version", SPEC_VERSION) != SPEC_VERSION:
                raise ArchError(f"{source}: spec version {d['version']} is not supported (expected {SPEC_VERSION})")
            return cls(depth=int(d["depth"]), split=tuple(int(v) for v in d["split"]),
                       input_size=tuple(int(v) for v in d.get("input_size", (256, 128))),
                       num_classes=int(d.get("num_classes", 395)), family=str(d.get("family", "cmnas")),
                       binary_stages=tuple(bool(b) for b in d.get("binary_stages", (True,) * 4)),
                       binary_downsample=bool(d.get("binary_downsample", False)),
                       feature=str(d.get("feature", "bnneck")))
        except ArchError as e:
            raise ArchError(f"{source}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ArchError(f"{source}: malformed architecture spec ({e!r})") from None


def parse_split(text: str, depth: int, family: str = "cmnas") -> tuple[int, ...]:
    """`all-split`, `all-shared`, `random:SEED`, or an explicit `0 1 1 ...` / `0,1,1` list."""
    n = len(bn_names(depth, family))
    text = text.strip()
    if text == "all-split":
        return (0,) * n
    if text == "all-shared":
        return (1,) * n
    if text.startswith("random:"):
        try:
            seed = int(text.split(":", 1)[1])
        except ValueError:
            raise ArchError(f"bad split {text!r}: expected random:<integer seed>") from None
        rng = _random.Random(seed)
        return tuple(rng.randint(0, 1) for _ in range(n))
    try:
        return tuple(int(t) for t in text.replace(",", " ").split())
    except ValueError:
        raise ArchError(f"bad split {text!r}: expected all-split, all-shared, random:SEED or a list of 0/1") from None


def read_cmnas_config(path: str | Path) -> tuple[int, ...]:
    """CM-NAS's `config.cfg`: one line of space-separated ints (0 = split, 1 = shared)."""
    p = Path(path)
    try:
        line = p.read_text().strip().splitlines()[0]
        return tuple(int(t) for t in line.split())
    except (OSError, IndexError, ValueError) as e:
        raise ArchError(f"{p}: not a CM-NAS config.cfg (one line of space-separated 0/1): {e}") from None


def load_spec(path: str | Path) -> ArchSpec:
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise ArchError(f"{p}: cannot read architecture spec: {e}") from None
    if not isinstance(d, dict):
        raise ArchError(f"{p}: architecture spec must be a JSON object")
    return ArchSpec.from_json(d, source=str(p))
