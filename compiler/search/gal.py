"""BiRe-ID's training of binarized networks: KR-GAL and FR-GAL (Xu et al., "BiRe-ID: Binary
Neural Network for Efficient Person Re-ID", ACM TOMM 2022, Sec. 3; its formulas as the authors'
book "Binary Neural Networks: Algorithms, Architectures, and Applications", CRC 2023, Sec. 6.2,
gives them). No code was released; the choices below that the text leaves open are marked.

KR-GAL (kernel refining): every binarized conv (weight w, per-output-channel scale alpha; the
network runs alpha o sign(w)) gets a discriminator D_K that tells a real filter w_j from its
reconstruction alpha_j sign(w_j). The network minimises

    L_K = log D_K(w) + log(1 - D_K(alpha o sign(w))) + lambda/2 ||w - alpha o sign(w)||^2

and D_K maximises the adversarial part (the paper's saturating form; the gradient reaches w
through both terms, as its algorithm states). alpha then has a gradient: in these networks a
training-mode BN follows every binarized conv and cancels any per-channel scale, so the
recognition loss moves alpha only through the BN's eps (tests/test_gal.py: doubling every alpha
moves it by under 1e-6 relative).
Open in the text, chosen here: D_K reads one output filter at a time (its cin x k x k values,
flattened), two FC + LeakyReLU(0.2) blocks of 64 and a sigmoid; the squared error is a mean
over elements (the text's sum makes lambda depend on the layer's size); alpha starts at the
reconstruction's optimum for the initial w, mean |w_j| (XNOR-Net's), not at 1.

FR-GAL (feature refining): the last stage's output a_H supervises the output a_L of each earlier
binarized stage: a*_H = nearest-resize(Conv1x1(a_H)), with no gradient into a_H (the text), and
a discriminator D_F tells a*_H ("real") from a_L:

    L_F = log D_F(a*_H) + log(1 - D_F(a_L)) + mu/2 ||a_L - a*_H||^2

Open in the text, chosen here: D_F reads the channel vector at each position (the same
FC-LeakyReLU form); the 1x1 conv learns by the squared error (its own optimizer); the squared
error is a mean.

Training (`Gal.loss`): each batch the discriminators take one ascent step on the detached
tensors, then the network's loss gains sum L_K + sum L_F, summed over layers as the paper's
total is. The compiled network is unchanged in form: alpha folds into the following BN as before.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reidc.frontend.bire import BinaryConv2d, binarize

KINDS = ("kr", "fr")


def parse_gal(text: str | None) -> tuple[str, ...]:
    """"kr,fr" -> ("kr", "fr"); "" / "none" / None -> ()."""
    if not text or text == "none":
        return ()
    kinds = tuple(k.strip() for k in text.split(","))
    bad = [k for k in kinds if k not in KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise ValueError(f"--gal {text!r}: expected none or a comma list of kr (KR-GAL) and fr (FR-GAL)")
    return tuple(k for k in KINDS if k in kinds)


@dataclass(frozen=True)
class GalConfig:
    kinds: tuple[str, ...] = KINDS
    kernel_weight: float = 1.0     # lambda (a mean squared error: see the module doc)
    feature_weight: float = 0.1    # mu
    adversarial_weight: float = 1.0
    lr: float = 1e-4               # the discriminators' and the 1x1 convs' Adam


def _disc(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                         nn.Linear(64, 1))


def _log_d(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(d(x)).mean()


def _log_1m_d(d: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.logsigmoid(-d(x)).mean()


def _runs_binary(conv: BinaryConv2d) -> bool:
    return getattr(conv, "binary", True)    # a supernet's SharedConv may run real this step


def kernel_pair(conv: BinaryConv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(real filters, reconstructed filters), one row per output channel."""
    w = conv.weight
    return w.flatten(1), (binarize(w) * conv.alpha.view(-1, 1, 1, 1)).flatten(1)


def refine_target(conv1x1: nn.Module, high: torch.Tensor, size) -> torch.Tensor:
    """a*_H: the high-level feature through a 1x1 conv, nearest-resized; no gradient into `high`."""
    return F.interpolate(conv1x1(high.detach()), size=tuple(size), mode="nearest")


