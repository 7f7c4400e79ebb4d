"""CM-NAS's differentiable search (compiler/search/differentiable.py): the supernet's relaxation
computes the candidate it selects at one-hot weights and the mixture in between, the expected
cost is exact where the cost adds up, the latency term moves the architecture only when it is
weighted. `reidc search --method differentiable` end to end: tests/test_search.py (it reuses that
file's supernet and latency cache)."""
import random
from dataclasses import replace

import pytest
import torch

from reidc.compiler.datasets import load_dataset
from reidc.compiler.search.differentiable import (DiffConfig, LinearCost, argmax_spec, differentiable_search,
                                                  one_hot)
from reidc.compiler.search.train import TrainConfig
from reidc.frontend.arch import bn_names
from reidc.frontend.models import SwitchableBN
from reidc.frontend.supernet import build_supernet, clear_mixture, random_arch, set_arch, set_mixture, stage_index

NAMES = bn_names(18, "bire")


def test_one_hot_mixture_computes_the_candidate_it_selects():
    net = build_supernet((64, 32), num_classes=10).eval()
    x = torch.randn(4, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    m = torch.tensor([0, 1, 0, 1])
    for seed in range(2):
        spec = random_arch(random.Random(seed), (64, 32), 10)
        with torch.no_grad():
            want = set_arch(net, spec)(x, m)
            set_arch(net, replace(spec, split=tuple(1 - s for s in spec.split),
                                  binary_stages=tuple(not b for b in spec.binary_stages)))  # the mixture must override it
            got = set_mixture(net, *(p.float() for p in one_hot(spec)))(x, m)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        clear_mixture(net)
    assert all(mod.mix is None for mod in net.modules() if hasattr(mod, "mix"))


def test_a_mixed_bn_is_the_weighted_sum_of_its_two_forms():
    bn = SwitchableBN(3, split=True).train()
    x, m = torch.randn(6, 3, 2, 2), torch.tensor([0, 0, 0, 1, 1, 1])
    with torch.no_grad():
        split = bn(x, m)
        bn.split = False
        shared = bn(x, m)
        bn.mix = torch.tensor([0.3, 0.7])
        torch.testing.assert_close(bn(x, m), 0.3 * split + 0.7 * shared)


def test_set_mixture_names_a_wrong_shape():
    net = build_supernet((64, 32), num_classes=10)
    with pytest.raises(ValueError, match=r"expected \(36, 2\) BN and \(4, 2\) stage probabilities, got \(35, 2\)"):
        set_mixture(net, torch.ones(35, 2), torch.ones(4, 2))


def _additive_cost(spec):
    """Stage costs with a cliff (binarizing all four is cheaper than the per-stage sum) and a
    split cost that depends on whether the BN's stage is binarized: the linear model is exact."""
    c = {"0000": 10.0}.get("".join("1" if b else "0" for b in spec.binary_stages))
    c = c if c is not None else sum(1.0 if b else 2.5 for b in spec.binary_stages) - (0.7 if all(spec.binary_stages) else 0)
    for i, n in enumerate(NAMES):
        if spec.split[i] == 0:
            c += (0.01 if spec.binary_stages[stage_index(n)] else 0.1) * (i + 1)
    return c


def test_expected_cost_is_exact_at_one_hot_points_and_linear_in_between():
    template = random_arch(random.Random(0), (64, 32), 10)
    calls = []
    lin = LinearCost.build(template, lambda s: calls.append(s) or _additive_cost(s))
    assert len(calls) == 16 + 2 * len(NAMES)
    rng = random.Random(5)
    for _ in range(20):
        spec = random_arch(rng, (64, 32), 10)
        assert lin.of(spec) == pytest.approx(_additive_cost(spec), abs=1e-9)
    # at uniform probabilities: the mean over the 16 patterns plus half of each split's mean cost
    bn, st = torch.full((len(NAMES), 2), 0.5, dtype=torch.float64), torch.full((4, 2), 0.5, dtype=torch.float64)
    want = sum(lin.patterns.values()) / 16 + 0.5 * sum(0.5 * (a + b) for a, b in zip(lin.split_binary, lin.split_real))
    assert float(lin.expected(bn, st)) == pytest.approx(want)
    # its gradient: splitting BN i costs what the cost says, binarizing stage 4 saves
    bn.requires_grad_(True)
    st.requires_grad_(True)
    lin.expected(bn, st).backward()
    assert float(bn.grad[3, 0]) == pytest.approx(0.5 * (0.01 + 0.1) * 4) and float(st.grad[3, 1]) < 0


def test_argmax_ties_go_to_shared_and_real():
    template = random_arch(random.Random(0), (64, 32), 10)
    spec = argmax_spec(template, torch.zeros(len(NAMES), 2), torch.zeros(4, 2))
    assert spec.split == (1,) * len(NAMES) and spec.binary_stages == (False,) * 4


@pytest.fixture(scope="module")
def tiny():
    data = load_dataset("synthetic:12", (64, 32), seed=3, hold_out_val=True)
    template = random_arch(random.Random(0), data.input_size, data.train.num_ids)
    torch.manual_seed(0)
    return data, template, build_supernet(data.input_size, data.train.num_ids)


def test_the_latency_term_moves_the_architecture_only_when_weighted(tiny):
    data, template, net = tiny
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = TrainConfig(steps=1, ids_per_batch=4)
    cheap_binary = LinearCost.build(template, _additive_cost)
    dear_binary = LinearCost.build(template, lambda s: 300 - 10 * _additive_cost(s))
    runs = {}
    for name, lat, w in (("cheap", cheap_binary, 0.0), ("dear", dear_binary, 0.0), ("weighted", cheap_binary, 50.0),
                         ("weighted-dear", dear_binary, 50.0)):
        runs[name] = differentiable_search(net, data, cfg, template, DiffConfig(steps=3, snapshots=3, latency_weight=w),
                                           lat)
    # unweighted, the expected latency is only reported: two opposite costs give the same search
    assert runs["cheap"].probabilities == runs["dear"].probabilities
    assert runs["cheap"].log[-1]["expected_ms"] != runs["dear"].log[-1]["expected_ms"]
    # weighted heavily, the search goes to the cheapest point of the cost, whichever it is
    w, wd = runs["weighted"], runs["weighted-dear"]
    assert w.arch.binary_stages == (True,) * 4 and w.arch.split == (1,) * len(NAMES)
    assert wd.arch.binary_stages == (False,) * 4 and wd.arch.split == (0,) * len(NAMES)
    assert [s for s, _ in w.trajectory] == [1, 2, 3] and w.steps == 3
    # the search trains a copy: the supernet is as it was
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.mix is None for m in net.modules() if hasattr(m, "mix"))
