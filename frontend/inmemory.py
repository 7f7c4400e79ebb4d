"""An in-memory torch.nn.Module as a compile source, with no file written: reidc's own networks
(a CM-NAS or BiRe-ID ResNet, which carry their ArchSpec) are traced with their modality
argument; any other module of supported ops is exported with torch.export and read at the
ATen level, as a .pt2 program is."""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from reidc.compiler.base.modes import MODEL_MODES, RunMode

from .arch import ArchSpec, preprocess_for
from .capture import capture_module, capture_program
from reidc.compiler.base.errors import CaptureError


def state_digest(module: nn.Module) -> str:
    """sha256 over the module's parameters and buffers (name, dtype, shape, bytes): what an
    artifact compiled from it records, so a later verify can tell it is the same network."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_source(module: nn.Module, input_shape: tuple[int, int, int] | None = None, name: str | None = None,
                  say=lambda msg: None):
    """(torch module, IR graph, modes, manifest facts) for an nn.Module held in memory.
    input_shape (C, H, W): required unless the module is one of reidc's networks."""
    if not isinstance(module, nn.Module):
        raise CaptureError(f"expected a torch.nn.Module or a checkpoint path, got {type(module).__name__}")
    module = module.eval()
    spec = getattr(module, "spec", None)
    digest = state_digest(module)
    if isinstance(spec, ArchSpec):
        shape = tuple(input_shape) if input_shape else (3,) + tuple(spec.input_size)
        g = capture_module(module, shape, name or spec.name)
        facts = {"model": name or spec.name, "family": spec.family, "arch": spec.to_json(), "weights_entry": None,
                 "checkpoint_sha256": digest, "preprocess": preprocess_for(shape)}
        return module, g, MODEL_MODES, facts
    if input_shape is None or len(tuple(input_shape)) != 3:
        raise CaptureError(f"{type(module).__name__}: pass input_shape=(C, H, W) to compile a module that is "
                           "not one of reidc's networks")
    name = name or type(module).__name__
    example = torch.zeros((2,) + tuple(int(d) for d in input_shape))
    try:
        ep = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        batch = None
    except Exception as why:  # data-dependent control flow on the batch: export at a fixed batch instead
        say(f"warning: {name} does not export with a dynamic batch ({str(why).splitlines()[0][:120] if str(why) else type(why).__name__}); "
            "compiling it for batch 2 only")
        try:
            ep = torch.export.export(module, (example,))
        except Exception as e:
            raise CaptureError(f"cannot export {name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        batch = 2
    g = capture_program(ep, name)
    facts = {"model": name, "family": "torch.export", "arch": None, "export_batch": batch, "checkpoint_sha256": digest}
    return ep.module(), g, (RunMode.MAIN,), facts
