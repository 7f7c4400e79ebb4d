"""fast-reid training runs for tests, written by fast-reid's own code: its `build_model` for
the config values, random parameters with non-trivial BN, IN and GeM values, saved by its
`Checkpointer` with the optimizer and LR schedulers a training run has, and its config dumped
as `config.yaml` beside the checkpoint."""
from __future__ import annotations

import numpy as np
import torch
from fastreid.config import get_cfg
from fastreid.modeling.meta_arch import build_model
from fastreid.solver import build_lr_scheduler, build_optimizer
from fastreid.utils.checkpoint import Checkpointer

SIZE = (64, 32)
OSNET_DIMS = {"x1_0": 512, "x0_75": 384, "x0_5": 256, "x0_25": 128}


def fastreid_run(folder, depth="50x", ibn=False, se=False, pool="GlobalAvgPool", bnneck=True, emb=0,
                 last_stride=1, size=SIZE, seed=0, nl=False, backbone="resnet"):
    """fast-reid's Baseline for these config values, with random parameters, saved as a training
    run leaves it (folder/model_final.pth + folder/config.yaml); returns (model, cfg)."""
    cfg = get_cfg()
    b, h = cfg.MODEL.BACKBONE, cfg.MODEL.HEADS
    b.DEPTH, b.PRETRAIN, b.WITH_IBN, b.WITH_SE, b.WITH_NL, b.LAST_STRIDE = depth, False, ibn, se, nl, last_stride
    b.NAME = f"build_{backbone}_backbone"
    b.FEAT_DIM = {"osnet": OSNET_DIMS.get(depth), "mobilenetv2": 1280}.get(
        backbone, 512 if depth in ("18x", "34x") else 2048)
    h.POOL_LAYER, h.WITH_BNNECK, h.EMBEDDING_DIM, h.NUM_CLASSES = pool, bnneck, emb, 7
    cfg.MODEL.DEVICE, cfg.INPUT.SIZE_TEST = "cpu", list(size)
    torch.manual_seed(seed)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)) and mod.affine:
                c = mod.num_features
                mod.weight.copy_(torch.rand(c, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(c, generator=g) * 0.1)
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        for name, p in model.named_parameters():
            # fast-reid zero-initialises a non-local block's output BN, and trained ones stay small;
            # at full random scale the block's rank-one product dominates and the network is so
            # ill-conditioned that PyTorch's own fp32 differs from float64 by 2e-5
            if ".NL_" in name and ".W.1." in name:
                p.mul_(0.05)
        if pool == "GeneralizedMeanPoolingP":
            model.heads.pool_layer.p.fill_(2.5)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    optimizer = build_optimizer(cfg, model)
    optimizer = optimizer[0] if isinstance(optimizer, tuple) else optimizer
    Checkpointer(model, str(folder), optimizer=optimizer, **build_lr_scheduler(cfg, optimizer, 10)).save(
        "model_final", epoch=59)
    (folder / "config.yaml").write_text(cfg.dump())
    return model, cfg


def fastreid_features(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():  # Baseline normalises its input in place: give it a copy
        return model(torch.from_numpy(x.copy())).numpy()


def images(n=3, size=SIZE, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (n, 3) + tuple(size)).astype(np.float32)
