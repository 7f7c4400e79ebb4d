"""BiRe-ID's KR-GAL and FR-GAL (compiler/search/gal.py): what each term reaches and what it
leaves alone, where they fire, and that a network trained with them compiles and verifies as
before (alpha folds into the BN after the binary conv)."""
import json
import random

import pytest
import torch
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.datasets import load_dataset
from reidc.compiler.search.gal import Gal, GalConfig, parse_gal
from reidc.compiler.search.losses import cmnas_loss
from reidc.compiler.search.train import TrainConfig, sample_batch
from reidc.frontend.bire import BinaryConv2d
from reidc.frontend.checkpoint import load_checkpoint
from reidc.frontend.zoo import zoo_model


def test_parse_gal():
    assert parse_gal("kr,fr") == ("kr", "fr") and parse_gal("fr, kr") == ("kr", "fr") and parse_gal("none") == ()
    for bad in ("kr,kr", "xr", "kr;fr"):
        with pytest.raises(ValueError, match="expected none or a comma list of kr"):
            parse_gal(bad)


@pytest.fixture(scope="module")
def batch():
    data = load_dataset("synthetic:12", (64, 32), seed=3)
    return sample_batch(data, TrainConfig(ids_per_batch=4), 0)


def _net(**extra):
    torch.manual_seed(0)
    return zoo_model("bire-resnet18", "random:1", 0, (64, 32), num_classes=12, **extra).train()


def _recognition(net, batch):
    x, y, m = batch
    feat = net.backbone(x, m)
    neck = net.bottleneck(feat)
    return cmnas_loss(feat, neck, net.classifier(neck), y, m)[0]


def test_kr_gives_alpha_the_gradient_the_recognition_loss_cannot(batch):
    # a training-mode BN follows every binarized conv: a per-channel scale changes the loss only
    # through the BN's eps (float64 here: doubling every alpha moves it by under 1e-6 relative)
    x, y, m = batch
    net = _net().double()
    convs = [m for m in net.modules() if isinstance(m, BinaryConv2d)]
    with torch.no_grad():
        before = float(_recognition(net, (x.double(), y, m)))
        for c in convs:
            c.alpha.mul_(2)
        assert abs(float(_recognition(net, (x.double(), y, m))) - before) < 1e-6 * before
    net = _net()
    convs = [m for m in net.modules() if isinstance(m, BinaryConv2d)]
    gal = Gal(net, GalConfig(kinds=("kr",)))
    assert len(gal.kernel_d) == len(convs) and not gal.feature_d
    for c in convs:   # alpha starts at the reconstruction's optimum, mean |w| per output channel
        torch.testing.assert_close(c.alpha.detach(), c.weight.detach().abs().mean((1, 2, 3)))
    _recognition(net, batch)
    loss, parts = gal.loss()
    assert set(parts) == {"kr_adv", "kr_mse"} and parts["kr_mse"] > 0
    loss.backward()      # KR's terms alone: every conv's alpha has a gradient
    assert min(float(c.alpha.grad.abs().max()) for c in convs) > 1e-5
    gal.close()


def test_fr_refines_earlier_stages_and_sends_nothing_into_the_last(batch):
    net = _net()
    gal = Gal(net, GalConfig(kinds=("fr",)))
    assert sorted(gal.feature_d) == ["0", "1", "2"] and not gal.kernel_d
    _recognition(net, batch)
    loss, parts = gal.loss()
    assert set(parts) == {"fr_adv", "fr_mse"}
    loss.backward()
    grads = lambda mod: [p.grad for p in mod.parameters() if p.grad is not None and p.grad.abs().max() > 0]  # noqa: E731
    assert grads(net.layer1) and grads(net.layer3)
    assert not grads(net.layer4)       # a*_H carries no gradient into the high-level feature
    gal.close()
    assert all(not s._forward_hooks for s in (net.layer1, net.layer2, net.layer3, net.layer4))


def test_gal_does_not_fire_on_a_network_without_binarized_stages(batch):
    net = _net(binary_stages=(False,) * 4)
    gal = Gal(net, GalConfig())
    _recognition(net, batch)
    loss, parts = gal.loss()
    assert parts == {} and float(loss) == 0.0 and not gal.kernel_d   # no binarized conv: nothing to refine
    gal.close()


def test_zoo_train_with_gal_records_it_and_compiles_to_the_same_form(tmp_path):
    out = tmp_path / "bire"
    r = CliRunner().invoke(app, ["zoo", "train", "bire-resnet18", "-o", str(out), "--dataset", "synthetic:12",
                                 "--steps", "3", "--input-size", "64x32", "--gal", "kr,fr"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "train.json").read_text())
    assert rec["gal"] == ["kr", "fr"] and {"kr_adv", "kr_mse", "fr_adv", "fr_mse"} <= set(rec["loss"][-1])
    ci = rec["test"]["mAP_ci95"]["all-search"]
    assert ci[0] <= rec["test"]["after"]["all-search"]["mAP"] <= ci[1]
    art = tmp_path / "art"
    r = CliRunner().invoke(app, ["compile", str(out), "-o", str(art), "--modes", "visible"])
    assert r.exit_code == 0, r.output
    man = json.loads((art / "manifest.json").read_text())
    binary = sum(isinstance(m, BinaryConv2d) for m in load_checkpoint(out).modules())
    assert man["verification"]["status"] == "passed" and man["binary_layers"] == binary > 0
    bad = CliRunner().invoke(app, ["zoo", "train", "bire-resnet18", "-o", str(tmp_path / "b"), "--gal", "gan"])
    assert bad.exit_code != 0 and "--gal 'gan': expected none or a comma list" in bad.output


def test_supernet_trains_with_gal_and_resumes_its_discriminators(tmp_path):
    from reidc.compiler.search.train import GAL, load_supernet, read_record, train_supernet
    from reidc.compiler.search.train_parallel import check_procs
    data = load_dataset("synthetic:12", (64, 32), seed=3, hold_out_val=True)
    cfg = TrainConfig(steps=2, ids_per_batch=4, gal="fr, kr")
    assert cfg.gal == "kr,fr"
    net, _ = train_supernet(data, cfg, tmp_path / "sup")
    rec = read_record(tmp_path / "sup")
    assert rec["config"]["gal"] == "kr,fr" and (tmp_path / "sup" / GAL).is_file()
    alpha = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("alpha")}
    # resumed: alpha is the trained one (not set again to mean |w|), the discriminators are loaded
    more = TrainConfig(steps=3, ids_per_batch=4, gal="kr,fr")
    state = load_supernet(tmp_path / "sup", data, more)
    assert all(torch.equal(p, alpha[n]) for n, p in state[0].named_parameters() if n.endswith("alpha"))
    net, done = train_supernet(data, more, tmp_path / "sup", state=state)
    assert done == 3 and len(read_record(tmp_path / "sup")["losses"]) == 3
    # another GAL setting is another configuration; several processes cannot share the discriminators
    with pytest.raises(ValueError, match="another configuration"):
        load_supernet(tmp_path / "sup", data, TrainConfig(steps=3, ids_per_batch=4))
    with pytest.raises(ValueError, match="--gal kr trains the supernet in one process"):
        check_procs(2, TrainConfig(gal="kr"))
    (tmp_path / "sup" / GAL).write_bytes(b"junk")
    with pytest.raises(ValueError, match="gal.safetensors: cannot load the supernet's GAL state"):
        train_supernet(data, TrainConfig(steps=4, ids_per_batch=4, gal="kr,fr"), tmp_path / "sup")
