"""`reidc search` end to end on the built-in data and on a SYSU-MM01-layout folder: both modes,
the Pareto output, the pick compiled and verified; supernet resume; latency through RPC; errors.
Small settings (12 training identities, a few training steps, visible:1 scenario) keep it to
minutes; the accuracy numbers here mean nothing, the plumbing and the compiled pick do."""
import json

import pytest
import torch
from typer.testing import CliRunner

from reidc.compiler.cli import app
from reidc.compiler.runtime import Compiled
from reidc.compiler.reference import seeded_inputs
from reidc.compiler.datasets import load_dataset
from reidc.compiler.datasets.folders import write_sysu_layout
from reidc.compiler.search.latency import LatencyMeter, Scenario, arch_key
from reidc.compiler.search.train import TrainConfig, train_supernet
from reidc.frontend.checkpoint import load_checkpoint
from reidc.frontend.supernet import extract, random_arch, set_arch

SMALL = ["--dataset", "synthetic:12", "--train-steps", "3", "--population", "4", "--generations", "1",
         "--measure-front", "2", "--scenario", "visible:1", "--time-limit", "15m", "--latency-table", "stages",
         "--latency-holdout", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("latency") / "latency.json"


@pytest.fixture(scope="module")
def searched(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("search")
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--latency-aware", "--latency-cache", str(cache)] + SMALL)
    assert r.exit_code == 0, r.output
    return out, r.output


def test_latency_aware_search_end_to_end(searched):
    out, text = searched
    res = json.loads((out / "latency-aware" / "pareto.json").read_text())
    assert res["mode"] == "latency-aware" and res["target"]["target"] == "host"
    assert (out / "latency-aware" / "pareto.png").stat().st_size > 10_000
    assert len(res["latency_table"]["measured"]) == 6        # all real, one per binarized stage, all binarized
    # the per-kernel model, fitted on the table's 6 programs, tested on one random candidate it never saw
    lm = res["latency_model"]
    assert lm["predictor"] == "the per-kernel model" and lm["model"]["programs"] == 6 and lm["model"]["a"] > 0
    h = lm["held_out"]
    assert h["candidates"] == 1 and h["rows"][0]["measured_ms"] > 0 and 0 <= h["within_10pct"] <= 1
    assert set(h["rows"][0]["kernels_found"]) <= {"key", "shapes", "macs", "family", "unknown"}
    front = res["pareto_front"]
    assert front and all(r["predicted_ms"] > 0 for r in front)
    scores = [r["val_score_mAP"] for r in sorted(front, key=lambda r: r["predicted_ms"])]
    assert scores == sorted(scores)                          # a front: slower only if more accurate
    pick = res["pick"]
    assert pick["measured_ms"] > 0 and pick["weight_bytes"] > 0
    assert set(pick["test"]) == {"all-search", "indoor-search"}
    ab = res["pick_vs_most_accurate"]    # None when the pick is the most accurate candidate
    assert ab is None or (ab["pick_ms"] > 0 and ab["most_accurate_val_mAP"] >= ab["pick_val_mAP"])
    assert 0 <= pick["test"]["all-search"]["mINP"] <= pick["test"]["all-search"]["mAP"] <= 1
    # every mAP with its interval over identities; each candidate against the most accurate, paired
    for r in front:
        lo, hi = r["val_mAP_ci95"]
        assert lo <= r["val_score_mAP"] <= hi
        vs = r["val_vs_most_accurate"]
        assert vs is None or (vs["ci95"][0] <= vs["difference"] <= vs["ci95"][1] and
                              vs["indistinguishable"] == (vs["ci95"][0] <= 0 <= vs["ci95"][1]))
    assert sum(r["val_vs_most_accurate"] is None for r in front) == 1
    lo, hi = pick["test_mAP_ci95"]
    assert lo <= pick["test_score_mAP"] <= hi
    for v in list(pick["test"].values()) + list(pick["test_multi_shot"].values()):
        assert v["mAP_ci95"][0] <= v["mAP"] <= v["mAP_ci95"][1]
    assert ab is None or "indistinguishable" in ab["val_mAP_difference"]
    # the pick fine-tuned alone (a quarter of 3 training steps: 1), and 3 more candidates for the tau
    sa = res["standalone"]
    assert sa["steps"] == 1 and pick["weights"] == "fine-tuned stand-alone for 1 steps"
    assert sa["candidates"][0]["key"] == pick["key"] and len(sa["candidates"]) == 4
    assert len({r["key"] for r in sa["candidates"]}) == 4
    assert sa["kendall_tau"] is None or -1 <= sa["kendall_tau"] <= 1
    assert set(pick["test_inherited"]["settings"]) == set(pick["test"])
    text = " ".join(text.split())
    assert "Pareto front (latency-aware" in text and "checkpoint:" in text
    assert "Pareto candidates are indistinguishable from it" in text and "test (multi-shot):" in text
    assert "stand-alone check: 4 candidates fine-tuned for 1 steps; Kendall tau" in text
    assert "latency: the per-kernel model predicts 1 held-out random candidates" in text
    assert "latency (the per-kernel model) on 1 held-out random candidates: mean error" in text
    assert res["seconds"] <= res["time_limit_s"] == 900


def test_search_method_differentiable_picks_the_argmax(searched, cache, monkeypatch):
    """On the supernet and the latency cache of the evolution's run: accuracy-only, the argmax
    is the pick; latency-aware with a cost that makes binarized stages cheap and splits dear
    (the predictor's figure replaced, so that its 88 predictions take no time), weighted
    heavily, the argmax is the all-binarized network with no split."""
    out, _ = searched
    diff = ["--method", "differentiable", "--arch-steps", "2", "--standalone-steps", "0", "--measure-front", "1"]
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--accuracy-only", "--latency-cache", str(cache)] + SMALL + diff)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "differentiable-accuracy-only" / "pareto.json").read_text())
    d = res["differentiable"]
    assert res["method"] == "differentiable" and res["pick"]["key"] == d["arch"]
    assert d["steps"] == 2 and len(d["probabilities"]["split"]) == 36 and d["latency_terms"] is None
    assert res["candidates_evaluated"] >= 3          # the two anchors and the argmax (more if it moved)
    assert (out / "differentiable-accuracy-only" / "chosen-host" / "manifest.json").is_file()
    text = " ".join(r.output.split())
    assert "differentiable search (differentiable-accuracy-only): 2 steps" in text
    assert "is trained (3 steps)" in text   # the evolution's supernet

    from reidc.compiler.search.predict import Predictor
    cost = lambda self, spec: sum(1.0 if b else 3.0 for b in spec.binary_stages) + 0.2 * spec.split.count(0)  # noqa: E731
    monkeypatch.setattr(Predictor, "predict", cost)
    from reidc.compiler.search.search import _Search   # weight memory: 2**20 bytes a split BN, 88 of them in no time
    monkeypatch.setattr(_Search, "_memory", lambda self, spec: 2**20 * (10 + spec.split.count(0)))
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--latency-aware", "--latency-weight", "50",
                                 "--memory-weight", "1", "--latency-cache", str(cache)] + SMALL + diff)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "differentiable-latency-aware" / "pareto.json").read_text())
    d = res["differentiable"]
    assert res["pick"]["arch"]["binary_stages"] == "1111" and res["pick"]["arch"]["split_bns"] == 0
    assert d["expected_ms_of_pick"] == pytest.approx(4.0) and d["predicted_ms_of_pick"] == 4.0
    assert d["latency_terms"]["patterns"]["0000"] == 12.0 and d["config"]["latency_weight"] == 50
    assert "expected_ms" in d["log"][-1] and d["log"][-1]["expected_mb"] > 10
    text = " ".join(r.output.split())
    assert "latency weight 50.0" in text and "memory weight 1.0" in text
    assert "differentiable search: 2 steps in " in text and "expected latency (linear in the weights) 4.00 ms" in text
    assert "search wall time (without training and the final phase):" in text


