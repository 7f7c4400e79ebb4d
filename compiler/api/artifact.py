"""`reidc.load` and `Artifact`: a compiled model as a Python object. Loading and running need
TVM's runtime and numpy only; `verify` and `bench` bring in the compiler (PyTorch) when called."""
from __future__ import annotations

import shutil
import weakref
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reidc.compiler.base.atomic import atomic_directory
from reidc.compiler.runtime import INPUT_CONTRACT, Compiled, read_manifest  # noqa: F401  (what run takes)


def _numpy(x) -> np.ndarray:
    """numpy arrays as they are; a torch tensor (any device, with or without grad) as numpy."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class Artifact:
    """A compiled model: a folder holding the library and its manifest.json.

    `run(x, modality)` gives the features; `manifest` says what it is (model, entries, input
    contract, target, verification figures); `save(path)` copies it; `verify()` re-runs the
    comparison with PyTorch; `bench()` times it beside the engines users would run instead.
    Opening one reads and checks its manifest only: the library is loaded (and this machine's
    CPU, GPU or qemu checked) at the first `run`, so an artifact built for another machine can
    still be inspected, saved and copied here."""

    def __init__(self, path: str | Path, *, rpc: tuple[str, str] | None = None,
                 progress: Callable[[str], None] | None = None, _owned_tmp: str | None = None,
                 _source_module=None):
        self.path = Path(path)
        self._progress = progress or (lambda msg: None)
        self._rpc = rpc
        self._manifest = read_manifest(self.path)   # checked: a folder that is no artifact fails here
        self._compiled: Compiled | None = None
        self._module = _source_module
        self._cleanup = weakref.finalize(self, shutil.rmtree, _owned_tmp, True) if _owned_tmp else None

    # --- what it is -------------------------------------------------------------------------
    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest as written (a fresh copy: editing it changes nothing)."""
        return read_manifest(self.path)

    @property
    def modes(self) -> tuple[str, ...]:
        """The entries: visible, infrared, mixed (reidc's networks) or main (a torch.export program)."""
        return tuple(self._manifest["modes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one image."""
        return tuple(self._manifest["input_shape"])

    @property
    def target(self) -> str:
        """The target preset it was built for (e.g. host, x86-avx2, rpi5, sm87)."""
        return self._manifest["target"]["preset"]

    def __repr__(self) -> str:
        m = self._manifest
        return (f"Artifact({str(self.path)!r}: {m['model']} for {self.target}, entries {', '.join(self.modes)}, "
                f"input {'x'.join(map(str, self.input_shape))}, verification {(m.get('verification') or {}).get('status')})")

    # --- running ----------------------------------------------------------------------------
    def _runtime(self) -> Compiled:
        if self._compiled is None:
            self._compiled = Compiled(self.path, self._progress, rpc=self._rpc)
        return self._compiled

    def run(self, x: Any, modality: str | Any = "visible") -> np.ndarray:
        """Features of a batch x (N, C, H, W) float32, numpy or torch. modality: "visible",
        "infrared" (the whole batch), "halves", or a per-sample vector of codes (0 visible,
        1 infrared) for the mixed entry; ignored by a `main`-only program."""
        m = modality if isinstance(modality, str) else _numpy(modality)
        return self._runtime().run(_numpy(x), m)

    __call__ = run

    def save(self, path: str | Path) -> "Artifact":
        """Copy the artifact to `path` (a new folder, or an artifact reidc wrote: replaced whole,
        atomically); returns the saved copy."""
        with atomic_directory(Path(path), "artifact", [self.path]) as tmp:
            for f in self.path.iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        return Artifact(path, rpc=self._rpc, progress=self._progress, _source_module=self._module)

    # --- checking and timing (these need the compiler and PyTorch) ----------------------------
    def verify(self, checkpoint: str | Path | None = None, module: Any = None) -> dict[str, Any]:
        """Run the library against PyTorch eager again (where it can run) and record the figures
        in the manifest; returns them. The reference: `checkpoint`, else `module` (the
        nn.Module it was compiled from, checked by its weights' digest), else the checkpoint the
        manifest names, else the module it was compiled from in this session."""
        from .jobs import verify
        man = verify(self, checkpoint, self._progress, module=module if module is not None else self._module)
        self._manifest, self._compiled = man, None
        return man["verification"]

    def bench(self, batches=(1, 16), **options) -> list[dict]:
        """Time the artifact beside PyTorch eager, torch.compile and ONNX Runtime (each engine in
        its own process, in turn): one row per (entry, batch). Options as `reidc.bench`."""
        from .jobs import bench
        return bench(self, batches, **options)


def inspect(path: str | Path) -> dict[str, Any]:
    """What an artifact is, from its manifest (nothing is loaded or run): model and family,
    entries, input (shape, contract, preprocessing), target and the CPU features its code
    needs, precision, sizes, verification figures, tuning database digest, versions."""
    m = read_manifest(path)
    v = m.get("verification") or {}
    w = m.get("weights") or {}
    binary = m.get("binary_layers") or 0
    return {
        "path": str(path), "model": m.get("model"), "family": m.get("family"), "entries": m.get("entries"),
        "input": {"shape": m.get("input_shape"), "dtype": m.get("input_dtype"), "contract": m.get("input_contract"),
                  "batch": m.get("batch") or "any", "preprocess": m.get("preprocess")},
        "output": m.get("output"),
        "target": {"preset": m["target"]["preset"], "arch": m["target"].get("arch"), "tvm": m["target"].get("tvm"),
                   "cpu_features": m["target"].get("cpu_features")},
        "precision": m.get("precision") or {"real_valued": "fp32", "binary_convs": binary},
        "per_sample": m.get("per_sample"), "weights": w,
        "verification": {k: v[k] for k in ("status", "why", "max_rel_err", "tolerance", "reference", "batch")
                         if k in v},
        "tuning": m.get("tuning"), "mixed_plan_layers": len(m.get("mixed_plan") or {}),
        "checkpoint": m.get("checkpoint"), "checkpoint_sha256": m.get("checkpoint_sha256"),
        "versions": {"reidc": m.get("reidc_version"), "tvm": m.get("tvm_version")},
    }


def load(path: str | Path, *, rpc: tuple[str, str] | None = None,
         progress: Callable[[str], None] | None = None) -> Artifact:
    """Open an artifact folder written by `reidc compile` (checked: manifest, file digests, that
    this CPU has the features it was built for). rpc=(tracker "HOST:PORT", key) runs it on a
    device registered with TVM's RPC tracker."""
    return Artifact(path, rpc=rpc, progress=progress)
