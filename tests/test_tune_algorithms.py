"""`reidc tune` first times each fp32 3x3 conv shape as a direct conv, F(2x2) and F(4x4)
Winograd (compiler/tune/algorithms.py); `reidc compile --tuning-db` builds the fastest, the
report shows them, a rerun does not measure them again, and a corrupt reidc_algorithms.json is
refused in one line naming it. One tiny budget (cmnas-resnet18 at 64x32, one paired round, three
trials of the max-pool task, the Winograd tasks' variants): the machinery, not the figures."""
import json
import shutil
from collections import Counter

import pytest

from reidc.compiler.compile import CompileOptions, compile_checkpoint
from reidc.compiler.base.errors import InputError
from reidc.compiler.passes.choose_winograd import ALGORITHMS, WINOGRAD, WINOGRAD_F4, candidates, policy, signature, winograd_target
from reidc.compiler.tune.database import TunedTarget
from reidc.compiler.tune.report import report_rows
from reidc.compiler.tune.tune import TuneOptions, load_graphs, measures_algorithms, tune_checkpoint
from reidc.compiler.tunedb.database import ALGORITHMS as ALGORITHMS_FILE, TuningDatabaseError, open_for_compile
from reidc.frontend.checkpoint import save_checkpoint
from reidc.frontend.zoo import zoo_model
from reidc.targets import get_target

SIZE = (64, 32)
pytestmark = pytest.mark.skipif(not winograd_target(get_target("host")), reason="reidc's Winograd kernel is x86's")


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    d = tmp_path_factory.mktemp("alg")
    save_checkpoint(zoo_model("cmnas-resnet18", "all-shared", seed=1, input_size=SIZE), d / "ck")
    return d / "ck"


def _tune(ck, db, lines):
    return tune_checkpoint(ck, TuneOptions(db=str(db), trials=3, only=("max_pool", "winograd"), confirm_rounds=1,
                                           progress=lines.append))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, ck):
    db = tmp_path_factory.mktemp("alg-db") / "db"
    lines = []
    _tune(ck, db, lines)
    return db, lines


def test_only_fp32_on_winograd_targets_measures_algorithms():
    host = get_target("host")
    assert measures_algorithms(TuneOptions(db="x"), host)
    assert not measures_algorithms(TuneOptions(db="x", algorithms=False), host)
    assert not measures_algorithms(TuneOptions(db="x", precision="int8"), host)
    assert not measures_algorithms(TuneOptions(db="x"), get_target("rpi5"))


def test_tune_times_every_shape_and_compile_builds_the_fastest(ck, tuned, tmp_path):
    db, lines = tuned
    key = TunedTarget(db, get_target("host")).key
    table = json.loads((db / key / ALGORITHMS_FILE).read_text())
    _, raw, _ = load_graphs(ck, TuneOptions(db="x", modes=("visible",)), get_target("host"), winograd=False)
    convs = candidates(raw["visible"])
    shapes = Counter(signature(n) for n in convs.values())
    assert set(table) == {"1"} and set(table["1"]) == set(shapes) and len(shapes) == 5   # layer4 starts 256 -> 512 at stride 1
    for sig, e in table["1"].items():
        times = {a: e[a] for a in ALGORITHMS}
        assert all(t > 0 for t in times.values()), sig
        assert e["chosen"] == min(times, key=times.get)
    assert sum(ln.startswith("algorithms ") for ln in lines) == len(shapes)
    # the Winograd kernels are tuned too (their default and register-tile variants measured), not
    # searched: MetaSchedule's FLOP estimate raises on their tir.Let (before, `reidc tune` died there)
    assert any("winograd" in ln and "MetaSchedule cannot analyse" in ln for ln in lines)
    assert any("winograd" in ln and "reidc variants measured" in ln for ln in lines)

    man = compile_checkpoint(ck, tmp_path / "a", CompileOptions(modes=("visible",), tuning_db=str(db), batch=1))
    chosen = {sig: e["chosen"] for sig, e in table["1"].items()}
    assert man["tuning"]["measured_algorithms"] == chosen and man["verification"]["status"] == "passed"
    built = Counter(r.get("algorithm") for r in man["precision"]["layers"])
    want = Counter(chosen[signature(n)] for n in convs.values())
    assert built["winograd F(4x4, 3x3)"] == want[WINOGRAD_F4]
    assert built["winograd F(2x2, 3x3)"] == want["winograd_f2"]

    rows = report_rows(db)[key]["algorithms"]
    assert {r["conv"] for r in rows} == set(shapes) and all(r["policy"] == policy(r["conv"]) for r in rows)
    assert all(r["speedup"] == pytest.approx(r["ms"][r["policy"]] / r["ms"][r["chosen"]]) for r in rows)

    again = []   # a rerun measures no shape again
    _tune(ck, db, again)
    assert not any(ln.startswith("algorithms ") for ln in again)
    assert json.loads((db / key / ALGORITHMS_FILE).read_text()) == table