def test_the_pick_is_a_checkpoint_that_compiles_and_matches_pytorch(searched):
    out, _ = searched
    model = load_checkpoint(out / "latency-aware" / "chosen")
    art = out / "latency-aware" / "chosen-host"
    man = json.loads((art / "manifest.json").read_text())
    assert man["verification"]["status"] == "passed" and man["arch"]["family"] == "bire"
    assert man["binary_layers"] == 4 * sum(model.spec.binary_stages)
    comp = Compiled(art)
    x, m = seeded_inputs((3, 64, 32), 4, "mixed", seed=9)
    # a binarized net: a pre-sign value within float rounding of 0 may flip (and change that
    # sample's feature); compare_with_torch refuses any other flip, as the compile's verification does
    from reidc.compiler.compile import compare_with_torch
    errs, flips = compare_with_torch(comp, model, "mixed", x, m, man["bit_sites"]["mixed"])
    clean = [e for e, f in zip(errs, flips) if f["flipped_bits"] == 0]
    assert len(clean) >= 2 and max(clean) < 1e-4


def test_accuracy_only_reuses_the_supernet_and_the_scores(searched, cache):
    out, _ = searched
    before = json.loads((out / "accuracy.json").read_text())
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--accuracy-only", "--latency-cache", str(cache)] + SMALL)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "supernet in" in text and "is trained (3 steps)" in text
    res = json.loads((out / "accuracy-only" / "pareto.json").read_text())
    acc = json.loads((out / "accuracy.json").read_text())
    assert set(before) <= set(acc)
    assert res["pick"]["val_score_mAP"] == max(r["val_score_mAP"] for r in res["pareto_front"])
    assert res["latency_measurements_new"] <= 3      # the table and most candidates come from the cache
    assert (out / "accuracy-only" / "chosen-host" / "model.so").is_file()


