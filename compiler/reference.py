"""The PyTorch side of every comparison: seeded inputs and eager outputs per run mode."""
from __future__ import annotations

import numpy as np
import torch

from reidc.frontend.models import modality_tensor

from .base.modes import Modality, RunMode


def seeded_inputs(input_shape: tuple[int, int, int], batch: int, mode: str, seed: int = 0, value_range=None):
    """Images (batch, C, H, W) float32 and, for the mixed mode, a modality vector alternating
    visible, infrared, visible... (int32 codes). Standard normal (normalised images), or
    uniform over `value_range` (lo, hi) for a network that takes raw pixels (fast-reid's)."""
    rng = np.random.default_rng(seed)
    if value_range is None:
        x = rng.standard_normal((batch,) + tuple(input_shape), dtype=np.float32)
    else:
        lo, hi = value_range
        x = rng.uniform(lo, hi, (batch,) + tuple(input_shape)).astype(np.float32)
    codes = np.array([Modality.VISIBLE.code, Modality.INFRARED.code], np.int32)
    m = codes[np.arange(batch) % 2] if mode == RunMode.MIXED else None
    return x, m


def torch_forward(model: torch.nn.Module, x: np.ndarray, mode: str, modality: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        return model(*_args(x, mode, modality)).numpy()


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """Max over samples of ||out - ref||_2 / ||ref||_2 (the norm verification states)."""
    out = out.reshape(len(out), -1).astype(np.float64)
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    den = np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    return float((np.linalg.norm(out - ref, axis=1) / den).max())


#: a bit may flip under float rounding only where PyTorch's pre-sign value is this close to 0
ROUNDING_MARGIN = 1e-4


def presign_values(model: torch.nn.Module, x: np.ndarray, mode: str, modality=None) -> dict[str, np.ndarray]:
    """PyTorch's values entering each sign(), keyed like the IR's bitpack sources: the
    BinaryConv2d module path for reidc's models, the op's module path for exported programs."""
    from reidc.frontend.bire import BinaryConv2d
    found: dict[str, np.ndarray] = {}
    hooks = [mod.register_forward_pre_hook(lambda _m, args, name=name: found.__setitem__(name, args[0].detach().numpy()))
             for name, mod in model.named_modules() if isinstance(mod, BinaryConv2d)]
    try:
        if isinstance(model, torch.fx.GraphModule):
            _SignRecorder(model, found).run(*_args(x, mode, modality))
        else:
            torch_forward(model, x, mode, modality)
    finally:
        for h in hooks:
            h.remove()
    return found


def _args(x, mode, modality):
    """The model's arguments for a batch `x` of the run mode `mode` (mixed: `modality` codes)."""
    xt = torch.from_numpy(x)
    if mode == RunMode.MAIN:
        return (xt,)
    return (xt, torch.from_numpy(modality) if mode == RunMode.MIXED else modality_tensor(mode, len(x)))


class _SignRecorder(torch.fx.Interpreter):
    """Runs an exported program's module, recording the input of every activation sign by node name."""

    def __init__(self, gm, found):
        super().__init__(gm)
        self.found = found

    def run_node(self, n):
        if n.op == "call_function" and n.target in (torch.ops.aten.sign.default, torch.sign) \
                and not _constant(n.args[0]):
            self.found[n.name] = self.env[n.args[0]].detach().numpy()
        with torch.no_grad():
            return super().run_node(n)


def _constant(node) -> bool:
    """A node computed from parameters alone (e.g. sign(W)): not an activation."""
    if node.op == "get_attr":
        return True
    ins = node.all_input_nodes
    return node.op == "call_function" and bool(ins) and all(_constant(i) for i in ins)


def count_flips(bits: list[np.ndarray], sites: list[str], presign: dict[str, np.ndarray]) -> list[dict]:
    """Per sample: bits that differ from PyTorch's signs at each site, and whether the first
    site with flips flipped only values within ROUNDING_MARGIN of 0 (rounding, not a bug)."""
    from reidc.compiler.ir.bits import pack_signs
    out = []
    n = len(bits[0]) if bits else 0
    for i in range(n):
        per_site, first_ok, first_site, worst = [], True, None, 0.0
        for k, site in enumerate(sites):
            v = presign[site][i]  # (C, H, W), or (C,) before a binary dense
            v = v.reshape(v.shape + (1, 1)) if v.ndim == 1 else v
            ref = pack_signs(v.transpose(1, 2, 0))
            diff = np.bitwise_xor(bits[k][i], ref)
            flips = int(np.unpackbits(diff.view(np.uint8)).sum())
            per_site.append(flips)
            if flips and first_site is None:
                first_site = site
                mask = np.unpackbits(diff.view(np.uint8).reshape(diff.shape[:-1] + (-1,)), axis=-1,
                                     bitorder="little")[..., :v.shape[0]].astype(bool)  # (H, W, C)
                worst = float(np.abs(v.transpose(1, 2, 0)[mask]).max())
                first_ok = worst < ROUNDING_MARGIN
        out.append({"flipped_bits": sum(per_site), "first_site": first_site,
                    "first_site_max_abs_presign": worst, "rounding_only": first_ok})
    return out
