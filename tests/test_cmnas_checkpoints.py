"""Checkpoints as CM-NAS's released code writes them (tests/cmnas_reference.py re-implements its
eval models): a bare state dict or the training script's {'epoch', 'model', 'ema', 'optimizer'},
with and without DataParallel's `module.`, for TwoStreamSwitchBNOp (with its config.cfg) and
Baseline. reidc's features must match CM-NAS's own eval forward: `feat` (after BNNeck) for modes
1 and 2, `global_feat` with `--feature pool`, mode 0 (batch halves) with `--modality halves`."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cmnas_reference import Baseline, TwoStreamSwitchBNOp, randomise
from reidc.compiler.cli import app
from reidc.frontend.arch import bn_names, parse_split
from reidc.frontend.checkpoint import CheckpointError, load_checkpoint

H, W = 64, 32
runner = CliRunner()


def _x(n, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, 3, H, W), dtype=np.float32))


def _save(path, state, training=False, dataparallel=False, ema=None):
    if dataparallel:
        state = {f"module.{k}": v for k, v in state.items()}
        ema = None if ema is None else {f"module.{k}": v for k, v in ema.items()}
    if training:  # as train_eval.py's save_checkpoint: Adam state included
        p = torch.nn.Parameter(torch.zeros(3))
        opt = torch.optim.Adam([p], betas=(0.5, 0.999))
        p.grad = torch.ones(3)
        opt.step()
        state = {"epoch": 120, "model": state, "ema": ema, "optimizer": opt.state_dict()}
    torch.save(state, path)
    return path


def _config(tmp_path, split):
    (tmp_path / "config.cfg").write_text(" ".join(map(str, split)) + "\n")  # as CM-NAS writes netowrk.cfg
    return tmp_path / "config.cfg"


def _ref_feats(ref, x, mode):
    with torch.no_grad():
        return ref(x, x, mode=mode)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("form", ["state_dict", "training", "training+module", "state_dict+module"])
def test_two_stream_checkpoints_load_and_match_cmnas_forward(tmp_path, depth, form):
    split = parse_split("random:5", depth)
    ref = randomise(TwoStreamSwitchBNOp(395, split, depth=depth), seed=depth)
    ema = randomise(TwoStreamSwitchBNOp(395, split, depth=depth), seed=depth + 1)
    ck = _save(tmp_path / "checkpoint120.pth.tar", ref.state_dict(), training="training" in form,
               dataparallel="module" in form, ema=ema.state_dict())
    cfg = _config(tmp_path, split)
    x = _x(4)
    model = load_checkpoint(ck, split_config=cfg, input_size=(H, W))
    assert model.spec.depth == depth and model.spec.split == tuple(split)
    with torch.no_grad():
        for mode, name in ((1, "visible"), (2, "infrared")):
            torch.testing.assert_close(model(x, name), _ref_feats(ref, x, mode)[1], rtol=1e-5, atol=1e-5)
        halves = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
        torch.testing.assert_close(model(x, halves), ref(x[:2], x[2:], mode=0)[1], rtol=1e-5, atol=1e-5)
    if "training" in form:
        model = load_checkpoint(ck, split_config=cfg, weights="ema", input_size=(H, W), feature="pool")
        with torch.no_grad():
            torch.testing.assert_close(model(x, "infrared"), _ref_feats(ema, x, 2)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dataparallel", [False, True])
def test_baseline_loads_without_a_spec(tmp_path, dataparallel):
    ref = randomise(Baseline(206), seed=3)
    ck = _save(tmp_path / "checkpoint.pth.tar", ref.state_dict(), training=True, dataparallel=dataparallel)
    model = load_checkpoint(ck, input_size=(H, W))
    assert model.spec.depth == 50 and set(model.spec.split) == {1}
    x = _x(2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, "visible"), ref(x)[1], rtol=1e-5, atol=1e-5)


def test_training_checkpoint_errors(tmp_path):
    split = parse_split("random:5", 18)
    ref = randomise(TwoStreamSwitchBNOp(395, split, depth=18))
    ck = _save(tmp_path / "c.pth.tar", ref.state_dict(), training=True, ema=None)
    cfg = _config(tmp_path, split)
    with pytest.raises(CheckpointError, match="'ema' entry is empty"):
        load_checkpoint(ck, split_config=cfg, weights="ema")
    torch.save({"epoch": 1, "net": ref.state_dict()}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="neither a state dict nor a training checkpoint"):
        load_checkpoint(tmp_path / "odd.pth", split_config=cfg)


def test_a_state_dict_that_fits_nothing_names_the_closest_layout(tmp_path):
    split = parse_split("random:5", 18)
    sd = randomise(TwoStreamSwitchBNOp(395, split, depth=18)).state_dict()
    sd = {k.replace("downsample.conv", "downsample.convolution"): v for k, v in sd.items()}  # one renamed module
    torch.save(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "m.pth", split_config=_config(tmp_path, split))
    msg = str(e.value)
    assert "closest known layout CM-NAS TwoStreamSwitchBNOp" in msg
    assert "first missing 'layer2.0.downsample.0.weight'" in msg
    assert "first key it cannot place 'backbone.layer2.0.downsample.convolution.weight'" in msg


def test_the_mapping_is_a_table_covering_every_cmnas_tensor():
    """Every tensor of CM-NAS's eval model maps to exactly one reidc tensor and back."""
    from reidc.frontend.arch import ArchSpec
    from reidc.frontend.layouts import LAYOUTS, translate
    from reidc.frontend.networks import build_model
    split = parse_split("random:2", 50)
    ref_keys = list(TwoStreamSwitchBNOp(395, split).state_dict())
    layout = next(lo for lo in LAYOUTS if lo.name == "CM-NAS TwoStreamSwitchBNOp")
    mapped = translate(layout, ref_keys)
    ours = set(build_model(ArchSpec(depth=50, split=split)).state_dict())
    assert set(mapped) == ours and len(set(mapped.values())) == len(ref_keys)
    assert len(bn_names(50)) == len(split) == 53