def test_winograd_kernels_offer_register_tile_variants_after_their_default(ck):
    import tvm_ffi
    from reidc.compiler.tune.space import default_schedule, reidc_schedules, rule_variants
    from reidc.compiler.tune.tune import tasks_of
    host = get_target("host")
    opts = TuneOptions(db="x", modes=("visible",), only=("winograd",))
    tasks = tasks_of(load_graphs(ck, opts, host)[1], opts, host)
    assert tasks
    for t in tasks:
        func = t.dispatched[0]["main"]
        found = reidc_schedules(func, host.tvm_target(), rule_variants(host))
        assert len(found) > 1, t.task_name
        assert tvm_ffi.structural_equal(found[0].mod, default_schedule(func, host).mod)


def _models_shapes(ck):
    _, raw, _ = load_graphs(ck, TuneOptions(db="x", modes=("visible",)), get_target("host"), winograd=False)
    return candidates(raw["visible"])


def test_compile_builds_what_the_database_says_not_the_policy(ck, tuned, tmp_path):
    """Choices the policy would not make ("direct" for the 64-channel convs, F(4x4) for the
    512-channel ones, which "auto" keeps at F(2x2)) are what compile builds; a shape the model
    lacks is not recorded; another batch, or --no-winograd, takes none of them."""
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    path = db / TunedTarget(db, get_target("host")).key / ALGORITHMS_FILE
    convs = _models_shapes(ck)
    sigs = {signature(n) for n in convs.values()}
    crafted = {sig: ("direct" if sig.startswith("64x") else WINOGRAD_F4) for sig in sigs}
    assert any(policy(sig) == WINOGRAD for sig in sigs)          # the policy differs on some
    table = {sig: {"direct": 1e-3, WINOGRAD: 1e-3, WINOGRAD_F4: 1e-3, "chosen": a} for sig, a in crafted.items()}
    path.write_text(json.dumps({"1": {**table, "32x9x9->32": {"direct": 1e-3, "chosen": "direct"}}}))
    man = compile_checkpoint(ck, tmp_path / "a", CompileOptions(modes=("visible",), tuning_db=str(db), batch=1))
    assert man["tuning"]["measured_algorithms"] == crafted
    built = Counter(r.get("algorithm") for r in man["precision"]["layers"])
    direct = sum(crafted[signature(n)] == "direct" for n in convs.values())
    assert direct == 4 and built["winograd F(4x4, 3x3)"] == len(convs) - direct and built["winograd F(2x2, 3x3)"] == 0
    assert open_for_compile(db, get_target("host"), 2).measured == {}   # tuned at batch 1 only
    man = compile_checkpoint(ck, tmp_path / "b", CompileOptions(modes=("visible",), tuning_db=str(db), batch=1,
                                                                winograd=False))
    assert man["tuning"]["measured_algorithms"] == {} and not any(r.get("algorithm") for r in man["precision"]["layers"])


def test_an_only_that_matches_nothing_leaves_no_database(ck, tmp_path):
    with pytest.raises(InputError, match="no tuning tasks match --only nothing_is_named_so"):
        tune_checkpoint(ck, TuneOptions(db=str(tmp_path / "db"), trials=1, only=("nothing_is_named_so",)))
    assert not (tmp_path / "db").exists()


@pytest.mark.parametrize("text", ['{"1": {"64x16x8->64": {"direct": 0.001, "chosen": "winograd_f4"}}}',
                                  '{"1": {"64x16x8": {"direct": 0.001, "chosen": "direct"}}}', "[1, 2",
                                  '{"1": {"64x16x8->64": {"direct": true, "chosen": "direct"}}}',
                                  '{"1": {"64x16x8->64": {"direct": NaN, "chosen": "direct"}}}',
                                  '{"1": {"64x16x8->64": {"direct": Infinity, "chosen": "direct"}}}',
                                  '{"1": {"64x16x8->64": {"direct": -1, "chosen": "direct"}}}',
                                  '{"1": {"64x16x8->64": {"direct": 0, "chosen": "direct"}}}',
                                  '{"\u00b2": {"64x16x8->64": {"direct": 0.001, "chosen": "direct"}}}',
                                  '{"01": {"64x16x8->64": {"direct": 0.001, "chosen": "direct"}}}',
                                  '{"1": {"64x16x8->64\\n": {"direct": 0.001, "chosen": "direct"}}}'])
def test_a_corrupt_algorithms_file_is_refused_in_one_line(ck, tuned, tmp_path, text):
    db = tmp_path / "db"
    shutil.copytree(tuned[0], db)
    path = db / TunedTarget(db, get_target("host")).key / ALGORITHMS_FILE
    path.write_text(text)
    with pytest.raises(TuningDatabaseError, match=f"{path}: corrupt") as e:
        compile_checkpoint(ck, tmp_path / "a", CompileOptions(modes=("visible",), tuning_db=str(db), batch=1))
    assert "\n" not in str(e.value) and not (tmp_path / "a").exists()
    with pytest.raises(TuningDatabaseError, match=f"{path}: corrupt"):
        _tune(ck, db, [])