def test_a_rerun_with_a_short_time_limit_completes_from_what_is_saved(searched, cache):
    """Supernet, scores and latencies saved: a limit far below the first run's still picks."""
    out, _ = searched
    args = SMALL[:]
    args[args.index("15m")] = "2m"
    r = CliRunner().invoke(app, ["search", "-o", str(out), "--latency-aware", "--latency-cache", str(cache)] + args)
    assert r.exit_code == 0, r.output
    res = json.loads((out / "latency-aware" / "pareto.json").read_text())
    assert res["seconds"] <= 120 and res["latency_measurements_new"] == 0


def test_search_on_a_sysu_layout_folder(tmp_path, cache):
    root = write_sysu_layout(load_dataset("synthetic:12", (64, 32), seed=5), tmp_path / "SYSU-MM01")
    args = ["search", "-o", str(tmp_path / "out"), "--accuracy-only", "--latency-cache", str(cache)] + SMALL
    args[args.index("synthetic:12")] = f"sysu:{root}"
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "accuracy-only" / "pareto.json").read_text())
    assert res["dataset"].startswith("SYSU-MM01") and set(res["pick"]["test"]) == {"all-search", "indoor-search"}
    assert json.loads((tmp_path / "out" / "accuracy-only" / "chosen-host" / "manifest.json").read_text())[
        "verification"]["status"] == "passed"