def _cli(*args, code=0):
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == code and "Traceback" not in r.output, r.output
    return " ".join(r.output.split())


def test_reidc_compile_on_cmnas_files_matches_cmnas_eval(tmp_path):
    """End to end: `reidc compile checkpoint120.pth.tar --split-config config.cfg --weights ema`
    (ResNet-50, DataParallel keys), `reidc run` in both modalities and halves, against CM-NAS's
    eval forward; Baseline with --feature pool."""
    split = parse_split("random:9", 50)
    model, ema = (randomise(TwoStreamSwitchBNOp(206, split), seed=s) for s in (1, 2))
    ck = _save(tmp_path / "checkpoint120.pth.tar", model.state_dict(), training=True, dataparallel=True,
               ema=ema.state_dict())
    cfg = _config(tmp_path, split)
    _cli("compile", ck, "--split-config", cfg, "--weights", "ema", "--input-size", f"{H}x{W}", "-o", tmp_path / "art")
    man = json.loads((tmp_path / "art" / "manifest.json").read_text())
    assert man["weights_entry"] == "ema" and man["arch"]["split"] == list(split)
    x = _x(4, seed=7)
    np.save(tmp_path / "x.npy", x.numpy())
    for modality, mode in (("visible", 1), ("infrared", 2)):
        _cli("run", tmp_path / "art", "--input", tmp_path / "x.npy", "--modality", modality, "-o", tmp_path / "f.npy")
        ref = _ref_feats(ema, x, mode)[1].numpy()
        assert np.linalg.norm(np.load(tmp_path / "f.npy") - ref) / np.linalg.norm(ref) < 1e-4
    _cli("run", tmp_path / "art", "--input", tmp_path / "x.npy", "--modality", "halves", "-o", tmp_path / "h.npy")
    with torch.no_grad():
        ref = ema(x[:2], x[2:], mode=0)[1].numpy()
    assert np.linalg.norm(np.load(tmp_path / "h.npy") - ref) / np.linalg.norm(ref) < 1e-4
    np.save(tmp_path / "odd.npy", x[:3].numpy())
    assert "does not split into two equal halves" in _cli("run", tmp_path / "art", "--input", tmp_path / "odd.npy",
                                                          "--modality", "halves", "-o", tmp_path / "o.npy", code=1)

    base = randomise(Baseline(395), seed=4)
    bk = _save(tmp_path / "base.pth", base.state_dict())
    _cli("compile", bk, "--feature", "pool", "--modes", "visible", "--input-size", f"{H}x{W}", "-o", tmp_path / "b")
    _cli("run", tmp_path / "b", "--input", tmp_path / "x.npy", "-o", tmp_path / "g.npy")
    with torch.no_grad():
        ref = base(x)[0].numpy()
    assert np.linalg.norm(np.load(tmp_path / "g.npy") - ref) / np.linalg.norm(ref) < 1e-4
    assert "before the BNNeck" in json.loads((tmp_path / "b" / "manifest.json").read_text())["output"]
