import pytest

from reidc.frontend.arch import ArchError, ArchSpec, bn_names, load_spec, parse_split, read_cmnas_config


def test_split_vector_lengths_follow_cmnas_order():
    assert len(bn_names(50)) == 53
    assert len(bn_names(18)) == 20
    names = bn_names(50)
    assert names[:5] == ["bn1", "layer1.0.downsample.1", "layer1.0.bn1", "layer1.0.bn2", "layer1.0.bn3"]
    assert names[names.index("layer2.0.downsample.1") + 1] == "layer2.0.bn1"


def test_parse_split_forms():
    assert parse_split("all-split", 18) == (0,) * 20
    assert parse_split("all-shared", 18) == (1,) * 20
    r = parse_split("random:7", 18)
    assert r == parse_split("random:7", 18) and set(r) <= {0, 1} and len(r) == 20
    assert parse_split("0,1,1", 18) == (0, 1, 1)
    with pytest.raises(ArchError, match="random:<integer seed>"):
        parse_split("random:x", 18)


def test_spec_rejects_wrong_length_and_values():
    with pytest.raises(ArchError, match="has 53 BatchNorms"):
        ArchSpec(depth=50, split=(0,) * 52)
    with pytest.raises(ArchError, match="must be 0"):
        ArchSpec(depth=18, split=(2,) + (0,) * 19)
    with pytest.raises(ArchError, match="unsupported ResNet depth"):
        ArchSpec(depth=101, split=())


def test_cmnas_config_and_json_roundtrip(tmp_path):
    cfg = tmp_path / "config.cfg"
    cfg.write_text(" ".join(["1", "0"] * 10) + "\n")
    assert read_cmnas_config(cfg) == (1, 0) * 10
    spec = ArchSpec(depth=18, split=(1, 0) * 10)
    p = tmp_path / "arch.json"
    import json
    p.write_text(json.dumps(spec.to_json()))
    assert load_spec(p) == spec
    p.write_text("{\"depth\": 18}")
    with pytest.raises(ArchError, match="malformed"):
        load_spec(p)
