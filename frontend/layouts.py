"""State-dict key layouts reidc reads, as data: how another codebase names the tensors of the
network reidc builds. A layout is an ordered list of (regular expression on the checkpoint's
key, reidc's key); the first rule that matches renames a key, keys no rule matches are ignored
(classifier heads, optimizer state). Adding a codebase is adding a table here.

CM-NAS (JDAI-CV/CM-NAS, `models/model_eval_op.py`): `TwoStreamSwitchBNOp` keeps the backbone
under `backbone.` with `SwitchBatchNorm2d` modules holding `visible_bn`, `thermal_bn` and
`sharable_bn` (reidc's names too), a `DownsampleSwitchBN` with `.conv` and `.bn`, and the head
`bnneck` (BatchNorm1d) + `classifier`. `Baseline` (`models/model_base.py`) is the same ResNet-50
with plain BatchNorm2d layers (one shared BN each) and torchvision's `downsample.0/.1`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_HEAD = ((r"bnneck\.(.+)", r"bottleneck.\1"), (r"classifier\.(.+)", r"classifier.\1"))


@dataclass(frozen=True)
class Layout:
    name: str
    rules: tuple[tuple[str, str], ...]
    all_shared: bool = False   # plain BNs only: the network is the all-shared CM-NAS network

    def rename(self, key: str) -> str | None:
        for pat, rep in self.rules:
            m = re.fullmatch(pat, key)
            if m:
                return m.expand(rep)
        return None


LAYOUTS = (
    Layout("reidc", ((r"(.+)", r"\1"),)),
    Layout("CM-NAS TwoStreamSwitchBNOp", (
        (r"backbone\.(layer\d\.\d+)\.downsample\.conv\.(.+)", r"\1.downsample.0.\2"),
        (r"backbone\.(layer\d\.\d+)\.downsample\.bn\.(.+)", r"\1.downsample.1.\2"),
        (r"backbone\.(.+)", r"\1"),
    ) + _HEAD),
    Layout("CM-NAS Baseline", (
        (r"backbone\.(layer\d\.\d+)\.downsample\.0\.(.+)", r"\1.downsample.0.\2"),
        (r"backbone\.(layer\d\.\d+)\.downsample\.1\.(.+)", r"\1.downsample.1.sharable_bn.\2"),
        (r"backbone\.((?:layer\d\.\d+\.)?bn\d)\.(.+)", r"\1.sharable_bn.\2"),
        (r"backbone\.(.+)", r"\1"),
    ) + _HEAD, all_shared=True),
)


def strip_wrapper_prefix(keys: list[str]) -> str:
    """The prefix every key shares because of a wrapper (`module.` from DataParallel /
    DistributedDataParallel, possibly repeated), or ''."""
    prefix = ""
    while keys and all(k.startswith(prefix + "module.") for k in keys):
        prefix += "module."
    return prefix


def translate(layout: Layout, keys: list[str], prefix: str = "") -> dict[str, str]:
    """reidc key -> checkpoint key under `layout` (first checkpoint key wins a collision)."""
    out: dict[str, str] = {}
    for k in keys:
        if not k.startswith(prefix):
            continue
        name = layout.rename(k[len(prefix):])
        if name is not None and name not in out:
            out[name] = k
    return out


def infer_depth(reidc_keys) -> int | None:
    """The ResNet depth a set of reidc keys describes (blocks per stage, bottleneck or not)."""
    from .arch import DEPTHS
    blocks = []
    for s in range(1, 5):
        idx = {int(m.group(1)) for k in reidc_keys for m in [re.match(rf"layer{s}\.(\d+)\.", k)] if m}
        blocks.append(max(idx) + 1 if idx else 0)
    bottleneck = any(re.match(r"layer\d\.\d+\.conv3\.", k) for k in reidc_keys)
    for depth, (kind, n) in DEPTHS.items():
        if tuple(blocks) == n and (kind == "bottleneck") == bottleneck:
            return depth
    return None