def test_supernet_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Stopped by its time limit after 3 of 4 steps, then rerun: the same weights as one run."""
    import reidc.compiler.search.train as train
    data = load_dataset("synthetic:12", (64, 32), seed=1)
    cfg = TrainConfig(steps=4, save_every=1)
    full, _ = train_supernet(data, cfg, tmp_path / "full")
    now = [0.0]                                  # a clock that advances one second per training step
    real_batch = train.sample_batch

    def batch(*a, **k):
        now[0] += 1
        return real_batch(*a, **k)

    monkeypatch.setattr(train, "sample_batch", batch)
    monkeypatch.setattr(train.time, "time", lambda: now[0])
    said = []
    _, done = train_supernet(data, cfg, tmp_path / "part", deadline=2.5, progress=said.append)
    monkeypatch.undo()
    assert done == 3 and any("stops at step 3 of 4" in m for m in said)
    net, done = train_supernet(data, cfg, tmp_path / "part", progress=said.append)
    assert done == 4 and any("resuming supernet training at step 3" in m for m in said)
    for (k, a), b in zip(full.state_dict().items(), net.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(ValueError, match="another configuration"):
        train_supernet(data, TrainConfig(steps=4, lr=0.5), tmp_path / "part")


def test_latency_through_an_rpc_tracker(tmp_path):
    from reidc.targets.rpc import free_port, start_server, start_tracker, wait_for_devices
    port = free_port()
    log = open(tmp_path / "rpc.log", "w")
    tracker = start_tracker(port, log)
    server = start_server(port, "x86-search", log)
    try:
        wait_for_devices(port, "x86-search")
        from reidc.frontend.supernet import build_supernet
        net = build_supernet((64, 32), 10).eval()
        spec = random_arch(__import__("random").Random(2), (64, 32), 10)
        meter = LatencyMeter("host", Scenario("mixed", 2), cache=tmp_path / "lat.json",
                             rpc=(f"127.0.0.1:{port}", "x86-search"), number=2, repeat=2)
        rec = meter.measure(spec, extract(set_arch(net, spec), spec))
        assert rec["ms"] > 0 and rec["where"] == "rpc:x86-search" and rec["verified"] == "passed"
        assert rec["kernel_times"] is None            # kernels are timed only in this process: the table predicts
        assert meter.cached(spec) == rec and json.loads((tmp_path / "lat.json").read_text())[meter.key(spec)]["ms"] == rec["ms"]
        local = LatencyMeter("host", Scenario("mixed", 2), cache=tmp_path / "lat.json")
        assert local.cached(spec) is None            # a different measurement setup is a different key
    finally:
        server.stop()
        tracker.stop()
        log.close()


def test_latency_on_two_rpc_devices_at_once(tmp_path, monkeypatch):
    """Two servers under one key: candidates compiled here are timed on both at once. A barrier
    after each timing session opens only when two sessions are held together, which the
    tracker grants only on two devices (with one, the second waits and the barrier breaks)."""
    import threading
    from reidc.compiler import runtime
    from reidc.targets.rpc import free_port, start_server, start_tracker, wait_for_devices
    port = free_port()
    log = open(tmp_path / "rpc.log", "w")
    tracker = start_tracker(port, log)
    servers = [start_server(port, "x86-pair", log) for _ in range(2)]
    together, opened = threading.Barrier(2, timeout=60), []
    real_init = runtime.Compiled.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        if threading.current_thread().name.startswith("reidc-rpc"):
            together.wait()
            opened.append(threading.current_thread().name)
    monkeypatch.setattr(runtime.Compiled, "__init__", init)
    try:
        wait_for_devices(port, "x86-pair", n=2)
        from reidc.frontend.supernet import build_supernet
        net = build_supernet((64, 32), 10).eval()
        specs = [random_arch(__import__("random").Random(s), (64, 32), 10) for s in (3, 4)]
        meter = LatencyMeter("host", Scenario("visible", 1), cache=tmp_path / "lat.json",
                             rpc=(f"127.0.0.1:{port}", "x86-pair"), number=2, repeat=2)
        assert meter.devices() == 2
        recs = meter.measure_many([(s, lambda s=s: extract(set_arch(net, s), s)) for s in specs])
        assert len(opened) == 2 and not together.broken
        assert [r["arch"] for r in recs] == [arch_key(s) for s in specs] and all(r["ms"] > 0 for r in recs)
        assert meter.measured == 2 and all(meter.cached(s) == r for s, r in zip(specs, recs))
        assert meter.measure_many([(s, lambda: pytest.fail("cached: no model needed")) for s in specs]) == recs
    finally:
        for server in servers:
            server.stop()
        tracker.stop()
        log.close()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "sysu:/no/such/folder"], "no such SYSU-MM01 folder"),
    (["--dataset", "mnist"], "expected synthetic, sysu:PATH or regdb:PATH"),
    (["--target", "rpi4"], "qemu emulation times are not the board's"),
    (["--scenario", "mixed"], "expected MODE:BATCH"),
    (["--time-limit", "soon"], "expected e.g. 20m"),
    (["--rpc-key", "pi"], "go together"),
    (["--latency-holdout", "-1"], "--latency-holdout -1: expected 0 (none) or more"),
    (["--train-procs", "3"], "--train-procs 3: each process takes whole identities of the batch's 8"),
])
def test_search_errors_name_the_bad_input(tmp_path, args, message):
    r = CliRunner().invoke(app, ["search", "-o", str(tmp_path / "o")] + args)
    assert r.exit_code == 1 and message in r.output, r.output


def test_latency_cache_keys_change_with_the_generated_code(tmp_path, monkeypatch):
    """A latency measured with other kernels (same reidc version, edited kernels/ or passes/)
    is not reused: the key holds a digest of the code-generating sources."""
    import random
    import reidc.compiler.search.latency as latency
    from reidc.compiler.base.version import codegen_digest
    spec = random_arch(random.Random(2), (64, 32), 10)
    meter = LatencyMeter("host", Scenario("visible", 1), cache=tmp_path / "lat.json")
    before = meter.key(spec)
    assert meter.setup()["codegen"] == codegen_digest() and len(codegen_digest()) == 16
    assert meter.key(spec) == before                       # stable within a process
    monkeypatch.setattr(latency, "codegen_digest", lambda: "0" * 16)
    assert meter.key(spec) != before
