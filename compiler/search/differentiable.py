"""CM-NAS's search method (`reidc search --method differentiable`): every choice relaxed to a
continuous weight and searched by gradient.

CM-NAS (Fu et al., ICCV 2021, Sec. 3) gives each BN an architecture weight over {split,
shared}; its search code was never released, so this follows the paper and DARTS (first order),
which it builds on. reidc's space also holds BiRe-ID's per-stage choice {real, binarized}:

- logits a_i (2 per switchable BN, split-vector order: split, shared) and b_s (2 per stage:
  real, binarized); softmax gives the probabilities;
- the supernet computes the mixture of every choice (frontend/supernet.py: set_mixture);
- alternating steps: the supernet's weights on a training batch with the search's objective,
  then the architecture on a batch of the validation identities with the objective's metric
  terms (the classifier knows no validation identity), plus, latency-aware, the expected
  latency (and weight memory) of the relaxed network (ProxylessNAS / FBNet);
- at the end each choice is its argmax.

The weights trained here are a copy: the search scores, fine-tunes and compiles the argmax from
the one-shot supernet, as it does the evolution's pick, so the two methods differ only in how
they choose.

Expected cost, linear in the probabilities (`LinearCost`, pure maths), from the predictor:

    E = sum_patterns P(pattern) C(pattern) + sum_i p_split(i) [q(i) D_bin(i) + (1 - q(i)) D_real(i)]

P(pattern) is the product over stages of q(s) or 1 - q(s), q(s) the probability that stage s is
binarized, q(i) that of BN i's stage (the stem's: stage 1's); C(pattern) the cost of the stage
pattern with every BN shared; D_bin(i) and D_real(i) the cost of splitting BN i alone in the
all-binarized and in the all-real network: 16 + 2 x 36 predictions for BiRe-ResNet-18's 36
BNs. At a one-hot point it is exact for the patterns and assumes that splits add up;
`LinearCost.of` says what it gives for the argmax, which the search sets beside the
predictor's own figure.
"""
from __future__ import annotations

import copy
import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from reidc.frontend.arch import ArchSpec, bn_names
from reidc.frontend.supernet import clear_mixture, set_mixture, stage_index

from reidc.compiler.datasets import ReIDData
from .losses import cmnas_loss
from .train import TrainConfig, sample_batch

PATTERNS = ["".join(p) for p in itertools.product("01", repeat=4)]
VAL_OFFSET = 20_000_000     # validation batches' step numbers (sample_batch's seeds): none of training's
TRAIN_OFFSET = 30_000_000   # the search's weight steps: none of the supernet's or the recalibration's


@dataclass(frozen=True)
class LinearCost:
    """A cost (ms, bytes) of the relaxed network, linear in each choice's probability."""
    patterns: dict[str, float]          # stage pattern ("0101": stages 2 and 4 binarized) -> cost, all BNs shared
    split_binary: tuple[float, ...]     # per BN: the cost of splitting it alone, all-binarized network
    split_real: tuple[float, ...]       # the same in the all-real network
    stages: tuple[int, ...]             # per BN: its stage

    @staticmethod
    def terms(n_bn: int) -> int:
        """Costs `build` asks for: every stage pattern, and each BN split alone in two of them."""
        return len(PATTERNS) + 2 * n_bn

    @classmethod
    def build(cls, template: ArchSpec, cost: Callable[[ArchSpec], float],
              progress: Callable[[str], None] = lambda s: None, what: str = "latency") -> "LinearCost":
        names = bn_names(template.depth, template.family)
        shared = replace(template, split=(1,) * len(names))
        progress(f"differentiable search: the expected {what}'s terms ({len(PATTERNS)} stage patterns, "
                 f"{len(names)} BNs split alone in 2 of them)")

        def at(p: str, split_bn: int | None = None) -> float:
            split = tuple(0 if i == split_bn else 1 for i in range(len(names)))
            return float(cost(replace(shared, split=split, binary_stages=tuple(c == "1" for c in p))))

        patterns = {p: at(p) for p in PATTERNS}
        return cls(patterns=patterns,
                   split_binary=tuple(at("1111", i) - patterns["1111"] for i in range(len(names))),
                   split_real=tuple(at("0000", i) - patterns["0000"] for i in range(len(names))),
                   stages=tuple(stage_index(n) for n in names))

    def expected(self, bn_probs: torch.Tensor, stage_probs: torch.Tensor) -> torch.Tensor:
        """E[cost] (differentiable) at bn_probs (n, 2: split, shared), stage_probs (4, 2: real, binarized)."""
        q = stage_probs[:, 1]
        e = bn_probs.new_zeros(())
        for p, c in self.patterns.items():
            e = e + c * math.prod(q[s] if ch == "1" else 1 - q[s] for s, ch in enumerate(p))
        qi = q[list(self.stages)]
        d_bin, d_real = bn_probs.new_tensor(self.split_binary), bn_probs.new_tensor(self.split_real)
        return e + (bn_probs[:, 0] * (qi * d_bin + (1 - qi) * d_real)).sum()

    def of(self, spec: ArchSpec) -> float:
        """The linear cost of one candidate (its one-hot point)."""
        bn, st = one_hot(spec)
        return float(self.expected(bn, st))

    def to_json(self) -> dict:
        return {"patterns": self.patterns, "split_binary": list(self.split_binary), "split_real": list(self.split_real)}


