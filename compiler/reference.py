"""The PyTorch side of every comparison: seeded inputs and eager outputs per run mode."""
from __future__ import annotations

import numpy as np
import torch

from frontend.models import modality_tensor


def seeded_inputs(input_shape: tuple[int, int, int], batch: int, mode: str, seed: int = 0):
    """Images (batch, C, H, W) float32 and, for the mixed mode, an alternating 0/1 int32 vector."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + tuple(input_shape), dtype=np.float32)
    m = (np.arange(batch) % 2).astype(np.int32) if mode == "mixed" else None
    return x, m


def torch_forward(model: torch.nn.Module, x: np.ndarray, mode: str, modality: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        xt = torch.from_numpy(x)
        if mode == "main":
            return model(xt).numpy()
        arg = torch.from_numpy(modality) if mode == "mixed" else modality_tensor(mode, len(x))
        return model(xt, arg).numpy()


def rel_err(out: np.ndarray, ref: np.ndarray) -> float:
    """Max over samples of ||out - ref||_2 / ||ref||_2 (the norm verification states)."""
    out = out.reshape(len(out), -1).astype(np.float64)
    ref = ref.reshape(len(ref), -1).astype(np.float64)
    den = np.maximum(np.linalg.norm(ref, axis=1), 1e-12)
    return float((np.linalg.norm(out - ref, axis=1) / den).max())