def positions(a: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N*H*W, C): the channel vector at every position."""
    return a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])


class Gal(nn.Module):
    """KR-GAL and FR-GAL for one network (module doc): its discriminators, 1x1 convs and
    optimizer, and the hooks that catch the stages' outputs."""

    def __init__(self, net: nn.Module, cfg: GalConfig = GalConfig(), init_alpha: bool = True):
        super().__init__()
        self.cfg, self.kinds = cfg, set(cfg.kinds)
        self.convs = {n: m for n, m in net.named_modules() if isinstance(m, BinaryConv2d)}
        self.kernel_d = nn.ModuleDict()
        if "kr" in self.kinds:
            for n, m in self.convs.items():
                self.kernel_d[n.replace(".", "_")] = _disc(m.weight[0].numel())
                if init_alpha:   # not on a resumed run: its alpha is trained
                    with torch.no_grad():
                        m.alpha.copy_(m.weight.abs().mean((1, 2, 3)))
        self.stages = [getattr(net, f"layer{i}") for i in range(1, 5)]
        self.feature_d, self.adapt = nn.ModuleDict(), nn.ModuleDict()
        self.caught: list[torch.Tensor | None] = [None] * 4
        self._hooks = []
        if "fr" in self.kinds:
            widths = [list(s.children())[-1].unit2.conv.out_channels for s in self.stages]
            for i in range(3):
                self.feature_d[str(i)] = _disc(widths[i])
                self.adapt[str(i)] = nn.Conv2d(widths[3], widths[i], 1)
            for i, s in enumerate(self.stages):
                self._hooks.append(s.register_forward_hook(lambda mod, inp, out, i=i: self._catch(i, out)))
        params = list(self.parameters())
        self.opt = torch.optim.Adam(params, lr=cfg.lr, betas=(0.5, 0.999)) if params else None

    def _catch(self, i: int, out: torch.Tensor) -> None:
        self.caught[i] = out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def _refined(self) -> list[int]:
        """The earlier stages FR-GAL refines this step: those whose convs run binarized."""
        return [i for i in range(3) if self.caught[i] is not None
                and any(_runs_binary(m) for m in self.stages[i].modules() if isinstance(m, BinaryConv2d))]

    def loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """The network's GAL terms for the batch just run (its forward filled the hooks), after
        one ascent step of the discriminators (and a step of the 1x1 convs)."""
        c = self.cfg
        kr = [(self.kernel_d[k.replace(".", "_")], *kernel_pair(m)) for k, m in self.convs.items()
              if "kr" in self.kinds and _runs_binary(m)]
        fr = [(self.feature_d[str(i)], self.caught[i],
               refine_target(self.adapt[str(i)], self.caught[3], self.caught[i].shape[-2:]))
              for i in (self._refined() if "fr" in self.kinds and self.caught[3] is not None else [])]
        if self.opt is not None and (kr or fr):
            # 1. the discriminators ascend on the detached tensors; the 1x1 convs fit the low-level features
            d_loss = 0.0
            for d, real, fake in kr:
                d_loss = d_loss - (_log_d(d, real.detach()) + _log_1m_d(d, fake.detach()))
            for d, low, target in fr:
                d_loss = d_loss - (_log_d(d, positions(target.detach())) + _log_1m_d(d, positions(low.detach())))
                d_loss = d_loss + F.mse_loss(target, low.detach())
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
        # 2. the network's terms (the discriminators held: their gradients are discarded next step)
        total, parts = torch.zeros(()), {}
        if kr:
            adv = rec = 0.0
            for d, real, fake in kr:
                adv = adv + _log_d(d, real) + _log_1m_d(d, fake)
                rec = rec + F.mse_loss(real, fake)
            total = total + c.adversarial_weight * adv + c.kernel_weight / 2 * rec
            parts.update(kr_adv=float(adv.detach()), kr_mse=float(rec.detach()))
        if fr:
            adv = rec = 0.0
            for d, low, target in fr:
                target = target.detach()
                adv = adv + _log_d(d, positions(target)) + _log_1m_d(d, positions(low))
                rec = rec + F.mse_loss(low, target)
            total = total + c.adversarial_weight * adv + c.feature_weight / 2 * rec
            parts.update(fr_adv=float(adv.detach()), fr_mse=float(rec.detach()))
        self.caught = [None] * 4
        return total, parts
