"""The search's per-kernel latency model: the kernels a candidate's program runs (listed without
building it, keyed by structure), their times from a measured program, the fit, and what it
falls back on. Timing figures here are synthetic or compared with each other, never asserted."""
import random

import numpy as np
import pytest

from reidc.compiler.lower.kernel_list import Kernel, family
from reidc.compiler.search.latency import LatencyMeter, Scenario, candidate_kernels
from reidc.compiler.search.latency_model import LatencyModel, held_out_error, kernel_record, record_problem
from reidc.compiler.search.predict import holdout_archs
from reidc.compiler.search.latency_table import table_archs
from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import build_supernet, extract, random_arch
from reidc.targets import get_target


def _k(key, name, calls=1, macs=None, shapes=(("n", "4", "float32"),)):
    return Kernel(key=key, name=name, family=family(name), shapes=shapes, macs=macs, calls=calls)


def test_family_drops_tvms_numbering_only():
    assert family("fused_conv2d9_add10_multiply7_add12") == "fused_conv2d_add_multiply_add"
    assert family("fused_bconv2d_cast_multiply2_add4") == "fused_bconv2d_cast_multiply_add"
    assert family("max_pool2d") == "max_pool2d" and family("avg_pool2d1") == "avg_pool2d"


def test_the_fit_recovers_a_known_residual_and_predicts_by_key_shape_macs_and_family():
    """Programs drawn from known kernel times with whole run = 1.2 x kernels + 0.3 ms: the fit
    finds a and b, and a new combination of known kernels is predicted exactly."""
    times = {"c1": 1.0, "c2": 2.5, "b1": 0.2, "p": 0.05}
    kinds = {"c1": _k("c1", "fused_conv2d_add", macs=1000), "c2": _k("c2", "fused_conv2d1_add1", macs=3000),
             "b1": _k("b1", "fused_bconv2d_cast"), "p": _k("p", "max_pool2d")}
    rng = random.Random(0)
    programs = []
    for _ in range(6):
        calls = {k: rng.randint(1, 4) for k in times}
        recs = [kernel_record(Kernel(**{**kinds[k].__dict__, "calls": c}), times[k]) for k, c in calls.items()]
        programs.append((recs, 1.2 * sum(c * times[k] for k, c in calls.items()) + 0.3))
    m = LatencyModel.fit(programs)
    assert m.a == pytest.approx(1.2) and m.b == pytest.approx(0.3) and m.programs == 6
    assert all(r["predicted_ms"] == pytest.approx(r["measured_ms"]) for r in m.fit_rows)
    new = [Kernel(**{**kinds["c2"].__dict__, "calls": 7}), Kernel(**{**kinds["p"].__dict__, "calls": 2})]
    assert m.predict(new) == pytest.approx(1.2 * (7 * 2.5 + 2 * 0.05) + 0.3)
    # a kernel no program ran: same family and shapes; else time per MAC of its family; else its
    # family's median; else unknown (0, and counted)
    assert m.kernel_ms(_k("other", "fused_conv2d7_add3", macs=5000)) == (1.75, "shapes")   # c1 and c2's median
    assert m.kernel_ms(_k("x", "fused_conv2d7_add3", shapes=(("9",),), macs=2000)) == (pytest.approx(2000 * np.median(
        [1.0 / 1000, 2.5 / 3000])), "macs")
    assert m.kernel_ms(_k("y", "fused_bconv2d4_cast2", shapes=(("9",),))) == (0.2, "family")
    assert m.kernel_ms(_k("z", "softmax", shapes=(("9",),))) == (0.0, "unknown")
    assert m.kernel_ms(_k("w", "max_pool2d3")) == (0.05, "shapes")      # same family and shapes, another number
    ex = m.explain([_k("z", "softmax"), kinds["c1"]])
    assert ex["kernels_found"] == {"unknown": 1, "key": 1}
    # too few programs for two parameters: the mean ratio, no offset
    one = LatencyModel.fit(programs[:1])
    assert one.b == 0.0 and one.predict([]) == 0.0 and one.a == pytest.approx(programs[0][1] / (
        (programs[0][1] - 0.3) / 1.2))
    with pytest.raises(ValueError, match="at least one measured program"):
        LatencyModel.fit([])


def test_held_out_error_counts_the_share_within_ten_percent():
    h = held_out_error([{"predicted_ms": 1.05, "measured_ms": 1.0}, {"predicted_ms": 0.8, "measured_ms": 1.0},
                        {"predicted_ms": 2.0, "measured_ms": 2.0}, {"predicted_ms": 1.1, "measured_ms": 1.0}])
    assert h["candidates"] == 4 and h["within_10pct"] == 0.75
    assert h["max_abs_rel_err"] == pytest.approx(0.2) and h["rows"][1]["rel_err"] == pytest.approx(-0.2)
    assert held_out_error([])["within_10pct"] is None


