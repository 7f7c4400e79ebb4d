"""The search's parts: retrieval metrics on hand-computed cases, datasets and their protocols,
CM-NAS's losses, the supernet and its children, the latency table, the evolution."""
import json
import random

import numpy as np
import pytest
import torch

from reidc.compiler.ir import Modality
from reidc.compiler.datasets import DatasetError, load_dataset
from reidc.compiler.datasets.folders import regdb, sysu, write_sysu_layout
from reidc.compiler.search.evolution import Candidate, crossover, evolve, mutate, pareto_front, rank
from reidc.compiler.search.latency import Scenario, arch_key
from reidc.compiler.search.latency_table import LatencyTable, prediction_error, table_archs
from reidc.compiler.search.losses import c3mmd, triplet_losses
from reidc.compiler.search.train import TrainConfig, train_supernet
from reidc.compiler.datasets.metrics import retrieval_metrics
from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import build_supernet, extract, random_arch, set_arch


# -- metrics -------------------------------------------------------------------------------
def test_metrics_hand_computed():
    # query 0 (pid 1): ranking 2,1,3,1 -> matches at ranks 2 and 4: AP (1/2 + 2/4)/2 = 0.5, INP 2/4
    # query 1 (pid 3): ranking 3,2,1,1 -> match at rank 1: AP 1, INP 1
    dist = np.array([[0.2, 0.1, 0.3, 0.4], [0.5, 0.4, 0.1, 0.8]])
    g = np.array([1, 2, 3, 1])
    m = retrieval_metrics(dist, [1, 3], g)
    assert m == {"rank1": 0.5, "rank5": 1.0, "rank10": 1.0, "mAP": 0.75, "mINP": 0.75, "queries": 2}


