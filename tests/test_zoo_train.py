"""`reidc zoo train` / `reidc.train_zoo`: a zoo network trained on the synthetic data, written as
a checkpoint that loads, with train.json (loss trace, test metrics before and after); same seed,
same weights; a user's folder is refused before any work. Small: ResNet-18 at 64x32, 16
training identities, 30 steps (the accuracy numbers here mean little, the plumbing does)."""
import inspect
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import reidc
from reidc.compiler.cli import app
from reidc.compiler.datasets import load_dataset
from reidc.compiler.search import zoo_train
from reidc.frontend.checkpoint import load_checkpoint

SMALL = dict(dataset="synthetic:16", input_size=(64, 32))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: a second busy process on a 2-core machine makes 2-thread training many times
    slower (the threads wait for each other), and runs compared for equality share a count."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "r18"
    r = CliRunner().invoke(app, ["zoo", "train", "cmnas-resnet18", "-o", str(out), "--dataset", "synthetic:16",
                                 "--steps", "30", "--input-size", "64x32", "--seed", "3"])
    assert r.exit_code == 0, r.output
    return out, " ".join(r.output.split())


def test_cli_reports_rank1_and_map_before_and_after(trained):
    out, text = trained
    assert f"wrote {out} (cmnas-resnet18, 30 steps" in text
    for setting in ("all-search", "indoor-search"):
        assert f"test {setting}: rank-1 " in text and " -> " in text and "(untrained -> trained)" in text


def test_record_has_the_settings_the_loss_trace_and_the_metrics(trained):
    out, _ = trained
    rec = json.loads((out / "train.json").read_text())
    assert (rec["name"], rec["split"], rec["dataset"], rec["steps"], rec["seed"], rec["input_size"]) == \
        ("cmnas-resnet18", "all-split", "synthetic:16", 30, 3, [64, 32])
    assert rec["num_classes"] == 16 and rec["config"]["ids_per_batch"] == 8
    steps = [row["step"] for row in rec["loss"]]
    assert steps == sorted(steps) and steps[-1] == 30 and len(steps) >= 4
    assert rec["loss"][-1]["loss"] < 0.8 * rec["loss"][0]["loss"]      # training went somewhere
    assert rec["loss"][-1]["id"] < rec["loss"][0]["id"]
    for when in ("before", "after"):
        res = rec["test"][when]
        assert set(res) == {"all-search", "indoor-search"}
        for r in res.values():
            # mINP can exceed AP (matches at ranks 5 and 6: AP 0.267, INP 0.333), so each is bounded alone
            assert 0 <= r["mINP"] <= 1 and 0 <= r["mAP"] <= 1 and 0 <= r["rank1"] <= r["rank5"] <= r["rank10"] <= 1
    assert rec["seconds"]["train"] > 0 and rec["seconds"]["total"] >= rec["seconds"]["train"]


def test_the_checkpoint_loads_and_is_the_network_that_was_scored(trained):
    out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["arch.json", "model.safetensors", "train.json"]
    model = load_checkpoint(out)
    assert model.spec.name == "cmnas-resnet18" and model.spec.num_classes == 16
    assert tuple(model.spec.input_size) == (64, 32)
    rec = json.loads((out / "train.json").read_text())
    data = load_dataset("synthetic:16", (64, 32), seed=3)
    assert zoo_train.evaluate(model, data) == rec["test"]["after"]


def test_the_checkpoint_compiles_and_verifies(trained, tmp_path):
    out, _ = trained
    art = reidc.compile(out, modes="visible", verify=True, output=tmp_path / "art")
    assert art.manifest["verification"]["status"] == "passed" and art.manifest["model"] == "cmnas-resnet18"


def test_same_seed_same_weights_and_rerun_replaces_its_own_output(tmp_path):
    out = tmp_path / "ck"
    first = reidc.train_zoo("cmnas-resnet18", out, steps=4, seed=1, **SMALL)
    w1 = load_file(str(out / "model.safetensors"))
    second = reidc.train_zoo("cmnas-resnet18", out, steps=4, seed=1, **SMALL)   # over its own output: allowed
    w2 = load_file(str(out / "model.safetensors"))
    assert first["loss"] == second["loss"] and first["test"] == second["test"]
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)
    untrained = reidc.zoo_model("cmnas-resnet18", seed=1, input_size=(64, 32)).state_dict()
    assert not torch.equal(untrained["layer1.0.conv1.weight"], w1["layer1.0.conv1.weight"])


def test_a_folder_with_the_users_files_is_refused_before_any_work(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = CliRunner().invoke(app, ["zoo", "train", "cmnas-resnet18", "-o", str(mine), "--dataset", "synthetic:16",
                                 "--steps", "5", "--input-size", "64x32"])
    assert r.exit_code == 1
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    text = " ".join(r.output.split())
    assert lines[0].startswith("error: -o ") and "notes.txt" in text and "did not write" in text
    assert "rendering" not in text and not any(ln.startswith("reidc:") for ln in lines)   # nothing ran
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    # a zoo export folder is reidc's own checkpoint: it may be replaced; a supernet folder may not
    sup = tmp_path / "sup"
    sup.mkdir()
    (sup / "train.json").write_text("{}")
    (sup / "supernet.safetensors").write_bytes(b"")
    with pytest.raises(reidc.OutputError, match="supernet.safetensors"):
        reidc.train_zoo("cmnas-resnet18", sup, steps=5, **SMALL)


@pytest.mark.parametrize("kw, error, match", [
    (dict(name="cmnas-resnet99"), reidc.ArchError, "unknown zoo model"),
    (dict(steps=0), reidc.InputError, "--steps 0"),
    (dict(input_size=(60, 30)), reidc.ArchError, "multiples of 32"),
    (dict(split="2 2"), reidc.ArchError, "split"),
    (dict(dataset="mnist"), reidc.DatasetError, "--dataset"),
])
def test_bad_arguments_fail_in_one_line_before_training(tmp_path, kw, error, match):
    said = []
    args = {"name": "cmnas-resnet18", **SMALL, "steps": 5, **kw}
    with pytest.raises(error, match=match):
        reidc.train_zoo(args.pop("name"), tmp_path / "o", progress=said.append, **args)
    assert not said and not (tmp_path / "o").exists()


def test_the_api_default_is_the_trainers():
    sig = inspect.signature(reidc.train_zoo).parameters
    assert sig["steps"].default == zoo_train.DEFAULT_STEPS
    assert tuple(sig["input_size"].default) == zoo_train.DEFAULT_INPUT_SIZE
