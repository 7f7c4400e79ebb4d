"""Safe checkpoint I/O. Checkpoints are untrusted: nothing is ever unpickled.

A reidc checkpoint is a directory holding `model.safetensors` (weights) and `arch.json`
(the `ArchSpec`). Also accepted: a `.safetensors` file or a weights-only torch file
(`.pt`/`.pth`/`.pth.tar`, loaded with `weights_only=True`) plus a spec from `arch=` (reidc's JSON
spec) or `split_config=` (CM-NAS's `config.cfg`). The file may be a bare state dict or a training
checkpoint: CM-NAS's `{'epoch', 'model', 'ema', 'optimizer'}` (`weights="model"` or `"ema"`),
torchreid's `{'state_dict', ...}`. Keys may sit under DataParallel's `module.` and follow any
layout in `frontend/layouts.py` (reidc's own, CM-NAS's TwoStreamSwitchBNOp and Baseline); a
Baseline checkpoint needs no spec (its BNs are all shared).
"""
from __future__ import annotations

import dataclasses
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from reidc.compiler.base.atomic import atomic_directory, atomic_write_json
from .arch import ArchError, ArchSpec, load_spec, read_cmnas_config
from .layouts import LAYOUTS, Layout, infer_depth, strip_wrapper_prefix, translate
from .models import CMNASResNet
from .networks import build_model
from reidc.compiler.base.errors import CheckpointError

WEIGHTS, SPEC = "model.safetensors", "arch.json"


def read_weights(path: Path, weights: str = "model") -> dict[str, torch.Tensor]:
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
    except Exception as e:  # noqa: BLE001  (a damaged pickle stream fails in many ways: KeyError, EOFError, ...)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated torch file ({type(e).__name__}: {first[:200]})") from None
    return _state_dict_of(obj, path, weights)


def _state_dict_of(obj, path: Path, weights: str) -> dict[str, torch.Tensor]:
    """The tensors of a bare state dict or of a training checkpoint (CM-NAS: 'model' / 'ema';
    torchreid: 'state_dict')."""
    if weights not in ("model", "ema"):
        raise CheckpointError(f"--weights {weights!r}: expected model or ema")
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        elif "model" in obj or "ema" in obj:
            if weights not in obj:
                raise CheckpointError(f"{path}: the training checkpoint has no {weights!r} entry "
                                      f"(it has {', '.join(map(repr, obj))})")
            if obj[weights] is None:
                raise CheckpointError(f"{path}: the training checkpoint's {weights!r} entry is empty "
                                      "(trained without EMA?); use --weights model")
            obj = obj[weights]
        else:
            keys = ", ".join(repr(k) for k in list(obj)[:6])
            raise CheckpointError(f"{path}: a dict that is neither a state dict nor a training checkpoint "
                                  f"('model'/'ema' or 'state_dict'); its keys: {keys}")
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: expected a state_dict of tensors, found {type(obj).__name__}"
                              + (" (empty)" if isinstance(obj, dict) else ""))
    bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor) or not isinstance(k, str)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: entry {bad!r} of the state dict is a {type(obj[bad]).__name__}, not a tensor")
    return obj


def _legacy_prefix_mapping(model_keys: list[str], ckpt: dict[str, torch.Tensor]) -> dict[str, str]:
    """reidc's own names under one extra prefix (e.g. `module.base_resnet.base.`): the prefix
    that explains the most keys."""
    anchor = model_keys[0]
    prefixes = {k[: len(k) - len(anchor)] for k in ckpt if k.endswith(anchor)} or {""}
    best = max(sorted(prefixes), key=lambda p: sum(p + k in ckpt for k in model_keys))
    return {k: best + k for k in model_keys if best + k in ckpt}


def match_layout(required: list[str], ckpt: dict[str, torch.Tensor]) -> tuple[Layout, dict[str, str]]:
    """The layout (frontend/layouts.py) that maps the most of `required` (reidc keys) onto the
    checkpoint's keys, and that mapping (reidc key -> checkpoint key)."""
    keys = list(ckpt)
    prefix = strip_wrapper_prefix(keys)
    best = None
    for layout in LAYOUTS:
        mapping = translate(layout, keys, prefix)
        if layout.name == "reidc" and sum(k in mapping for k in required) < len(required):
            legacy = _legacy_prefix_mapping(required, ckpt)
            if len(legacy) > sum(k in mapping for k in required):
                mapping = legacy
        score = sum(k in mapping for k in required)
        if best is None or score > best[0]:
            best = (score, layout, mapping)
    return best[1], best[2]