def test_metrics_exclusion_and_skipped_queries():
    dist = np.array([[0.2, 0.1, 0.3, 0.4], [0.1, 0.2, 0.3, 0.4]])
    g_cams = np.array([2, 1, 1, 2])
    # SYSU rule: a cam-3 query ignores cam-2 gallery images: query 0 keeps gallery 1 (pid 2), 2 (pid 3)
    m = retrieval_metrics(dist, [3, 9], [1, 2, 3, 1], [3, 3], g_cams, exclude=((3, 2),))
    # query 0 (pid 3): kept ranking pid 2, pid 3 -> first match at rank 2: AP 1/2, INP 1/2
    # query 1 (pid 9) has no match and is skipped
    assert m["queries"] == 1 and m["rank1"] == 0.0 and m["rank5"] == 1.0
    assert m["mAP"] == pytest.approx(0.5) and m["mINP"] == pytest.approx(0.5)
    # a cam-6 query is not affected by the rule
    m6 = retrieval_metrics(dist[:1], [1], [1, 2, 3, 1], [6], g_cams, exclude=((3, 2),))
    assert m6["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 2)


def test_metrics_ties_and_errors():
    m = retrieval_metrics(np.zeros((1, 3)), [5], [4, 5, 5])  # ties keep gallery order
    assert m["rank1"] == 0.0 and m["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2) and m["mINP"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="no query has a true match"):
        retrieval_metrics(np.zeros((1, 2)), [7], [1, 2])
    with pytest.raises(ValueError, match="does not match"):
        retrieval_metrics(np.zeros((2, 2)), [1], [1, 2])


# -- data ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    return load_dataset("synthetic:12", (64, 32), seed=3)


def test_synthetic_is_deterministic_and_disjoint(tiny):
    again = load_dataset("synthetic:12", (64, 32), seed=3)
    assert np.array_equal(again.train.images, tiny.train.images)
    assert not np.array_equal(load_dataset("synthetic:12", (64, 32), seed=4).train.images, tiny.train.images)
    ids = [set(np.unique(p.pids)) for p in (tiny.train, tiny.val.pool, tiny.test.pool)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    ir = tiny.train.images[tiny.train.modality == Modality.INFRARED.code]
    vis = tiny.train.images[tiny.train.modality == Modality.VISIBLE.code]
    assert (ir[..., 0] == ir[..., 1]).all() and (ir[..., 1] == ir[..., 2]).all()   # infrared: no colour
    assert (vis[..., 0] != vis[..., 1]).mean() > 0.5


def test_synthetic_protocol_is_sysu_style(tiny):
    p = tiny.test
    assert set(p.settings) == {"all-search", "indoor-search"} and p.exclude == ((3, 2),)
    assert p.cmc_first_per_id and tiny.val.cmc_first_per_id  # SYSU's CMC rule (tests/test_metrics.py)
    trials = p.settings["all-search"]
    q, g = trials[0].query, trials[0].gallery
    assert set(p.pool.cams[q]) == {3, 6} and set(p.pool.cams[g]) == {1, 2, 4, 5}
    assert len(g) == p.pool.num_ids * 4  # single shot: one image per identity and visible camera
    assert not np.array_equal(trials[0].gallery, trials[1].gallery)  # random draws differ
    assert set(p.pool.cams[p.settings["indoor-search"][0].gallery]) == {1, 2}
    # multi-shot: up to 10 per identity and camera, i.e. all 3 the synthetic data renders
    m = tiny.test_multi_shot
    assert m.pool is p.pool and set(m.settings) == set(p.settings)
    assert len(m.settings["all-search"][0].gallery) == p.pool.num_ids * 4 * 3


def test_sysu_folder_round_trip_and_errors(tiny, tmp_path):
    root = write_sysu_layout(tiny, tmp_path / "SYSU-MM01")
    assert (root / "cam3" / "0001").is_dir() or any((root / "cam3").iterdir())
    d = sysu(root, (64, 32), trials=2, hold_out_val=True)   # the search's: val ids out of training
    assert len(d.train) == len(tiny.train) and d.train.num_ids == tiny.train.num_ids
    assert sorted(np.unique(d.test.pool.pids)) == sorted(np.unique(tiny.test.pool.pids) + 1)
    assert len(d.test.settings["all-search"]) == 2 and d.test.cmc_first_per_id and d.val.cmc_first_per_id
    assert len(d.test_multi_shot.settings["indoor-search"]) == 2 and d.test_multi_shot.cmc_first_per_id
    # JPEG round trip: close to the rendered images, not equal
    order = lambda pool: np.lexsort((pool.cams, pool.pids))  # noqa: E731  (the loader reads cam by cam)
    got, want = d.train.images[order(d.train)].astype(int), tiny.train.images[order(tiny.train)].astype(int)
    assert np.abs(got - want).mean() < 8
    final = sysu(root, (64, 32), trials=2)   # a final training's: train+val ids, as the standard (395)
    assert final.train.num_ids == tiny.train.num_ids + tiny.val.pool.num_ids and final.val_in_train
    val_ids = (root / "exp" / "val_id.txt").read_text()
    (root / "exp" / "val_id.txt").unlink()
    with pytest.raises(DatasetError, match="val_id.txt"):
        sysu(root)
    with pytest.raises(DatasetError, match="not a SYSU-MM01 folder"):
        sysu(tmp_path)
    (root / "exp" / "val_id.txt").write_text(val_ids)
    (root / "cam1" / "0001" / "0002.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="0001/0002.jpg: cannot read image"):
        sysu(root)
    with pytest.raises(DatasetError, match="expected synthetic"):
        load_dataset("imagenet:/x")


def test_regdb_folder(tiny, tmp_path):
    from PIL import Image
    root = tmp_path / "RegDB"
    for part, pool in (("train", tiny.train), ("test", tiny.test.pool)):
        for mod, folder, name in ((Modality.VISIBLE, "Visible", "visible"), (Modality.INFRARED, "Thermal", "thermal")):
            lines = []
            for i in np.flatnonzero(pool.modality == mod.code):
                rel = f"{folder}/{pool.pids[i]}/{i}.bmp"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pool.images[i]).save(root / rel)
                lines.append(f"{rel} {pool.pids[i]}")
            (root / "idx").mkdir(exist_ok=True)
            (root / "idx" / f"{part}_{name}_1.txt").write_text("\n".join(lines) + "\n")
    d = regdb(root, (64, 32), hold_out_val=True)
    assert set(d.test.settings) == {"visible-to-infrared", "infrared-to-visible"}
    assert not d.test.cmc_first_per_id and not d.val.cmc_first_per_id  # RegDB: full-ranking CMC
    assert d.train.num_ids + d.val.pool.num_ids == tiny.train.num_ids   # a fifth held out for the search
    assert regdb(root, (64, 32)).train.num_ids == tiny.train.num_ids     # a final training: all of them
    q = d.test.settings["visible-to-infrared"][0]
    assert (d.test.pool.modality[q.query] == Modality.VISIBLE.code).all()
    assert (d.test.pool.modality[q.gallery] == Modality.INFRARED.code).all()
    with pytest.raises(DatasetError, match="train_visible_2.txt"):
        regdb(root, trial=2)


# -- losses --------------------------------------------------------------------------------
def test_triplet_hard_mining_by_hand():
    feat = torch.tensor([[0.0], [1.0], [5.0], [5.5]])
    labels = torch.tensor([0, 0, 1, 1])
    modality = torch.tensor([0, 1, 0, 1])
    intra, cross = triplet_losses(feat, labels, modality, margin=0.3)
    # intra: anchors have no same-modality positive -> 0; cross: anchor 0: pos 1.0, neg 5.5 -> 0
    assert float(intra) == 0.0 and float(cross) == 0.0
    feat = torch.tensor([[0.0], [3.0], [2.0], [9.0]])
    _, cross = triplet_losses(feat, labels, modality, margin=0.3)
    # anchor0(m0): pos 3 (d 3), neg 9 (d 9) -> 0; anchor1(m1): pos 0 (d 3), neg 2 (d 1) -> 2.3
    # anchor2(m0): pos 9 (d 7), neg 3 (d 1) -> 6.3; anchor3(m1): pos 2 (d 7), neg 0 (d 9) -> 0
    assert float(cross) == pytest.approx((0 + 2.3 + 6.3 + 0) / 4, rel=1e-5)


def test_c3mmd_zero_for_matching_modalities_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 8, generator=g)
    labels = torch.tensor([0, 0, 1, 1])
    mod = torch.tensor([0, 1, 0, 1])
    same = torch.cat([f[:1], f[:1], f[2:3], f[2:3]])
    mmd, corr = c3mmd(same, labels, mod)
    assert float(mmd) == pytest.approx(0, abs=1e-6) and float(corr) == pytest.approx(0, abs=1e-6)
    mmd, corr = c3mmd(f, labels, mod)
    assert float(mmd) > 0 and float(corr) > 0


def test_supernet_trains_with_cmnas_objective_and_records_it(tiny, tmp_path):
    """One step: the record names the objective (train.json's config), the terms logged are
    CM-NAS's, and the supernet is not resumed under reidc's objective (test_losses.py: the rest)."""
    said = []
    _, done = train_supernet(tiny, TrainConfig(steps=1), tmp_path, progress=said.append)
    rec = json.loads((tmp_path / "train.json").read_text())
    assert done == 1 and rec["config"]["objective"] == "cmnas"
    assert any("with the cmnas objective" in m for m in said)
    assert any("id " in m and "tri " in m and "sp " in m and "cmmd " in m for m in said)
    with pytest.raises(ValueError, match="trained with the 'cmnas' objective, not 'reidc'"):
        train_supernet(tiny, TrainConfig(steps=2, objective="reidc"), tmp_path)


# -- supernet ------------------------------------------------------------------------------
def test_supernet_child_computes_what_the_supernet_computes():
    net = build_supernet((64, 32), num_classes=10).eval()
    x = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(1))
    for seed in range(3):
        spec = random_arch(random.Random(seed), (64, 32), 10)
        set_arch(net, spec)
        child = extract(net, spec)
        assert type(child.layer1).__name__ == "Stage"
        convs = [type(m).__name__ for m in child.modules() if type(m).__name__ in ("BinaryConv2d", "Conv2d")]
        assert convs.count("BinaryConv2d") == 4 * sum(spec.binary_stages)
        with torch.no_grad():
            for mode in ("visible", "infrared"):
                torch.testing.assert_close(child(x, mode), net(x, mode), rtol=0, atol=0)


# -- latency table and evolution -----------------------------------------------------------
def _spec(binary=(False,) * 4, split=None):
    t = random_arch(random.Random(0), (64, 32), 10)
    return ArchSpec(depth=18, family="bire", input_size=(64, 32), num_classes=10,
                    split=split or (1,) * len(t.split), binary_stages=binary)


def test_latency_table_predicts_a_known_latency_model_exactly():
    """A synthetic latency with a cache cliff (binarizing is not additive per stage) and additive
    split costs: the table built from its measurements predicts every candidate exactly, and its
    additive-per-stage diagnostic shows the cliff."""
    from reidc.compiler.search.latency_table import pattern
    from reidc.frontend.supernet import stage_index as stage_of
    from reidc.frontend.arch import bn_names
    names = bn_names(18, "bire")
    cost_split = [[0.1, 0.01], [0.2, 0.02], [0.3, 0.03], [0.4, 0.04]]

    def true_ms(s):
        floats = sum(w for w, b in zip((1, 2, 4, 8), s.binary_stages) if not b)
        ms = 0.5 + 0.1 * floats + (2.0 if floats > 4 else 0.0)       # a cache cliff
        return ms + sum(cost_split[stage_of(n)][int(s.binary_stages[stage_of(n)])] for n, v in zip(names, s.split) if v == 0)

    template = _spec()
    for scen, n in ((Scenario("mixed", 8), 24), (Scenario("visible", 1), 16)):
        archs = table_archs(template, scen)
        assert len(archs) == n and all(a.split.count(0) == 0 for k, a in archs.items() if k.startswith("binary"))
        assert sorted(pattern(a) for k, a in archs.items() if k.startswith("binary")) == sorted(
            f"{i:04b}" for i in range(16))
        table = LatencyTable.build(template, scen, {k: true_ms(s) for k, s in archs.items()})
        cands = [random_arch(random.Random(i), (64, 32), 10) for i in range(8)]
        if scen.mode == "mixed":
            assert prediction_error(table, [(c, true_ms(c)) for c in cands])["max_abs_rel_err"] < 1e-9
        else:   # splits are structurally free in a single-modality scenario: the table says 0
            assert all(table.predict(c) == pytest.approx(table.patterns[pattern(c)]) for c in cands)
        add = table.additive_error()
        assert add["max_abs_rel_err"] > 0.5 and add["worst_pattern"] != "0000"
    # the cheap table: 6 patterns measured, the rest summed per stage (wrong across the cliff),
    # never below the all-binarized network
    archs = table_archs(template, Scenario("visible", 1), "stages")
    cheap = LatencyTable.build(template, Scenario("visible", 1), {k: true_ms(s) for k, s in archs.items()})
    assert len(archs) == 6 and cheap.additive_error()["worst_pattern"] == "1111"
    for b in ((True, False, False, False), (True,) * 4):
        assert cheap.predict(_spec(b)) == pytest.approx(true_ms(_spec(b)))
    three = _spec((False, False, True, True))   # crosses the cliff: the sum misses it
    assert cheap.predict(three) != pytest.approx(true_ms(three))
    assert min(cheap.patterns.values()) == cheap.patterns["1111"] > 0
    # timing noise that makes a split look faster than none counts as no cost
    mixed = table_archs(template, Scenario("mixed", 8))
    noisy = {k: true_ms(a) - (1.0 if k == "split2-binary" else 0.0) for k, a in mixed.items()}
    t = LatencyTable.build(template, Scenario("mixed", 8), noisy)
    assert t.split_ms[1]["binary"] == 0.0 and t.split_ms[1]["real"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="expected all or stages"):
        table_archs(template, Scenario("visible", 1), "some")


def test_pareto_rank_and_operators():
    a, b, c = (Candidate(_spec(), s, ms, {}) for s, ms in ((0.5, 10.0), (0.4, 5.0), (0.3, 7.0)))
    assert pareto_front([a, b, c]) == [a, b]
    assert rank([a, b, c], "accuracy") == [a, b, c]
    assert rank([a, b, c], "latency", budget_ms=8.0) == [b, c, a]  # feasible by score, then the rest by latency
    assert rank([a, b, c], "latency")[:2] == [a, b]
    rng = random.Random(0)
    x = random_arch(rng, (64, 32), 10)
    y = random_arch(rng, (64, 32), 10)
    assert arch_key(mutate(x, rng)) != arch_key(x)
    child = crossover(x, y, rng)
    assert all(cv in (xv, yv) for cv, xv, yv in zip(child.split, x.split, y.split))


def test_evolution_finds_the_optimum_of_a_known_objective():
    """Score = number of binarized stages (a toy objective with a known optimum)."""
    evals = []

    def evaluate(spec):
        evals.append(spec)
        return Candidate(spec, sum(spec.binary_stages) + 0.01 * spec.split.count(0), 1.0, {})

    init = [random_arch(random.Random(i), (64, 32), 10) for i in range(6)]
    cands = evolve(init, evaluate, "accuracy", None, population=6, generations=8, seed=0)
    assert len({arch_key(s) for s in evals}) == len(evals)        # nothing evaluated twice
    assert rank(cands, "accuracy")[0].spec.binary_stages == (True,) * 4


def test_the_latency_aware_pick_may_be_any_candidate_validation_cannot_tell_from_the_best():
    """Without --margin: paired bootstrap over identities; with it: the plain mAP margin."""
    from reidc.compiler.search.search import SearchOptions, _Search
    rng = np.random.default_rng(0)
    base = rng.beta(3, 3, 40)

    def stats(aps):
        return {"ids": list(range(40)), "settings": {"all": {"sums": [aps.tolist()], "counts": [[1] * 40]}}}
    specs = [random_arch(random.Random(i), (64, 32), 8) for i in range(3)]
    noisy = np.clip(base + rng.normal(0, 0.15, 40), 0, 1)     # same mean, much noise per identity
    worse = base - 0.08                                        # the same identities, each 0.08 lower
    cands = [Candidate(s, float(np.mean(a)), 1.0, {}) for s, a in zip(specs, (base, noisy, worse))]
    search = _Search.__new__(_Search)
    search.acc = {arch_key(c.spec): {"identity_stats": stats(a)} for c, a in zip(cands, (base, noisy, worse))}
    best = cands[0]
    search.opts = SearchOptions()
    assert [search._close_enough(c, best) for c in cands] == [True, True, False]
    search.opts = SearchOptions(margin=0.1)
    assert [search._close_enough(c, best) for c in cands] == [True, True, True]


# -- stand-alone checks --------------------------------------------------------------------
def test_kendall_tau_b_matches_scipy_with_ties():
    from reidc.compiler.search.standalone import kendall_tau
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n in (3, 5, 9):
        a, b = rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float)
        if len(set(a)) > 1 and len(set(b)) > 1:
            assert kendall_tau(a, b) == pytest.approx(scipy_stats.kendalltau(a, b).statistic, abs=1e-12)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0 and kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau([1, 2], [1, 2]) is None and kendall_tau([1, 1, 1], [1, 2, 3]) is None


def test_a_candidate_fine_tuned_alone_leaves_the_supernet_as_it_was(tiny):
    from reidc.compiler.search.accuracy import score_model
    from reidc.compiler.search.standalone import finetune
    torch.manual_seed(0)
    net = build_supernet(tiny.input_size, tiny.train.num_ids)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    spec = random_arch(random.Random(1), tiny.input_size, tiny.train.num_ids)
    model = finetune(net, spec, tiny, TrainConfig(steps=10), steps=2)
    inherited = extract(net, spec).state_dict()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items() if "running" not in k and
               "num_batches" not in k)                     # BN statistics are recalibrated, weights untouched
    assert not torch.equal(model.state_dict()["classifier.weight"], inherited["classifier.weight"])
    res = score_model(model, tiny)
    assert 0 <= res["ci95"][0] <= res["score"] <= res["ci95"][1] <= 1 and res["identity_stats"]["ids"]