def one_hot(spec: ArchSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(bn_probs, stage_probs) selecting `spec`."""
    bn = torch.nn.functional.one_hot(torch.tensor(spec.split), 2).double()
    st = torch.nn.functional.one_hot(torch.tensor([int(b) for b in spec.binary_stages]), 2).double()
    return bn, st


def argmax_spec(template: ArchSpec, a_bn: torch.Tensor, a_stage: torch.Tensor) -> ArchSpec:
    """The candidate of each choice's larger weight (ties: shared, real)."""
    a_bn, a_stage = a_bn.detach(), a_stage.detach()
    return replace(template, split=tuple(0 if float(r[0]) > float(r[1]) else 1 for r in a_bn),
                   binary_stages=tuple(float(r[1]) > float(r[0]) for r in a_stage))


@dataclass(frozen=True)
class DiffConfig:
    steps: int = 150              # alternating (weight, architecture) steps
    arch_lr: float = 0.05         # Adam on the architecture logits (DARTS: betas 0.5, 0.999; weight decay 1e-3)
    weight_lr: float = 1e-4       # Adam on the supernet copy's weights (it starts trained)
    latency_weight: float = 0.0   # lambda: 0 searches by accuracy alone
    budget_ms: float | None = None    # with a budget, latency costs only above it: lambda x max(0, E / budget - 1)
    memory_weight: float = 0.0    # mu x E[weight bytes] / the all-real network's
    snapshots: int = 8            # argmax candidates recorded along the way (scored beside the final one)


@dataclass
class DiffResult:
    arch: ArchSpec                                      # the final argmax
    trajectory: list[tuple[int, ArchSpec]]              # (step, argmax) every steps / snapshots
    log: list[dict] = field(default_factory=list)       # per snapshot: step, val loss, E[ms], probabilities' extremes
    probabilities: dict = field(default_factory=dict)   # final: per BN p(split), per stage p(binarized)
    steps: int = 0
    seconds: float = 0.0

    def to_json(self, key: Callable[[ArchSpec], str]) -> dict:
        return {"arch": key(self.arch), "steps": self.steps, "seconds": round(self.seconds, 1), "log": self.log,
                "trajectory": [{"step": s, "arch": key(a)} for s, a in self.trajectory],
                "probabilities": self.probabilities}


def _forward_loss(net, batch, objective: str, classify: bool):
    x, y, m = batch
    feat = net.backbone(x, m)
    neck = net.bottleneck(feat)
    return cmnas_loss(feat, neck, net.classifier(neck) if classify else None, y, m, objective)


def differentiable_search(supernet, data: ReIDData, cfg: TrainConfig, template: ArchSpec, dc: DiffConfig,
                          latency: LinearCost | None = None, memory: LinearCost | None = None,
                          deadline: float | None = None, progress: Callable[[str], None] = lambda s: None
                          ) -> DiffResult:
    """Search `supernet`'s space by gradient (module doc); the supernet is left as it was.
    Stops at dc.steps or the deadline (time.time()), whichever is first."""
    if dc.latency_weight and latency is None:
        raise ValueError("a latency weight needs the expected latency's terms (LinearCost)")
    if dc.memory_weight and memory is None:
        raise ValueError("a memory weight needs the expected weight memory's terms (LinearCost)")
    t0 = time.time()
    n_bn = len(template.split)
    net = copy.deepcopy(supernet).train()
    val = replace(data, train=data.val.pool)     # sample_batch draws P identities x K per modality from .train
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        a_bn = torch.zeros(n_bn, 2, requires_grad=True)
        a_st = torch.zeros(4, 2, requires_grad=True)
    weights = [p for p in net.parameters() if p.requires_grad]
    w_opt = torch.optim.Adam(weights, lr=dc.weight_lr, weight_decay=cfg.weight_decay)
    a_opt = torch.optim.Adam([a_bn, a_st], lr=dc.arch_lr, betas=(0.5, 0.999), weight_decay=1e-3)
    l_ref = latency.patterns["0000"] if latency is not None else 1.0
    m_ref = memory.patterns["0000"] if memory is not None else 1.0
    every = max(1, dc.steps // max(1, dc.snapshots))
    res = DiffResult(arch=argmax_spec(template, a_bn, a_st), trajectory=[])
    window: dict[str, float] = {}
    soft = lambda: (torch.softmax(a_bn, 1), torch.softmax(a_st, 1))  # noqa: E731
    try:
        for step in range(dc.steps):
            if deadline is not None and time.time() > deadline:
                progress(f"time limit: the differentiable search stops at step {step} of {dc.steps}")
                break
            # 1. the weights, on a training batch, at the current (fixed) relaxation
            pb, ps = (p.detach() for p in soft())
            set_mixture(net, pb, ps)
            loss, _ = _forward_loss(net, sample_batch(data, cfg, TRAIN_OFFSET + step), cfg.objective, True)
            w_opt.zero_grad(set_to_none=True)
            loss.backward()
            w_opt.step()
            # 2. the architecture, on a validation batch (weights held)
            pb, ps = soft()
            set_mixture(net, pb, ps)
            for p in weights:
                p.requires_grad_(False)
            try:
                vloss, _ = _forward_loss(net, sample_batch(val, cfg, VAL_OFFSET + step), cfg.objective, False)
            finally:
                for p in weights:
                    p.requires_grad_(True)
            total, terms = vloss, {"val_loss": float(vloss.detach())}
            if latency is not None:
                e_ms = latency.expected(pb.double(), ps.double()).float()
                terms["expected_ms"] = float(e_ms.detach())
                if dc.latency_weight:
                    total = total + dc.latency_weight * (torch.relu(e_ms / dc.budget_ms - 1) if dc.budget_ms
                                                         else e_ms / l_ref)
            if memory is not None:
                e_b = memory.expected(pb.double(), ps.double()).float()
                terms["expected_mb"] = float(e_b.detach()) / 2**20
                total = total + dc.memory_weight * e_b / m_ref
            a_opt.zero_grad(set_to_none=True)
            total.backward()
            a_opt.step()
            for k, v in terms.items():
                window[k] = 0.9 * window.get(k, v) + 0.1 * v
            res.steps = done = step + 1
            if done % every == 0 or done == dc.steps:
                spec = argmax_spec(template, a_bn, a_st)
                res.trajectory.append((done, spec))
                ps = torch.softmax(a_st.detach(), 1)
                res.log.append({"step": done, **{k: round(v, 4) for k, v in window.items()},
                                "split_bns": spec.split.count(0),
                                "binary_stages": "".join("1" if b else "0" for b in spec.binary_stages),
                                "p_binarized": [round(float(v), 3) for v in ps[:, 1]]})
                progress(f"differentiable step {done}/{dc.steps}: " + ", ".join(f"{k} {v:.3f}" for k, v in window.items())
                         + f"; argmax: binary stages {res.log[-1]['binary_stages']}, {spec.split.count(0)} split BNs")
    finally:
        clear_mixture(net)
    res.arch = argmax_spec(template, a_bn, a_st)
    pb, ps = (torch.softmax(a.detach(), 1) for a in (a_bn, a_st))
    res.probabilities = {"split": [round(float(v), 4) for v in pb[:, 0]],
                         "binarized": [round(float(v), 4) for v in ps[:, 1]]}
    res.seconds = time.time() - t0
    return res
