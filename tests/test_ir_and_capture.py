import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from reidc.compiler.ir import Graph, IRError, Node, Op, dump, verify
from reidc.frontend.capture import CaptureError, capture_exported, capture_module
from ir_interp import run_ir


def test_nodes_are_immutable():
    n = Node(Op.RELU, ("x",), ("N", 4, 2, 2), attrs={"w": np.ones(3, np.float32)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        n.op = Op.ADD
    with pytest.raises(ValueError):
        n.attrs["w"][0] = 2.0
    with pytest.raises(TypeError):
        n.attrs["new"] = 1


def test_verifier_names_the_bad_node():
    g = Graph("t")
    g.add("x", Node(Op.INPUT, (), ("N", 3, 8, 8), attrs={"name": "x"}))
    g.add("c", Node(Op.CONV2D, ("x",), ("N", 4, 8, 8), attrs={
        "weight": np.zeros((4, 3, 3, 3), np.float32), "stride": (1, 1), "padding": (0, 0)}, source="layer.conv"))
    g.outputs = ["c"]
    with pytest.raises(IRError, match=r"'c' \[conv2d\] \(layer.conv\): shape"):
        verify(g)


def test_capture_module_has_one_bn_node_per_switchable_bn(small_r18):
    m = small_r18["random:7"]
    g = capture_module(m, (3, 64, 32))
    bns = [n for _, n in g.items() if n.op == Op.BATCH_NORM]
    assert len(bns) == 21  # 20 switchable + BNNeck
    assert sum(n.modality == "split" for n in bns) == m.spec.split.count(0)
    text = dump(g)
    assert "batch_norm @split(%conv1, %modality)" in text or m.spec.split[0] == 1
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 32), dtype=np.float32)
    mod = np.array([0, 1, 1], np.int32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x), torch.from_numpy(mod)).numpy()
    np.testing.assert_allclose(run_ir(g, x, mod), ref, rtol=1e-5, atol=1e-5)


class _Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.GELU()

    def forward(self, x, m=None):
        return self.act(self.conv(x))


def test_unsupported_op_names_op_and_module_path(tmp_path):
    with pytest.raises(CaptureError, match="unsupported op GELU at module act"):
        capture_module(_Odd(), (3, 8, 8))
    ep = torch.export.export(_Odd().eval(), (torch.randn(1, 3, 8, 8),))
    torch.export.save(ep, tmp_path / "odd.pt2")
    with pytest.raises(CaptureError, match=r"unsupported op aten\.gelu\.default at act"):
        capture_exported(tmp_path / "odd.pt2")


class _Plain(nn.Module):
    """A user's own ReID-ish net, outside the zoo: conv-bn-relu, residual, pool, BN neck, linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, 1, 1, bias=True)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.neck = nn.BatchNorm1d(16)
        self.fc = nn.Linear(16, 10)
        for b in (self.bn, self.neck):
            b.running_mean.uniform_(-0.5, 0.5)
            b.running_var.uniform_(0.5, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        y = self.pool(torch.relu(self.conv2(y) + y))
        return self.fc(self.neck(y.mean(dim=(2, 3))))


def test_capture_exported_program_matches_pytorch(tmp_path):
    m = _Plain().eval()
    x = torch.randn(2, 3, 32, 32)
    torch.export.save(torch.export.export(m, (x,)), tmp_path / "plain.pt2")
    g = capture_exported(tmp_path / "plain.pt2")
    assert [g[i].op for i in g.outputs] == [Op.DENSE]
    with torch.no_grad():
        np.testing.assert_allclose(run_ir(g, x.numpy()), m(x).numpy(), rtol=1e-5, atol=1e-5)
