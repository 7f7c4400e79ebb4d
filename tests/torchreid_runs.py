"""torchreid checkpoints for tests, written by torchreid's own code (torchreid 0.2.5, installed
--no-deps by the set-up). `import torchreid` reaches torchvision and OpenCV, which the set-up
does not install, so its model files (which import only torch) and its checkpoint tools are
loaded file by file; nothing of it is copied here."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(importlib.util.find_spec("torchreid").submodule_search_locations[0]) / "reid"


def _load(rel: str, name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def torchreid_models():
    """{architecture name: torchreid's builder} for the ones reidc supports."""
    osnet, resnet = _load("models/osnet.py", "trd_osnet"), _load("models/resnet.py", "trd_resnet")
    ain, mobile = _load("models/osnet_ain.py", "trd_osnet_ain"), _load("models/mobilenetv2.py", "trd_mobilenetv2")
    return {**{k: getattr(m, k) for m in (osnet, ain, mobile) for k in m.__all__}, "resnet50": resnet.resnet50,
            "resnet50_fc512": resnet.resnet50_fc512}


def save_checkpoint(state: dict, save_dir: Path) -> Path:
    """torchreid.reid.utils.torchtools.save_checkpoint, its package imports stubbed for the call."""
    names = ("torchreid", "torchreid.reid", "torchreid.reid.utils", "torchreid.reid.utils.tools")
    saved = {n: sys.modules.get(n) for n in names}
    try:
        for n in names[:3]:
            sys.modules[n] = types.ModuleType(n)
        sys.modules[names[3]] = _load("utils/tools.py", names[3])
        tools = _load("utils/torchtools.py", "trd_torchtools")
        tools.save_checkpoint(state, str(save_dir))
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return save_dir / f"model.pth.tar-{state['epoch']}"


def torchreid_run(folder: Path, arch: str, seed: int = 0, data_parallel: bool = False):
    """torchreid's `arch` with random parameters and non-trivial BN/IN statistics, saved as its
    engine saves a training epoch (state_dict, epoch, rank1, optimizer, scheduler); returns
    (model in eval mode, checkpoint path)."""
    torch.manual_seed(seed)
    model = torchreid_models()[arch](num_classes=11, loss="softmax", pretrained=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) and mod.affine:
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
                if mod.track_running_stats:
                    mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    model.eval()
    wrapped = torch.nn.DataParallel(model) if data_parallel else model
    opt = torch.optim.Adam(wrapped.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[20, 40])
    path = save_checkpoint({"state_dict": wrapped.state_dict(), "epoch": 60, "rank1": 0.42,
                            "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, folder)
    return model, path


def features(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()
