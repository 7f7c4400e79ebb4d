"""Safe checkpoint I/O. Checkpoints are untrusted: nothing is ever unpickled.

A reidc checkpoint is a directory holding `model.safetensors` (weights) and `arch.json`
(the `ArchSpec`). Also accepted: a `.safetensors` file or a weights-only torch file
(`.pt`/`.pth`, loaded with `weights_only=True`) plus a spec from `arch=` (reidc's JSON spec)
or `split_config=` (CM-NAS's `config.cfg`). State dicts whose keys carry prefixes such as
`module.` or `base_resnet.base.` (as CM-NAS saves them) load by unique key suffix.
"""
from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_directory
from .arch import ArchError, ArchSpec, load_spec, read_cmnas_config
from .models import CMNASResNet, build_model
from .errors import CheckpointError  # noqa: F401  (defined where the CLI imports it without torch)

WEIGHTS, SPEC = "model.safetensors", "arch.json"


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    with open(path, "rb") as f:
        head = f.read(2)
    if not zipfile.is_zipfile(path) and head[:1] != b"\x80":
        raise CheckpointError(f"{path}: corrupt or truncated torch file (neither a torch zip archive nor a pickle)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        first = next((ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()), lines[0] if lines else "unsafe pickle")
        raise CheckpointError(f"{path}: refused to load: the file holds objects other than tensors "
                              f"(weights_only=True rejected it: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated torch file ({str(e).splitlines()[0]})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors, found {type(obj).__name__}")
    return obj


def _match_keys(model_keys: list[str], ckpt: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Map checkpoint keys onto model keys under the one key prefix (e.g. `module.base_resnet.base.`)
    that explains the most of them; CM-NAS saves its backbone under such prefixes."""
    anchor = model_keys[0]
    prefixes = {k[: len(k) - len(anchor)] for k in ckpt if k.endswith(anchor)} or {""}
    best = max(sorted(prefixes), key=lambda p: sum(p + k in ckpt for k in model_keys))
    return {k: ckpt[best + k] for k in model_keys if best + k in ckpt}


def load_weights_into(model: CMNASResNet, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load: every parameter and BN statistic must be present with the right shape."""
    want = model.state_dict()
    required = [k for k in want if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")]
    got = _match_keys(list(want), weights, source)
    missing = [k for k in required if k not in got]
    if missing:
        raise CheckpointError(f"{source}: weights do not fit {model.spec.name}: {len(missing)} tensors missing, "
                              f"first {missing[0]!r}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise CheckpointError(f"{source}: weights do not fit {model.spec.name}: {k!r} has shape "
                                  f"{tuple(v.shape)}, the architecture needs {tuple(want[k].shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: tensor {k!r} holds NaN or Inf")
    _check_not_blank(got, source)
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in got.items()}, strict=False)


def _check_not_blank(weights: dict[str, torch.Tensor], source: Path) -> None:
    """All-zero conv/dense weights are an untrained or blanked file: every feature would be the
    same. All of them zero is an error; some of them zero a warning naming them."""
    kernels = [k for k, v in weights.items() if k.endswith(".weight") and v.ndim >= 2 and v.is_floating_point()]
    zero = [k for k in kernels if not bool(weights[k].any())]
    if kernels and len(zero) == len(kernels):
        raise CheckpointError(f"{source}: every convolution and dense weight is zero (an untrained or blanked "
                              "checkpoint: all features would be equal)")
    if zero:
        warnings.warn(f"{source}: {len(zero)} of {len(kernels)} conv/dense weights are all zero "
                      f"(first {zero[0]!r}); their layers output only their bias", stacklevel=2)


def resolve_spec(path: Path, arch: str | Path | None = None, split_config: str | Path | None = None,
                 depth: int | None = None) -> ArchSpec:
    if arch is not None:
        return load_spec(arch)
    if split_config is not None:
        split = read_cmnas_config(split_config)
        if depth is None:
            from .arch import DEPTHS, bn_names
            depths = [d for d in DEPTHS if len(bn_names(d)) == len(split)]
            if not depths:
                raise ArchError(f"{split_config}: {len(split)} entries fit no supported ResNet")
            depth = depths[-1]
        return ArchSpec(depth=depth, split=split)
    if path.is_dir():
        return load_spec(path / SPEC)
    raise ArchError(f"{path}: no architecture spec: pass a checkpoint directory with {SPEC}, "
                    "or --arch SPEC.json, or --split-config config.cfg")


def load_checkpoint(path: str | Path, arch=None, split_config=None, depth=None) -> CMNASResNet:
    """Build the model described by the checkpoint and load its weights (eval mode)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    spec = resolve_spec(path, arch, split_config, depth)
    wpath = path / WEIGHTS if path.is_dir() else path
    model = build_model(spec)
    load_weights_into(model, _read_weights(wpath), wpath)
    return model.eval()


def save_checkpoint(model: CMNASResNet, out_dir: str | Path, inputs=()) -> Path:
    """Write `out_dir/{model.safetensors,arch.json}` atomically (temp dir, then rename); an
    existing `out_dir` is replaced only if it is a reidc checkpoint (frontend.atomic's rules)."""
    with atomic_directory(out_dir, "checkpoint", inputs) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "reidc", "model": model.spec.name})
        (tmp / SPEC).write_text(json.dumps(model.spec.to_json(), indent=1) + "\n")
    return Path(out_dir)
