import json
import os

import pytest
import torch

from reidc.frontend.arch import ArchError
from reidc.frontend.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from reidc.frontend.zoo import zoo_model


def test_roundtrip_is_exact(tmp_path, small_r18):
    m = small_r18["random:7"]
    save_checkpoint(m, tmp_path / "ck")
    back = load_checkpoint(tmp_path / "ck")
    assert back.spec == m.spec
    for k, v in m.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_zoo_export_is_deterministic():
    a = zoo_model("cmnas-resnet18", "all-split", seed=3, input_size=(64, 32))
    b = zoo_model("cmnas-resnet18", "all-split", seed=3, input_size=(64, 32))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_cmnas_style_keys_and_config_cfg_load(tmp_path, small_r18):
    m = small_r18["random:7"]
    sd = {f"module.base_resnet.base.{k}": v for k, v in m.state_dict().items()}
    torch.save(sd, tmp_path / "model.pth")
    (tmp_path / "config.cfg").write_text(" ".join(map(str, m.spec.split)) + "\n")
    back = load_checkpoint(tmp_path / "model.pth", split_config=tmp_path / "config.cfg")
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        assert torch.allclose(back(x, "infrared"), m(x, "infrared"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"conv1.weight": Evil()}, tmp_path / "evil.pt")
    spec = tmp_path / "arch.json"
    spec.write_text(json.dumps({"depth": 18, "split": [0] * 20}))
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt", arch=spec)
    assert not marker.exists()


def test_truncated_and_corrupt_files(tmp_path, small_r18):
    save_checkpoint(small_r18["all-split"], tmp_path / "ck")
    w = tmp_path / "ck" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "junk.pt").write_bytes(b"\x00not a torch file")
    spec = tmp_path / "ck" / "arch.json"
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "junk.pt", arch=spec)


def test_weights_that_do_not_fit(tmp_path, small_r18):
    save_checkpoint(small_r18["all-split"], tmp_path / "ck")
    spec = json.loads((tmp_path / "ck" / "arch.json").read_text())
    spec["depth"], spec["split"] = 34, [0] * 36
    (tmp_path / "ck" / "arch.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="do not fit cmnas-resnet34"):
        load_checkpoint(tmp_path / "ck")


def test_split_vector_of_wrong_length(tmp_path, small_r18):
    save_checkpoint(small_r18["all-split"], tmp_path / "ck")
    spec = json.loads((tmp_path / "ck" / "arch.json").read_text())
    spec["split"] = spec["split"][:-1]
    (tmp_path / "ck" / "arch.json").write_text(json.dumps(spec))
    with pytest.raises(ArchError, match="19 entries but ResNet-18 has 20"):
        load_checkpoint(tmp_path / "ck")
