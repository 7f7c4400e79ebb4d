"""The ops ReID heads use in exported programs (torch.export, as a .pt2 or a module in memory):
F.normalize, cat, clamp / ReLU6 / hardtanh, sigmoid, eval-mode dropout and global max
pooling, captured and compiled; what stays out is refused naming the op and the module."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import reidc
from reidc.compiler.base.errors import UnsupportedOpError
from reidc.compiler.ir import Op
from reidc.frontend.capture import capture_program


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.drop = torch.nn.Dropout(0.5)
        self.fc = torch.nn.Linear(32, 16)

    def forward(self, x):
        y = self.conv(x)
        z = torch.cat([F.adaptive_avg_pool2d(y, 1).flatten(1), F.adaptive_max_pool2d(y, 1).flatten(1)], dim=1)
        z = self.drop(torch.clamp(z, min=-1.0, max=3.0))
        z = F.hardtanh(F.relu6(self.fc(z)), -0.5, 4.0)
        return F.normalize(torch.sigmoid(z), dim=1)


def test_a_reid_head_captures_and_compiles(tmp_path):
    torch.manual_seed(0)
    model = Head().eval()
    x = torch.randn(3, 3, 8, 8)
    g = capture_program(torch.export.export(model, (x,)), "head")
    ops = [str(n.op) for _, n in g.items()]
    for op in (Op.CONCAT, Op.CLAMP, Op.GLOBAL_MAXPOOL, Op.SIGMOID, Op.L2_NORMALIZE):
        assert str(op) in ops
    art = reidc.compile(model, "host", output=tmp_path / "art", input_shape=(3, 8, 8))
    got = art.run(x.numpy())
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)


class NormOfMaps(torch.nn.Module):
    def forward(self, x):
        return F.normalize(x, dim=2).mean(dim=(2, 3))


class TrainingDropout(torch.nn.Module):
    def forward(self, x):
        return F.dropout(F.adaptive_avg_pool2d(x, 1).flatten(1), 0.5, training=True)


class CatOfMaps(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x, x], dim=1).mean(dim=(2, 3))


@pytest.mark.parametrize("model, message", [
    (NormOfMaps(), r"linalg_vector_norm at .*\(N, C\) features"),
    (TrainingDropout(), "dropout in training mode"),
    (CatOfMaps(), r"unsupported op cat at .*\(N, C\) features"),
])
def test_head_ops_reidc_does_not_take_are_named(model, message):
    with pytest.raises(UnsupportedOpError, match=message):
        capture_program(torch.export.export(model.eval(), (torch.randn(2, 3, 8, 8),)), "m")


class Gates(torch.nn.Module):
    """The activations of mobile backbones and hard channel gates, as modules and as functions."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.mul_(8)   # values well past every saturation point
        self.acts = torch.nn.Sequential(torch.nn.ReLU6(), torch.nn.Hardtanh(-2.0, 2.5), torch.nn.Hardswish())
        self.gate = torch.nn.Hardsigmoid()

    def forward(self, x):
        y = self.conv(x)
        p, q = F.adaptive_avg_pool2d(self.acts(y), 1).flatten(1), F.adaptive_max_pool2d(y, 1).flatten(1)
        return self.gate(q) + F.hardsigmoid(p) + F.hardswish(q) + torch.sigmoid(q) + F.relu6(q)


@pytest.mark.parametrize("exported", [False, True], ids=["module", "pt2"])
def test_hard_gates_and_clamps_capture_from_modules_and_programs(tmp_path, exported):
    torch.manual_seed(0)
    model = Gates().eval()
    x = torch.randn(2, 3, 8, 8)
    src = torch.export.export(model, (x,)) if exported else model
    if exported:
        torch.export.save(src, tmp_path / "gates.pt2")
        src = tmp_path / "gates.pt2"
    art = reidc.compile(src, "host", output=tmp_path / "art", input_shape=None if exported else (3, 8, 8))
    want = model(x).detach().numpy()
    assert np.abs(art.run(x.numpy()) - want).max() < 1e-5 * max(1.0, np.abs(want).max())