@pytest.mark.parametrize("bad, why", [
    ({"k": 1}, "not a list"),
    ([{"key": "a", "name": "f", "calls": 0, "ms": 1.0, "macs": None, "shapes": []}], "calls >= 1"),
    ([{"key": "a", "name": "f", "calls": 1, "ms": float("nan"), "macs": None, "shapes": []}], "ms >= 0"),
    ([{"key": "a", "name": "f", "calls": 1, "ms": 1.0, "macs": 1.5, "shapes": []}], "macs"),
    ([{"key": "a", "name": "f", "calls": 1, "ms": 1.0, "macs": None, "shapes": [[3]]}], "shapes"),
])
def test_a_bad_kernel_record_in_the_cache_is_named(bad, why):
    assert why in record_problem(bad)
    assert record_problem([{"key": "a", "name": "f", "calls": 2, "ms": 0.0, "macs": 12, "shapes": [["n", "4"]]}]) is None


def test_holdout_candidates_are_random_distinct_reproducible_and_not_the_tables():
    t = random_arch(random.Random(0), (64, 32), 10)
    table = {__import__("reidc.compiler.search.latency", fromlist=["arch_key"]).arch_key(s)
             for s in table_archs(t, Scenario("mixed", 8)).values()}
    a = holdout_archs(5, 3, (64, 32), 10, table)
    assert a == holdout_archs(5, 3, (64, 32), 10, table) and a != holdout_archs(5, 4, (64, 32), 10, table)
    from reidc.compiler.search.latency import arch_key
    assert len({arch_key(s) for s in a}) == 5 and not {arch_key(s) for s in a} & table


@pytest.fixture(scope="module")
def net():
    return build_supernet((64, 32), 10).eval()


def _spec(split_stage1: bool, binary=(False, True, False, False)):
    t = random_arch(random.Random(0), (64, 32), 10)
    from reidc.frontend.supernet import stage_index as stage_of
    from reidc.frontend.arch import bn_names
    split = tuple(0 if split_stage1 and stage_of(n) == 0 else 1 for n in bn_names(18, "bire"))
    return ArchSpec(depth=18, family="bire", input_size=(64, 32), num_classes=10, split=split, binary_stages=binary)


def test_a_split_bn_changes_the_kernels_of_a_mixed_program_and_not_of_a_single_modality_one(net):
    """Kernels are keyed by structure: in a visible program a split BN folds like a shared one (the
    same kernels), in a mixed one its convs get a second weight set or a per-sample affine."""
    host = get_target("host")
    shared, split = _spec(False), _spec(True)
    vis = [candidate_kernels(extract(net, s), "visible", host) for s in (shared, split)]
    assert [(k.key, k.calls) for k in vis[0]] == [(k.key, k.calls) for k in vis[1]]
    mixed = [candidate_kernels(extract(net, s), "mixed", host) for s in (shared, split)]
    assert {k.key for k in mixed[1]} - {k.key for k in mixed[0]}
    # the binarized stage's convs are there, with their multiply-accumulates per image
    b = [k for k in mixed[0] if k.family.startswith("fused_bconv2d")]
    assert b and all(k.macs and k.macs > 0 for k in b)
    assert sum(k.calls for k in b) == 4      # stage 2 of a ResNet-18: four 3x3 binary convs


def test_a_measured_program_times_exactly_the_kernels_its_listing_names(net, tmp_path, monkeypatch):
    """The meter compiles, times and profiles a candidate: every kernel the VM ran is in the
    listing (names match TVM's, call counts match), with a time; a model fitted on it predicts
    that same program within its own residual. A machine busy with other processes during the
    timing is waited for and timed again (here: busy once, then quiet)."""
    from reidc.compiler import bench_load
    busy = iter([2.0, 0.1])
    monkeypatch.setattr(bench_load.OthersMeter, "cores", lambda self: next(busy))
    monkeypatch.setattr("reidc.compiler.search.latency.time.sleep", lambda s: None)
    spec = _spec(True)
    said = []
    meter = LatencyMeter("host", Scenario("mixed", 2), cache=tmp_path / "lat.json", number=2, repeat=2,
                         progress=said.append)
    rec = meter.measure(spec, extract(net, spec))
    assert rec["others_cores"] == 0.1 and any("other processes used 2.0 cores while timing; waiting" in s
                                                for s in said)
    ks = rec["kernel_times"]
    assert record_problem(ks) is None and len(ks) > 20
    listed = candidate_kernels(extract(net, spec), "mixed", meter.preset)
    assert [(k["key"], k["calls"]) for k in ks] == [(k.key, k.calls) for k in listed]
    convs = [k for k in ks if "conv2d" in k["name"]]
    assert convs and all(k["ms"] > 0 for k in convs)
    m = LatencyModel.fit([(ks, rec["ms"])])
    assert m.predict(listed) == pytest.approx(rec["ms"])
    assert LatencyMeter("host", Scenario("mixed", 2), cache=tmp_path / "lat.json", number=2, repeat=2).cached(spec) == rec