def load_weights_into(model: CMNASResNet, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load: every parameter and BN statistic must be present with the right shape
    (the classifier, which the compiled network does not contain, is not needed)."""
    want = model.state_dict()
    unused = tuple(f"{name}.{bn}." for name, split in model.spec.split_of().items()
                   for bn in (("sharable_bn",) if split else ("visible_bn", "thermal_bn")))
    required = [k for k in want if not k.endswith("num_batches_tracked") and not k.startswith("classifier.")
                and not k.startswith(unused)]  # a shared BN's modality BNs are never used, and vice versa
    layout, mapping = match_layout(required, weights)
    missing = [k for k in required if k not in mapping]
    if missing:
        used = {ck for rk, ck in mapping.items() if rk in want}
        stray = next((k for k in weights if k not in used and "num_batches_tracked" not in k), None)
        raise CheckpointError(
            f"{source}: weights do not fit {model.spec.name}: {len(missing)} tensors missing; closest known layout "
            f"{layout.name} ({len(required) - len(missing)} of {len(required)} tensors), first missing {missing[0]!r}"
            + (f", first key it cannot place {stray!r}" if stray else ""))
    got = {k: weights[mapping[k]] for k in required}
    for k in want:  # unused BNs and the classifier too, where they fit (the classifier is not compiled)
        if k not in got and k in mapping and tuple(weights[mapping[k]].shape) == tuple(want[k].shape):
            got[k] = weights[mapping[k]]
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise CheckpointError(f"{source}: weights do not fit {model.spec.name}: {mapping[k]!r} has shape "
                                  f"{tuple(v.shape)}, the architecture needs {tuple(want[k].shape)} for {k!r}")
        if want[k].is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{source}: tensor {mapping[k]!r} has dtype {str(v.dtype).replace('torch.', '')}; "
                                  "expected floating-point weights")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: tensor {mapping[k]!r} holds NaN or Inf")
    _check_not_blank(got, source)
    model.load_state_dict({k: v.to(want[k].dtype) for k, v in got.items()}, strict=False)


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path, what: str, hint: str,
                extra_ok=lambda key: False) -> dict[str, torch.Tensor]:
    """Load `state` (under DataParallel's `module.` or not) into `model` by its own key names,
    strictly: every tensor it needs, each of its shape, floating point and finite, and nothing
    else but BN counters and the keys `extra_ok` accepts (a classifier). A misfit is one error
    naming `what` (the network) and `hint` (the likely cause). Returns the tensors loaded."""
    want = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    prefix = strip_wrapper_prefix(list(state))
    got = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    missing = [k for k in want if k not in got]
    stray = [k for k in got if k not in want and not k.endswith("num_batches_tracked") and not extra_ok(k)]
    if missing or stray:
        lack = f"{len(missing)} of {len(want)} tensors missing, first {missing[0]!r}; " if missing else ""
        extra = f"the checkpoint holds {stray[0]!r}, which it has no place for; " if stray else ""
        raise CheckpointError(f"{source}: weights do not fit {what}: {lack}{extra}{hint}")
    for k, v in want.items():
        t = got[k]
        if tuple(t.shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: {k!r} has shape {tuple(t.shape)}; {what} needs {tuple(v.shape)}")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {k!r} has dtype {str(t.dtype).replace('torch.', '')}; expected floats")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: tensor {k!r} holds NaN or Inf")
    model.load_state_dict({k: got[k].to(v.dtype) for k, v in want.items()}, strict=False)
    return {k: got[k] for k in want}


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
                 depth: int | None = None, weights: dict[str, torch.Tensor] | None = None) -> ArchSpec:
    if arch is not None:
        return load_spec(arch)
    if split_config is not None:
        split = read_cmnas_config(split_config)
        from .arch import DEPTHS, bn_names
        depths = [d for d in DEPTHS if len(bn_names(d)) == len(split)]
        if not depths:
            raise ArchError(f"{split_config}: {len(split)} entries fit no supported ResNet")
        if depth is None and weights is not None and len(depths) > 1:
            depth = _depth_of(weights)
        return ArchSpec(depth=depth or depths[-1], split=split)
    if path.is_dir():
        return load_spec(path / SPEC)
    if weights is not None:  # CM-NAS's Baseline: plain BNs, so the all-shared network
        from .arch import bn_names
        for layout in LAYOUTS:
            if layout.all_shared:
                mapped = translate(layout, list(weights), strip_wrapper_prefix(list(weights)))
                d = infer_depth(mapped)
                if d and any(k.endswith("sharable_bn.weight") for k in mapped) and \
                        not any(k.endswith(("visible_bn.weight", "thermal_bn.weight")) for k in mapped):
                    return ArchSpec(depth=d, split=(1,) * len(bn_names(d)))
    raise ArchError(f"{path}: no architecture spec: pass a checkpoint directory with {SPEC}, or --arch SPEC.json, "
                    "--split-config config.cfg (CM-NAS), --fastreid-config config.yaml (fast-reid) or "
                    "--torchreid-arch NAME (torchreid)")


def _depth_of(weights: dict[str, torch.Tensor]) -> int | None:
    keys = list(weights)
    prefix = strip_wrapper_prefix(keys)
    return next((d for layout in LAYOUTS for d in [infer_depth(translate(layout, keys, prefix))] if d), None)


def load_checkpoint(path: str | Path, arch=None, split_config=None, depth=None, weights: str = "model",
                    feature: str | None = None, input_size: tuple[int, int] | None = None) -> CMNASResNet:
    """Build the model described by the checkpoint and load its weights (eval mode).
    `weights`: which weights of a training checkpoint ("model" or CM-NAS's "ema");
    `feature` ("bnneck" or "pool") and `input_size` (H, W) override the spec's."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    wpath = path / WEIGHTS if path.is_dir() else path
    if path.is_dir() and arch is None and split_config is None:
        spec = resolve_spec(path)  # a malformed spec is reported before the weights are read
        state = read_weights(wpath, weights)
    else:
        state = read_weights(wpath, weights)
        spec = resolve_spec(path, arch, split_config, depth, state)
    if feature is not None or input_size is not None:
        spec = dataclasses.replace(spec, feature=feature or spec.feature,
                                   input_size=tuple(input_size or spec.input_size))
    model = build_model(spec)
    load_weights_into(model, state, wpath)
    return model.eval()


def save_checkpoint(model: CMNASResNet, out_dir: str | Path, inputs=()) -> Path:
    """Write `out_dir/{model.safetensors,arch.json}` atomically (temp dir, then rename); an
    existing `out_dir` is replaced only if it is a reidc checkpoint (compiler.base.atomic's rules)."""
    with atomic_directory(out_dir, "checkpoint", inputs) as tmp:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "reidc", "model": model.spec.name})
        atomic_write_json(tmp / SPEC, model.spec.to_json())
    return Path(out_dir)
